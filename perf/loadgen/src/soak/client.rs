//! One soak client: its connection ([`crate::conn`]) while it has one, its [`Session`],
//! and its life: connect, subscribe (resuming when it has a chain), act at random, end
//! and reconnect. It counts into [`Shared`] and never blocks; the driver's loop calls it
//! on its socket's events and on every tick.

use std::time::{Duration, Instant};

use mio::{Registry, Token};
use serde_json::{Value, json};

use super::SoakConfig;
use super::session::{Pending, Request, Session, Sub};
use super::shared::Shared;
use crate::conn::{Conn, End, Phase, Progress, ReadBuf};
use crate::rng::Rng;

/// The subscription name every client uses.
const SUBSCRIPTION: &str = "soak";
/// Relative weights of the actions a subscribed client picks from: disconnect,
/// unsubscribe, scan, ack, ping. A disconnect is a clean close or a reset, half each.
const WEIGHTS: [u32; 5] = [30, 15, 20, 15, 20];
/// A failed connect is retried after this long.
const RETRY: Duration = Duration::from_secs(1);
/// Largest frame accepted from the server.
const MAX_FRAME: usize = 4 << 20;

pub(super) struct Client {
    /// The socket, while there is one.
    pub(super) conn: Option<Conn>,
    /// When to connect, while there is no socket.
    reconnect_at: Instant,
    /// Seeds each connection's masks and handshake nonce, apart from the session's
    /// choices, so that how many frames a client sends does not change its choices.
    masks: Rng,
    pub(super) s: Session,
}

impl Client {
    /// Client `index` of a run seeded with `seed`, to connect at `at`.
    pub(super) fn new(index: usize, seed: u64, at: Instant, cfg: &SoakConfig) -> Client {
        let mut rng = Rng::new(seed ^ (index as u64 + 1).wrapping_mul(0xD6E8_FEB8_6659_FD93));
        let masks = Rng::new(rng.next_u64());
        let mut s = Session::new(index, rng, at);
        s.next_action = at + s.rng.between(cfg.act_min, cfg.act_max);
        Client {
            conn: None,
            reconnect_at: at,
            masks,
            s,
        }
    }

    pub(super) fn is_open(&self) -> bool {
        self.conn.as_ref().is_some_and(Conn::is_open)
    }

    /// Queues a request (a text message with a fresh `id`) and remembers it.
    fn request(&mut self, ty: &str, data: Option<Value>, req: Request, now: Instant) {
        let (id, text) = self.s.next_request(ty, data);
        if let Some(conn) = self.conn.as_mut() {
            conn.out().text(text.as_bytes());
            self.s.pending.push(Pending { id, req, sent: now });
        }
    }

    /// Subscribes with empty filters, resuming with `since` and `epoch` when the client
    /// has a chain with a `seq` in it.
    fn subscribe(&mut self, now: Instant) {
        let mut data = json!({"subscription": SUBSCRIPTION, "filters": {}});
        let resume = match self
            .s
            .chain
            .as_ref()
            .and_then(|c| Some((c.seq.last()?, &c.epoch)))
        {
            Some((last, epoch)) => {
                data["since"] = json!(last);
                data["epoch"] = json!(epoch);
                true
            }
            None => {
                self.s.chain = None;
                false
            }
        };
        self.s.sub = Sub::Subscribing;
        self.request("subscribe", Some(data), Request::Subscribe { resume }, now);
    }

    /// Drops the socket (with a reset when asked) and waits to reconnect.
    fn drop_conn(
        &mut self,
        reg: &Registry,
        reset: bool,
        sh: &mut Shared,
        cfg: &SoakConfig,
        now: Instant,
    ) {
        if let Some(conn) = self.conn.take() {
            conn.close(reg, reset);
        }
        sh.r.abandoned += self.s.pending.len() as u64;
        self.s.pending.clear();
        // The server forgets the subscription with the connection; the chain stays, so
        // the next connection resumes from it.
        self.s.sub = Sub::Off;
        self.reconnect_at = now + self.s.rng.between(cfg.reconnect_min, cfg.reconnect_max);
    }

    fn connect_failed(&mut self, reg: &Registry, why: String, sh: &mut Shared, now: Instant) {
        sh.r.connect_failures += 1;
        *sh.r.connect_errors.entry(why).or_default() += 1;
        if let Some(conn) = self.conn.take() {
            conn.close(reg, true);
        }
        self.reconnect_at = now + RETRY;
    }

    /// An open or closing connection ended. (The close frame that answers ours does not
    /// end it: the read takes it, and the server's EOF then does.)
    fn ended(&mut self, reg: &Registry, end: End, sh: &mut Shared, cfg: &SoakConfig, now: Instant) {
        let closing = matches!(
            self.conn.as_ref().map(Conn::phase),
            Some(Phase::Closing { .. })
        );
        match end {
            End::Abrupt if closing => self.drop_conn(reg, false, sh, cfg, now),
            End::CloseFrame(code) => {
                let code = code.unwrap_or(1005);
                *sh.r.close_codes.entry(code).or_default() += 1;
                *sh.r.unexpected_close_codes.entry(code).or_default() += 1;
                sh.r.unexpected_disconnects += 1;
                if let Some(conn) = self.conn.as_mut() {
                    // Echo the code, as RFC 6455 section 5.5.1 asks; 1005 must not be sent.
                    conn.out().close(if code == 1005 { 1000 } else { code });
                    let _ = conn.flush();
                }
                self.drop_conn(reg, false, sh, cfg, now);
            }
            End::Abrupt => {
                *sh.r.close_codes.entry(1006).or_default() += 1;
                *sh.r.unexpected_close_codes.entry(1006).or_default() += 1;
                sh.r.unexpected_disconnects += 1;
                self.drop_conn(reg, true, sh, cfg, now);
            }
            End::Protocol(e) => {
                sh.r.protocol_errors += 1;
                sh.r.last_protocol_error = Some(e.to_string());
                if let Some(conn) = self.conn.as_mut() {
                    conn.out().close(e.close_code());
                    let _ = conn.flush();
                }
                self.drop_conn(reg, true, sh, cfg, now);
            }
        }
    }

    /// Opens the connection.
    fn connect(&mut self, reg: &Registry, cfg: &SoakConfig, sh: &mut Shared, now: Instant) {
        let tls = cfg.tls.as_ref();
        let mut conn = match Conn::connect(cfg.addr, tls, self.masks.next_u64(), now) {
            Ok(c) => c,
            Err(e) => return self.connect_failed(reg, format!("connect: {e}"), sh, now),
        };
        if let Err(e) = conn.register(reg, Token(self.s.index)) {
            return self.connect_failed(reg, format!("register: {e}"), sh, now);
        }
        self.conn = Some(conn);
    }

    /// The socket became writable while connecting: send the upgrade request.
    pub(super) fn on_connected(
        &mut self,
        reg: &Registry,
        cfg: &SoakConfig,
        sh: &mut Shared,
        now: Instant,
    ) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        if let Err(e) = conn.send_upgrade(&cfg.host, &cfg.path) {
            self.connect_failed(reg, format!("{}: {e}", e.step()), sh, now);
        }
    }

    /// Reads the `101` response; once it is whole, subscribes (resuming when the client
    /// has a chain) and handles the frames that came with it. True when open, with the
    /// rest of the socket to read.
    pub(super) fn read_handshake(
        &mut self,
        reg: &Registry,
        cfg: &SoakConfig,
        sh: &mut Shared,
        now: Instant,
    ) -> bool {
        let Some(conn) = self.conn.as_mut() else {
            return false;
        };
        match conn.read_upgrade() {
            Ok(Progress::Waiting) => return false,
            Ok(Progress::Done) => {}
            Err(e) => {
                self.connect_failed(reg, format!("{}: {e}", e.step()), sh, now);
                return false;
            }
        }
        sh.r.connects += 1;
        self.subscribe(now);
        let Some(conn) = self.conn.as_mut() else {
            return false;
        };
        let s = &mut self.s;
        if let Some(end) = conn.early_frames(MAX_FRAME, |f, _| s.on_frame(f, sh, now, cfg)) {
            self.ended(reg, end, sh, cfg, now);
            return false;
        }
        self.flush_or_end(reg, cfg, sh, now);
        self.conn.is_some()
    }

    /// Reads an open or closing connection until `WouldBlock` or its budget; true when
    /// cut short (the caller reads it again before polling).
    pub(super) fn read(
        &mut self,
        reg: &Registry,
        rbuf: &mut ReadBuf,
        sh: &mut Shared,
        cfg: &SoakConfig,
        now: Instant,
    ) -> bool {
        let Some(conn) = self.conn.as_mut() else {
            return false;
        };
        let s = &mut self.s;
        let r = conn.read_frames(rbuf, MAX_FRAME, |f, _| s.on_frame(f, sh, now, cfg));
        if let Some(code) = r.answered {
            // Our close is answered: the server's EOF is awaited, so that the server,
            // closing first, keeps the TIME_WAIT.
            *sh.r.close_codes.entry(code).or_default() += 1;
        }
        match r.end {
            Some(end) => {
                self.ended(reg, end, sh, cfg, now);
                false
            }
            None => r.more,
        }
    }

    /// The client's timer: reconnects, deadlines, unanswered requests and actions.
    pub(super) fn tick(&mut self, reg: &Registry, cfg: &SoakConfig, sh: &mut Shared, now: Instant) {
        let Some(conn) = self.conn.as_ref() else {
            if now >= self.reconnect_at {
                self.connect(reg, cfg, sh, now);
            }
            return;
        };
        match conn.phase() {
            phase @ (Phase::Connecting | Phase::Handshaking)
                if now.saturating_duration_since(conn.opened()) > cfg.connect_timeout =>
            {
                let what = match phase {
                    Phase::Connecting => "connect timed out",
                    _ => "handshake timed out",
                };
                self.connect_failed(reg, what.into(), sh, now);
            }
            Phase::Connecting | Phase::Handshaking => {}
            Phase::Closing { since, .. } if now >= since + cfg.close_timeout => {
                sh.r.close_timeouts += 1;
                self.drop_conn(reg, true, sh, cfg, now);
            }
            Phase::Closing { .. } => {}
            Phase::Open => {
                let before = self.s.pending.len();
                self.s
                    .pending
                    .retain(|p| now.saturating_duration_since(p.sent) <= cfg.reply_timeout);
                sh.r.reply_timeouts += (before - self.s.pending.len()) as u64;
                if now >= self.s.next_action {
                    self.act(reg, cfg, sh, now);
                }
            }
        }
    }

    /// One random action, when the client is in a state to take one.
    fn act(&mut self, reg: &Registry, cfg: &SoakConfig, sh: &mut Shared, now: Instant) {
        match self.s.sub {
            Sub::Off => {
                sh.r.actions.subscribe += 1;
                self.subscribe(now);
            }
            Sub::On => {
                let rng = &mut self.s.rng;
                let total: u32 = WEIGHTS.iter().sum();
                let mut pick = rng.below(u64::from(total)) as u32;
                let mut kind = 0;
                while pick >= WEIGHTS[kind] {
                    pick -= WEIGHTS[kind];
                    kind += 1;
                }
                // Nothing to scan or acknowledge yet: a ping instead.
                if (kind == 2 && sh.symbols.is_empty()) || (kind == 3 && sh.alert_ids.is_empty()) {
                    kind = 4;
                }
                match kind {
                    0 => return self.disconnect(reg, cfg, sh, now),
                    1 => {
                        sh.r.actions.unsubscribe += 1;
                        self.s.sub = Sub::Unsubscribing;
                        let data = json!({"subscription": SUBSCRIPTION});
                        self.request("unsubscribe", Some(data), Request::Unsubscribe, now);
                    }
                    2 => {
                        sh.r.actions.scan += 1;
                        let n = 1 + rng.below(3) as usize;
                        let symbols: Vec<&str> = (0..n)
                            .map(|_| &*sh.symbols[rng.below(sh.symbols.len() as u64) as usize])
                            .collect();
                        let data = json!({ "symbols": symbols });
                        self.request("scan", Some(data), Request::Scan, now);
                    }
                    3 => {
                        sh.r.actions.ack += 1;
                        let a = sh.alert_ids[rng.below(sh.alert_ids.len() as u64) as usize].clone();
                        let data = json!({ "alert_id": &*a });
                        self.request("ack", Some(data), Request::Ack(a), now);
                    }
                    _ => {
                        sh.r.actions.ping += 1;
                        self.request("ping", None, Request::Ping, now);
                    }
                }
            }
            // A reply is awaited: act at the next tick after it.
            Sub::Subscribing | Sub::Unsubscribing => return,
        }
        self.s.next_action = now + self.s.rng.between(cfg.act_min, cfg.act_max);
        self.flush_or_end(reg, cfg, sh, now);
    }

    fn disconnect(&mut self, reg: &Registry, cfg: &SoakConfig, sh: &mut Shared, now: Instant) {
        self.s.next_action = now + self.s.rng.between(cfg.act_min, cfg.act_max);
        if self.s.rng.below(2) == 0 {
            sh.r.actions.disconnect_close += 1;
            if let Some(conn) = self.conn.as_mut()
                && conn.start_close(now).is_err()
            {
                self.ended(reg, End::Abrupt, sh, cfg, now);
            }
        } else {
            sh.r.actions.disconnect_reset += 1;
            // What the client has not read is gone with the socket: the resume replays it.
            self.drop_conn(reg, true, sh, cfg, now);
        }
    }

    /// Writes what is queued; a failure ends the connection, or fails the handshake.
    pub(super) fn flush_or_end(
        &mut self,
        reg: &Registry,
        cfg: &SoakConfig,
        sh: &mut Shared,
        now: Instant,
    ) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        if let Err(e) = conn.flush() {
            if conn.is_reading_frames() {
                self.ended(reg, End::Abrupt, sh, cfg, now);
            } else {
                self.connect_failed(reg, format!("handshake: {e}"), sh, now);
            }
        }
    }
}
