//! What one soak client knows and expects, across its connections: its subscription, the
//! chain of `seq` values it follows, the requests awaiting their replies, and its random
//! choices. It reads frames and says what they mean for the run ([`Session::on_frame`]);
//! it never touches a socket: `client` sends what it decides.

use std::time::Instant;

use serde_json::{Value, json};

use super::SoakConfig;
use super::chain::{Chain, Subscribed, after_subscribed};
use super::shared::Shared;
use crate::msg::{self, Kind};
use crate::rng::Rng;
use crate::ws::{Frame, WsError};

/// A request awaiting its reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Request {
    Subscribe { resume: bool },
    Unsubscribe,
    Scan,
    Ack(Box<str>),
    Ping,
}

#[derive(Debug)]
pub(super) struct Pending {
    pub(super) id: u64,
    pub(super) req: Request,
    pub(super) sent: Instant,
}

/// The subscription as the client knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sub {
    Off,
    Subscribing,
    On,
    Unsubscribing,
}

/// One client's side of the conversation with the server.
pub(super) struct Session {
    /// The client's number: request ids are `c<index>-<n>`.
    pub(super) index: usize,
    /// The client's choices: actions, intervals, symbols, alert ids.
    pub(super) rng: Rng,
    pub(super) sub: Sub,
    pub(super) chain: Option<Chain>,
    pub(super) pending: Vec<Pending>,
    next_id: u64,
    pub(super) next_action: Instant,
}

impl Session {
    pub(super) fn new(index: usize, rng: Rng, start: Instant) -> Session {
        Session {
            index,
            rng,
            sub: Sub::Off,
            chain: None,
            pending: Vec::new(),
            next_id: 0,
            next_action: start,
        }
    }

    /// A request message of type `ty` with a fresh `id`, and that id's number.
    pub(super) fn next_request(&mut self, ty: &str, data: Option<Value>) -> (u64, String) {
        self.next_id += 1;
        let id = self.next_id;
        let mut m = json!({"type": ty, "id": format!("c{}-{}", self.index, id)});
        if let Some(d) = data {
            m["data"] = d;
        }
        (id, m.to_string())
    }

    /// What one frame means: results are checked against the chain, other messages
    /// matched to their requests. The server sends neither binary nor fragmented
    /// messages, so either is a protocol error.
    pub(super) fn on_frame(
        &mut self,
        frame: Frame<'_>,
        sh: &mut Shared,
        now: Instant,
        cfg: &SoakConfig,
    ) -> Result<(), WsError> {
        match frame {
            Frame::Text { fin: true, payload } => match msg::classify(payload) {
                Kind::Result { seq, .. } => {
                    sh.sample_symbol(payload);
                    self.on_result(seq, sh);
                }
                Kind::BadResult => sh.r.bad_messages += 1,
                Kind::Other(_) | Kind::Untyped => self.on_message(payload, sh, now, cfg),
            },
            Frame::Text { .. } | Frame::Binary { .. } | Frame::Continuation { .. } => {
                return Err(WsError::Protocol(
                    "a fragmented or binary message (the server sends neither)",
                ));
            }
            Frame::Pong(_) | Frame::Ping(_) | Frame::Close(_) => {}
        }
        Ok(())
    }

    /// Takes the pending request with this `id` (`c<index>-<n>`), if it is ours.
    pub(super) fn take_pending(&mut self, id: &str) -> Option<Pending> {
        let n: u64 = id
            .strip_prefix('c')?
            .split_once('-')
            .filter(|(c, _)| c.parse() == Ok(self.index))?
            .1
            .parse()
            .ok()?;
        let i = self.pending.iter().position(|p| p.id == n)?;
        Some(self.pending.swap_remove(i))
    }

    pub(super) fn on_result(&mut self, seq: u64, sh: &mut Shared) {
        sh.r.results += 1;
        match (self.sub, self.chain.as_mut()) {
            (Sub::On | Sub::Unsubscribing, Some(chain)) => sh.seq.add(chain.seq.observe(seq)),
            _ => sh.r.stray_results += 1,
        }
    }

    /// A text message other than a result.
    pub(super) fn on_message(
        &mut self,
        payload: &[u8],
        sh: &mut Shared,
        now: Instant,
        cfg: &SoakConfig,
    ) {
        let Ok(v) = serde_json::from_slice::<Value>(payload) else {
            sh.r.bad_messages += 1;
            return;
        };
        let ty = v.get("type").and_then(Value::as_str).unwrap_or("");
        let data = v.get("data").unwrap_or(&Value::Null);
        let id = v.get("id").and_then(Value::as_str);
        let pending = match id {
            Some(id) => match self.take_pending(id) {
                Some(p) => Some(p),
                // The `adhoc` status that ends one of our scans carries its id too.
                None if ty == "status" && data["phase"] == "adhoc" => None,
                None => {
                    sh.r.bad_replies += 1;
                    return;
                }
            },
            None => None,
        };
        match (ty, pending) {
            ("error", p) => {
                let code = data["code"].as_str().unwrap_or("?").to_string();
                *sh.r.errors.entry(code.clone()).or_default() += 1;
                let expected =
                    matches!(&p, Some(p) if p.req == Request::Scan && code == "queue_full");
                if !expected {
                    let what = match &p {
                        Some(p) => format!("{code} for {:?}: {}", p.req, data["message"]),
                        None => format!("{code}: {}", data["message"]),
                    };
                    sh.unexpected(what);
                }
                if let Some(Pending {
                    req: Request::Subscribe { .. } | Request::Unsubscribe,
                    ..
                }) = p
                {
                    // The subscription is in an unknown state: start over on a new
                    // connection, resuming where the chain stands.
                    self.sub = Sub::Off;
                }
            }
            (
                "subscribed",
                Some(
                    p @ Pending {
                        req: Request::Subscribe { resume },
                        ..
                    },
                ),
            ) => {
                sh.reply("subscribed", p.sent, now);
                let Some(reply) = Subscribed::from_data(data) else {
                    sh.r.bad_replies += 1;
                    return;
                };
                let (chain, recovered) = after_subscribed(self.chain.take(), resume, &reply);
                if resume {
                    sh.r.resumes += 1;
                    sh.r.replayed += reply.replayed;
                    if !recovered {
                        sh.r.not_recovered += 1;
                    }
                }
                self.chain = Some(chain);
                self.sub = Sub::On;
                if self.next_action <= now {
                    self.next_action = now + self.rng.between(cfg.act_min, cfg.act_max);
                }
            }
            (
                "unsubscribed",
                Some(
                    p @ Pending {
                        req: Request::Unsubscribe,
                        ..
                    },
                ),
            ) => {
                sh.reply("unsubscribed", p.sent, now);
                self.sub = Sub::Off;
                self.chain = None;
            }
            (
                "pong",
                Some(
                    p @ Pending {
                        req: Request::Ping, ..
                    },
                ),
            ) => sh.reply("pong", p.sent, now),
            (
                "status",
                Some(
                    p @ Pending {
                        req: Request::Scan, ..
                    },
                ),
            ) => {
                if data["phase"] == "queued" {
                    sh.reply("status queued", p.sent, now);
                } else {
                    sh.r.bad_replies += 1;
                }
            }
            (
                "acked",
                Some(
                    p @ Pending {
                        req: Request::Ack(_),
                        ..
                    },
                ),
            ) => {
                let Request::Ack(want) = &p.req else { return };
                if data["alert_id"].as_str() == Some(want) {
                    sh.reply("acked", p.sent, now);
                } else {
                    sh.r.bad_replies += 1;
                }
            }
            (_, Some(_)) => sh.r.bad_replies += 1,
            ("status", None) if id.is_some() => sh.r.adhoc_done += 1,
            ("status", None) => sh.r.statuses += 1,
            ("acked", None) => sh.r.acked_broadcasts += 1,
            ("alert", None) => {
                sh.r.alerts += 1;
                if let Some(a) = data["alert_id"].as_str() {
                    sh.learn_alert(a);
                }
            }
            (other, None) => {
                *sh.r.other_messages.entry(other.to_string()).or_default() += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    use crate::conn::{Outbox, frames};
    use crate::seq::Seq;
    use crate::ws;

    /// A client fed frames as the server would send them, without a socket.
    fn fed(session: &mut Session, sh: &mut Shared, msgs: &[String]) {
        let cfg = SoakConfig::new(SocketAddr::from(([127, 0, 0, 1], 9)));
        let mut buf = Vec::new();
        for m in msgs {
            ws::write_server_header(&mut buf, ws::OP_TEXT, m.len());
            buf.extend_from_slice(m.as_bytes());
        }
        let mut out = Outbox::new(1);
        let now = Instant::now();
        let h = frames(&buf, 1 << 20, &mut out, |f| {
            session.on_frame(f, sh, now, &cfg)
        });
        assert_eq!(h.used, buf.len());
        assert!(h.end.is_none());
    }

    fn result(seq: u64) -> String {
        format!(
            r#"{{"type":"result","timestamp":"2026-11-28T06:23:33.842294182Z","data":{{"seq":{seq},"symbol":"AB{}"}}}}"#,
            seq % 3
        )
    }

    #[test]
    fn replies_are_matched_by_id_and_results_checked_in_between() {
        let now = Instant::now();
        let mut c = Session::new(7, Rng::new(1), now);
        let mut sh = Shared::default();
        c.sub = Sub::Subscribing;
        c.pending.push(Pending {
            id: 1,
            req: Request::Subscribe { resume: false },
            sent: now,
        });
        c.pending.push(Pending {
            id: 2,
            req: Request::Ack("a-5".into()),
            sent: now,
        });
        let ts = "2026-11-28T06:23:33.842294182Z";
        fed(
            &mut c,
            &mut sh,
            &[
                // A result before any subscription: stray.
                result(40),
                format!(
                    r#"{{"type":"subscribed","timestamp":"{ts}","data":{{"subscription":"soak","epoch":"e1","seq":41,"recovered":true,"replayed":0}},"id":"c7-1"}}"#
                ),
                result(42),
                result(43),
                result(45),
                result(44),
                format!(
                    r#"{{"type":"alert","timestamp":"{ts}","data":{{"alert_id":"a-9","rule":"r"}}}}"#
                ),
                format!(
                    r#"{{"type":"acked","timestamp":"{ts}","data":{{"alert_id":"a-5"}},"id":"c7-2"}}"#
                ),
                format!(r#"{{"type":"acked","timestamp":"{ts}","data":{{"alert_id":"a-5"}}}}"#),
                // Someone else's id, and an id of ours never sent.
                format!(r#"{{"type":"pong","timestamp":"{ts}","id":"c8-1"}}"#),
                format!(r#"{{"type":"pong","timestamp":"{ts}","id":"c7-9"}}"#),
            ],
        );
        let r = &sh.r;
        assert_eq!(r.stray_results, 1);
        assert_eq!(r.results, 5);
        assert_eq!(sh.seq.lost, 1);
        assert_eq!(sh.seq.duplicated, 1);
        assert_eq!(r.replies.get("subscribed"), Some(&1));
        assert_eq!(r.replies.get("acked"), Some(&1));
        assert_eq!(r.acked_broadcasts, 1);
        assert_eq!(r.alerts, 1);
        assert_eq!(r.bad_replies, 2);
        assert_eq!(sh.alert_ids.front().map(|a| &**a), Some("a-9"));
        assert!(!sh.symbols.is_empty());
        assert!(c.pending.is_empty());
        assert_eq!(c.sub, Sub::On);
        assert_eq!(c.chain.as_ref().map(|ch| ch.seq.last()), Some(Some(45)));
    }

    #[test]
    fn unsubscribed_ends_the_chain_and_a_scan_may_be_refused_as_full() {
        let now = Instant::now();
        let mut c = Session::new(3, Rng::new(1), now);
        let mut sh = Shared::default();
        c.sub = Sub::Unsubscribing;
        c.chain = Some(Chain {
            seq: Seq::after(10),
            epoch: "e1".into(),
        });
        for (id, req) in [
            (1, Request::Unsubscribe),
            (2, Request::Scan),
            (3, Request::Scan),
        ] {
            c.pending.push(Pending { id, req, sent: now });
        }
        let ts = "2026-11-28T06:23:33.842294182Z";
        fed(
            &mut c,
            &mut sh,
            &[
                result(11),
                format!(
                    r#"{{"type":"unsubscribed","timestamp":"{ts}","data":{{"subscription":"soak"}},"id":"c3-1"}}"#
                ),
                format!(
                    r#"{{"type":"status","timestamp":"{ts}","data":{{"phase":"queued"}},"id":"c3-2"}}"#
                ),
                format!(
                    r#"{{"type":"error","timestamp":"{ts}","data":{{"code":"queue_full","message":"m"}},"id":"c3-3"}}"#
                ),
                format!(
                    r#"{{"type":"status","timestamp":"{ts}","data":{{"phase":"adhoc"}},"id":"c3-2"}}"#
                ),
                // Nothing may arrive once unsubscribed.
                result(12),
            ],
        );
        let r = &sh.r;
        assert_eq!((r.results, r.stray_results, sh.seq.lost), (2, 1, 0));
        assert_eq!(r.replies.get("status queued"), Some(&1));
        assert_eq!(r.errors.get("queue_full"), Some(&1));
        assert_eq!(r.unexpected_errors, 0);
        assert_eq!(r.adhoc_done, 1);
        assert_eq!(c.sub, Sub::Off);
        assert!(c.chain.is_none());
    }
}
