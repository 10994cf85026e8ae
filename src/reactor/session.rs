//! One WebSocket connection's protocol state: its subscriptions, replay cursors and
//! message rate, and the answers to every client message.
//!
//! Functions here write replies into the connection's out buffer and return a [`Next`];
//! they never touch the socket, the poll or another connection.

use std::time::Instant;

use serde::Serialize;
use serde_json::Value;
use tungstenite::protocol::WebSocketContext;

use super::Next;
use super::broadcast::{Subscription, write_result};
use super::websocket::text_frame;
use crate::history::History;
use crate::metrics::Metrics;
use crate::protocol::{
    ClientMessage, ErrorCode, Request, Subscribe, close, json_string, parse_request,
    write_envelope, write_envelope_raw, write_error,
};
use crate::scanner::{Phase, QueueError, ScannerHandle, ScannerStatus};

/// The `data` of a `status` message and the body of `/stream/status`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct StatusView {
    /// What the scanner last reported.
    #[serde(flatten)]
    pub scanner: ScannerStatus,
    /// Connections holding at least one subscription.
    pub subscribers: usize,
}

/// Per-connection limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Subscriptions per connection (at most 64).
    pub max_subscriptions: usize,
    /// Symbols per filter or scan request.
    pub max_symbols: usize,
    /// Messages per second.
    pub rate: u32,
    /// Message burst.
    pub burst: u32,
}

/// What answering a message needs from the reactor.
pub struct Env<'a> {
    /// The result history and active set.
    pub history: &'a History,
    /// Current status.
    pub status: StatusView,
    /// The scanner's channels.
    pub scanner: &'a ScannerHandle,
    /// Counters.
    pub metrics: &'a mut Metrics,
    /// Limits.
    pub limits: Limits,
}

/// A token bucket over client messages, with a count of refusals in a row.
#[derive(Debug)]
struct RateLimit {
    tokens: f64,
    last: Instant,
    /// Messages refused since the last one allowed.
    strikes: u32,
}

impl RateLimit {
    fn allow(&mut self, now: Instant, rate: u32, burst: u32) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * f64::from(rate)).min(f64::from(burst));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.strikes = 0;
            true
        } else {
            self.strikes += 1;
            false
        }
    }
}

/// The state of an open WebSocket connection.
pub struct WsSession {
    /// tungstenite's protocol state machine (inbound frames, pongs, close handshake).
    pub ctx: WebSocketContext,
    /// Subscriptions, at most 64 (a result's matches are a bit mask).
    pub subs: Vec<Subscription>,
    /// When the last ping was sent.
    pub last_ping: Instant,
    rate: RateLimit,
}

impl WsSession {
    /// A session that starts at `now` with a full message burst.
    pub fn new(ctx: WebSocketContext, now: Instant, burst: u32) -> WsSession {
        WsSession {
            ctx,
            subs: Vec::new(),
            last_ping: now,
            rate: RateLimit {
                tokens: f64::from(burst),
                last: now,
                strikes: 0,
            },
        }
    }

    /// Is any subscription still replaying history?
    pub fn is_replaying(&self) -> bool {
        self.subs.iter().any(|s| s.replay.is_some())
    }

    /// Answers one text message.
    pub fn on_text(
        &mut self,
        text: &str,
        out: &mut Vec<u8>,
        env: &mut Env<'_>,
        now: Instant,
    ) -> Next {
        env.metrics.messages_received += 1;
        if !self.rate.allow(now, env.limits.rate, env.limits.burst) {
            // A client that keeps on past another burst's worth of refusals is closed.
            if self.rate.strikes > env.limits.burst {
                return Next::Close(close::RATE_LIMIT, "message rate exceeded");
            }
            let msg = format!("over {} messages per second", env.limits.rate);
            reply_error(out, env.metrics, ErrorCode::RateLimited, &msg, None);
            return Next::Keep;
        }
        let Request { id, message } = match parse_request(text, env.limits.max_symbols) {
            Ok(req) => req,
            Err(r) => {
                reply_error(out, env.metrics, r.code, &r.message, r.id.as_ref());
                return Next::Keep;
            }
        };
        let id = id.as_ref();
        match message {
            ClientMessage::Subscribe(sub) => self.subscribe(sub, out, env, id),
            ClientMessage::Unsubscribe { subscription } => {
                match self.subs.iter().position(|s| *s.name == *subscription) {
                    Some(i) => {
                        self.subs.remove(i);
                        let data = serde_json::json!({ "subscription": subscription });
                        reply(out, "unsubscribed", Some(&data), id);
                    }
                    None => {
                        let msg = format!("no subscription named `{subscription}`");
                        reply_error(out, env.metrics, ErrorCode::NotFound, &msg, id);
                    }
                }
            }
            ClientMessage::Ping => reply::<()>(out, "pong", None, id),
            ClientMessage::Scan { symbols } => match env.scanner.queue_scan(symbols) {
                Ok(queued) => {
                    let mut status = env.status;
                    status.scanner.phase = Phase::Queued;
                    status.scanner.adhoc_queue = queued;
                    reply(out, "status", Some(&status), id);
                }
                Err(QueueError::Full) => {
                    let msg = "the ad-hoc scan queue is full; try again shortly";
                    reply_error(out, env.metrics, ErrorCode::QueueFull, msg, id);
                }
                Err(QueueError::Gone) => {
                    let msg = "the scanner is not running";
                    reply_error(out, env.metrics, ErrorCode::QueueFull, msg, id);
                }
            },
            ClientMessage::Ack { alert_id } => {
                let msg = format!("no alert `{alert_id}`");
                reply_error(out, env.metrics, ErrorCode::NotFound, &msg, id);
            }
        }
        Next::Keep
    }

    fn subscribe(
        &mut self,
        req: Subscribe,
        out: &mut Vec<u8>,
        env: &mut Env<'_>,
        id: Option<&Value>,
    ) {
        let existing = self.subs.iter().position(|s| *s.name == *req.subscription);
        if existing.is_none() && self.subs.len() >= env.limits.max_subscriptions {
            let msg = format!(
                "at most {} subscriptions per connection",
                env.limits.max_subscriptions
            );
            reply_error(out, env.metrics, ErrorCode::LimitExceeded, &msg, id);
            return;
        }
        let history = env.history;
        let head = history.head();
        let (resume, replayed) = match req.since {
            Some(since) => {
                let r = history.resume(since, req.epoch.as_deref());
                (Some(r), history.count_matching(r.from, head, &req.filter))
            }
            None => (None, 0),
        };
        let sub = Subscription {
            name_json: json_string(&req.subscription),
            name: req.subscription.into_boxed_str(),
            filter: req.filter,
            replay: resume.map(|r| r.from).filter(|&from| from <= head),
        };
        let data = serde_json::json!({
            "subscription": &*sub.name,
            "epoch": history.epoch(),
            "seq": head,
            "recovered": resume.is_none_or(|r| r.recovered),
            "replayed": replayed,
        });
        reply(out, "subscribed", Some(&data), id);
        if req.snapshot && req.since.is_none() {
            write_snapshot(out, &sub, history, id);
        }
        // With a replay to do, the status follows it (see `pump_replay`).
        let replaying = sub.replay.is_some();
        match existing {
            Some(i) => self.subs[i] = sub,
            None => self.subs.push(sub),
        }
        if !replaying {
            let mut status = env.status;
            // The reactor counts this connection once the message is handled.
            if existing.is_none() && self.subs.len() == 1 {
                status.subscribers += 1;
            }
            reply(out, "status", Some(&status), None);
        }
    }

    /// Replays history for subscriptions still catching up, while `out` holds less than
    /// `budget` bytes. A subscription whose next result has left the ring is lost: the
    /// connection closes with 4008 so the client resumes and learns `recovered: false`.
    pub fn pump_replay(
        &mut self,
        out: &mut super::outbuf::OutBuf,
        history: &History,
        budget: usize,
        status: &StatusView,
        metrics: &mut Metrics,
    ) -> Next {
        for sub in &mut self.subs {
            while let Some(next) = sub.replay {
                if out.pending() >= budget {
                    return Next::Keep;
                }
                if next > history.head() {
                    sub.replay = None;
                    reply(out.vec(), "status", Some(status), None);
                    break;
                }
                let Some(ev) = history.get(next) else {
                    return Next::Close(close::SLOW_CONSUMER, "fell behind the history");
                };
                if sub.filter.matches(ev) {
                    write_result(out.vec(), ev, std::slice::from_ref(sub), 1);
                    metrics.replayed += 1;
                    metrics.frames_sent += 1;
                }
                sub.replay = Some(next + 1);
            }
        }
        Next::Keep
    }
}

fn write_snapshot(out: &mut Vec<u8>, sub: &Subscription, history: &History, id: Option<&Value>) {
    let rows = history.active_matching(&sub.filter);
    text_frame(out, |out| {
        let data = |out: &mut Vec<u8>| {
            out.extend_from_slice(br#"{"subscription":"#);
            out.extend_from_slice(sub.name_json.as_bytes());
            out.extend_from_slice(format!(r#","seq":{},"results":["#, history.head()).as_bytes());
            for (i, ev) in rows.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                ev.write_data(out);
            }
            out.extend_from_slice(b"]}");
        };
        write_envelope_raw(out, "snapshot", Some(data), id);
    });
}

/// Appends a reply frame.
pub fn reply<T: Serialize + ?Sized>(
    out: &mut Vec<u8>,
    ty: &str,
    data: Option<&T>,
    id: Option<&Value>,
) {
    text_frame(out, |out| write_envelope(out, ty, data, id));
}

/// Appends an `error` frame and counts it.
pub fn reply_error(
    out: &mut Vec<u8>,
    metrics: &mut Metrics,
    code: ErrorCode,
    msg: &str,
    id: Option<&Value>,
) {
    metrics.count_error(code);
    text_frame(out, |out| write_error(out, code, msg, id));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rate_limit_allows_burst_then_rate() {
        let t0 = Instant::now();
        let mut r = RateLimit {
            tokens: 3.0,
            last: t0,
            strikes: 0,
        };
        let allowed = (0..5).filter(|_| r.allow(t0, 2, 3)).count();
        assert_eq!((allowed, r.strikes), (3, 2));
        // Half a second at 2 per second earns one more.
        assert!(r.allow(t0 + Duration::from_millis(500), 2, 3));
        assert_eq!(r.strikes, 0);
        assert!(!r.allow(t0 + Duration::from_millis(500), 2, 3));
    }
}
