//! One WebSocket connection's protocol state: its subscriptions, replay cursors and
//! message rate, and the answers to every client message.
//!
//! Functions here write replies into the connection's out buffer and return a [`Next`];
//! they never touch the socket, the poll or another connection.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use serde_json::Value;
use tungstenite::protocol::WebSocketContext;

use super::Next;
use super::app::{App, Caller};
use super::broadcast::{Subscription, Tail, delivery, write_result};
use super::outbuf::OutBuf;
use super::requester::Requester;
use super::websocket::text_frame;
use crate::bus::Command;
use crate::event::ScanEvent;
use crate::history::{History, Resume};
use crate::metrics::Metrics;
use crate::protocol::{
    ClientMessage, ErrorCode, Request, Subscribe, close, json_string, parse_request, peek_id,
    write_envelope, write_envelope_raw, write_error,
};
use crate::scanner::{Phase, ScannerStatus};

/// The `status` a requester gets when its ad-hoc scan is done: the status with phase
/// `adhoc`, plus how many symbols were scanned and results published.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct AdhocDoneView {
    /// The status, phase `adhoc`.
    #[serde(flatten)]
    pub status: StatusView,
    /// Symbols in the request.
    pub symbols: usize,
    /// Results the request published (conditions firing now).
    pub results: usize,
}

/// The `phase` a status shows: the scanner's, or `queued` in the reply to a `scan`
/// (the request waits on the edge's side of the bus, which the scanner does not see).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ShownPhase {
    /// Inside a cycle.
    Scanning,
    /// Between cycles, or stopped.
    Idle,
    /// Answering an ad-hoc request.
    Adhoc,
    /// A `scan` request was queued.
    Queued,
}

impl From<Phase> for ShownPhase {
    fn from(phase: Phase) -> ShownPhase {
        match phase {
            Phase::Scanning => ShownPhase::Scanning,
            Phase::Idle => ShownPhase::Idle,
            Phase::Adhoc => ShownPhase::Adhoc,
        }
    }
}

/// The `data` of a `status` message and the body of `/stream/status`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct StatusView {
    /// What the scanner last reported.
    #[serde(flatten)]
    pub scanner: ScannerStatus,
    /// What it is doing.
    pub phase: ShownPhase,
    /// Connections holding at least one subscription.
    pub subscribers: usize,
    /// `degraded` once the scanner thread has failed, or while the bus between processes
    /// is away: history and the stream stay up.
    pub health: Health,
    /// Why it is degraded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// The edge's input lag: how long the oldest result it took since the last status
    /// had waited, in milliseconds.
    pub lag_ms: f64,
}

/// Whether every part of the server works.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// All well.
    Ok,
    /// The scanner thread has failed; no new results will come.
    Degraded,
}

/// The history ring overtook a replay: the client did not keep up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FellBehind;

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

/// A token bucket over client messages, and a count of refusals that decays at half
/// the rate, so a client that keeps on past the limit (even at a steady pace) is closed.
#[derive(Debug)]
struct RateLimit {
    tokens: f64,
    last: Instant,
    strikes: f64,
}

impl RateLimit {
    fn allow(&mut self, now: Instant, rate: u32, burst: u32) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        let rate = f64::from(rate);
        self.tokens = (self.tokens + elapsed * rate).min(f64::from(burst));
        self.strikes = (self.strikes - elapsed * rate / 2.0).max(0.0);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            self.strikes += 1.0;
            false
        }
    }

    /// Charges work worth `messages` more messages (a long replay to count and send).
    fn charge(&mut self, messages: f64) {
        self.tokens -= messages;
    }
}

/// A resume from before the ring, waiting for the bus.
struct Waiting {
    /// The `subscribe` that asked, and its id.
    req: Subscribe,
    id: Option<Value>,
    /// What the bus has sent so far, consecutive.
    got: Vec<Arc<ScanEvent>>,
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
    /// Next history sequence number to send while replaying. The whole connection
    /// replays, not one subscription, so each result still goes out once, naming every
    /// subscription that takes it.
    cursor: Option<u64>,
    /// The first `seq` it took live rather than from a replay (0: it never replayed):
    /// what it saw before came from the history, skipped results included.
    live_from: u64,
    /// A `status` is due once the replay is done.
    status_owed: bool,
    /// The `subscriptions` tail of the last result delivered.
    pub tail: Tail,
    /// Frames held back until the replay is done (an ad-hoc scan's done status).
    deferred: Vec<u8>,
    /// A resume from before the ring, waiting for the bus to send what it keeps.
    waiting_older: Option<Waiting>,
    /// A resume from before the ring: the results from its first to the ring's newest
    /// when it was answered, replayed instead of the ring (`cursor` is past them).
    older: VecDeque<Arc<ScanEvent>>,
    /// Subscribes that came while a resume from the bus waited (answered with it) or
    /// replayed (answered once it is done), so a new subscription cannot cut into it.
    held: Vec<(Subscribe, Option<Value>)>,
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
                strikes: 0.0,
            },
            cursor: None,
            live_from: 0,
            status_owed: false,
            tail: Tail::default(),
            deferred: Vec::new(),
            waiting_older: None,
            older: VecDeque::new(),
            held: Vec::new(),
        }
    }

    /// Queues a frame after everything the replay still has to send, or now if there
    /// is no replay.
    pub fn after_replay(&mut self, out: &mut Vec<u8>, frame: &[u8]) {
        if self.is_replaying() {
            self.deferred.extend_from_slice(frame);
        } else {
            out.extend_from_slice(frame);
        }
    }

    /// Is the connection replaying history (live results wait in the ring meanwhile)?
    pub fn is_replaying(&self) -> bool {
        self.cursor.is_some()
    }

    /// The first `seq` the connection took live, after its last replay.
    pub fn live_from(&self) -> u64 {
        self.live_from
    }

    /// Answers one text message.
    pub fn on_text(
        &mut self,
        text: &str,
        out: &mut Vec<u8>,
        app: &mut App,
        caller: &mut Caller,
        now: Instant,
    ) -> Next {
        app.metrics.messages_received.inc();
        if !self.rate.allow(now, app.limits.rate, app.limits.burst) {
            // A client that keeps on past another burst's worth of refusals is closed.
            if self.rate.strikes > f64::from(app.limits.burst) {
                return Next::Close(close::RATE_LIMIT, "message rate exceeded");
            }
            let msg = format!("over {} messages per second", app.limits.rate);
            let id = peek_id(text);
            reply_error(out, &app.metrics, ErrorCode::RateLimited, &msg, id.as_ref());
            return Next::Keep;
        }
        let Request { id, message } = match parse_request(text, app.limits.max_symbols) {
            Ok(req) => req,
            Err(r) => {
                reply_error(out, &app.metrics, r.code, &r.message, r.id.as_ref());
                return Next::Keep;
            }
        };
        let id = id.as_ref();
        match message {
            ClientMessage::Subscribe(sub) => self.subscribe(*sub, out, app, caller, id),
            ClientMessage::Unsubscribe { subscription } => {
                match self.subs.iter().position(|s| *s.name == *subscription) {
                    Some(i) => {
                        self.subs.remove(i);
                        self.tail.reset();
                        if self.subs.is_empty() {
                            // Nothing left to replay for, nor a status owed.
                            self.cursor = None;
                            self.status_owed = false;
                            caller.counted = false;
                        }
                        let data = serde_json::json!({ "subscription": subscription });
                        reply(out, "unsubscribed", Some(&data), id);
                    }
                    None => {
                        let msg = format!("no subscription named `{subscription}`");
                        reply_error(out, &app.metrics, ErrorCode::NotFound, &msg, id);
                    }
                }
            }
            ClientMessage::Ping => reply::<()>(out, "pong", None, id),
            ClientMessage::Scan { symbols } => {
                match app
                    .adhoc
                    .request(&app.bus, symbols, Some(caller.id), id.cloned())
                {
                    Ok(queued) => {
                        let mut status = caller.status(app);
                        status.phase = ShownPhase::Queued;
                        status.scanner.adhoc_queue = queued;
                        reply(out, "status", Some(&status), id);
                    }
                    Err(refusal) => {
                        let (code, msg) = refusal.code();
                        reply_error(out, &app.metrics, code, msg, id);
                    }
                }
            }
            ClientMessage::Ack { alert_id } => {
                // The producer answers; `acked` (or `not_found`) follows with this `id`.
                if app.ask_ack(alert_id, Some(caller.id), id.cloned()).is_err() {
                    let msg = "the scanner is not running";
                    reply_error(out, &app.metrics, ErrorCode::Unavailable, msg, id);
                }
            }
        }
        Next::Keep
    }

    fn subscribe(
        &mut self,
        req: Subscribe,
        out: &mut Vec<u8>,
        app: &mut App,
        caller: &mut Caller,
        id: Option<&Value>,
    ) {
        if self.over_limit(&req, out, app, id) {
            return;
        }
        // A resume from the bus is on its way (the others are answered with it, in order)
        // or replaying (the others follow it).
        if self.waiting_older.is_some() || !self.older.is_empty() {
            self.held.push((req, id.cloned()));
            return;
        }
        if self.ask_older(&req, app, caller, id) {
            return;
        }
        self.subscribe_from(req, out, app, caller, id, None);
    }

    /// Would `req` be one subscription too many? Says so when it would.
    fn over_limit(
        &self,
        req: &Subscribe,
        out: &mut Vec<u8>,
        app: &App,
        id: Option<&Value>,
    ) -> bool {
        let existing = self.subs.iter().any(|s| *s.name == *req.subscription);
        if existing || self.subs.len() < app.limits.max_subscriptions {
            return false;
        }
        let msg = format!(
            "at most {} subscriptions per connection",
            app.limits.max_subscriptions
        );
        reply_error(out, &app.metrics, ErrorCode::LimitExceeded, &msg, id);
        true
    }

    /// A resume from before the ring, in this run, on an edge whose bus keeps more: asks
    /// the bus for the results in between and holds the `subscribe` until they come.
    fn ask_older(
        &mut self,
        req: &Subscribe,
        app: &mut App,
        caller: &Caller,
        id: Option<&Value>,
    ) -> bool {
        let history = &app.history;
        let (Some(since), Some(epoch)) = (req.since, req.epoch.as_deref()) else {
            return false;
        };
        let beyond_ring = since < history.head() && since + 1 < history.oldest();
        // A connection that resumes from the bus starts from nothing of its own (a client
        // that reconnected), so every subscription it then makes replays together.
        let fresh = self.subs.is_empty() && self.cursor.is_none();
        if !app.deep_history || !beyond_ring || !fresh || epoch != history.epoch() {
            return false;
        }
        if !ask_bus(app, caller, id, since + 1) {
            return false; // resumed from the ring alone, not recovered
        }
        self.waiting_older = Some(Waiting {
            req: req.clone(),
            id: id.cloned(),
            got: Vec::new(),
        });
        true
    }

    /// The bus sent the `older` results a held `subscribe` waited for: it goes on,
    /// recovered if they reach the ring.
    pub fn older_arrived(
        &mut self,
        older: &[Arc<ScanEvent>],
        out: &mut Vec<u8>,
        app: &mut App,
        caller: &mut Caller,
    ) {
        let Some(mut waiting) = self.waiting_older.take() else {
            return;
        };
        waiting.got.extend_from_slice(older);
        // The ring moved on while the bus answered: ask for the rest, as long as the bus
        // has more to give (and this connection may hold that much).
        let history = &app.history;
        let next = waiting.got.last().map_or(0, |r| r.seq.saturating_add(1));
        if !older.is_empty()
            && next < history.oldest()
            && waiting.got.len() < MAX_OLDER_HELD
            && ask_bus(app, caller, waiting.id.as_ref(), next)
        {
            self.waiting_older = Some(waiting);
            return;
        }
        // From the first result asked for to the ring's newest, when they join up.
        let first_wanted = waiting.req.since.map(|s| s.saturating_add(1));
        let joins = waiting.got.first().map(|r| r.seq) == first_wanted && next >= history.oldest();
        let replay: Option<Vec<Arc<ScanEvent>>> = joins.then(|| {
            let ring = history.range(next, history.head()).cloned();
            waiting.got.drain(..).chain(ring).collect()
        });
        let first = (waiting.req, waiting.id);
        for (req, id) in std::iter::once(first).chain(std::mem::take(&mut self.held)) {
            self.subscribe_from(req, out, app, caller, id.as_ref(), replay.as_deref());
        }
    }

    /// Answers the subscribes held while a resume from the bus replayed, once it is done.
    pub fn release_held(&mut self, out: &mut Vec<u8>, app: &mut App, caller: &mut Caller) {
        if self.waiting_older.is_some() || !self.older.is_empty() {
            return;
        }
        for (req, id) in std::mem::take(&mut self.held) {
            self.subscribe(req, out, app, caller, id.as_ref());
        }
    }

    /// Are subscribes waiting for a replay from the bus to end?
    pub fn holds_subscribes(&self) -> bool {
        !self.held.is_empty()
    }

    /// Subscribes. `replay` is what a resume from the bus brought: consecutive results
    /// up to the ring's newest, replayed in place of the ring to every subscription of
    /// this (fresh) connection that resumes from within it.
    fn subscribe_from(
        &mut self,
        req: Subscribe,
        out: &mut Vec<u8>,
        app: &mut App,
        caller: &mut Caller,
        id: Option<&Value>,
        replay: Option<&[Arc<ScanEvent>]>,
    ) {
        // Checked again: a held `subscribe` goes on after other messages.
        if self.over_limit(&req, out, app, id) {
            return;
        }
        let existing = self.subs.iter().position(|s| *s.name == *req.subscription);
        let history = &app.history;
        let head = history.head();
        let mut resume = req
            .since
            .map(|since| history.resume(since, req.epoch.as_deref()));
        // The bus's results reach back to this `since` in this run: it is whole.
        let replay = replay.unwrap_or_default();
        let from_bus = match (req.since, replay.first()) {
            (Some(since), Some(first))
                if req.epoch.as_deref() == Some(history.epoch())
                    && first.seq <= since.saturating_add(1)
                    && since < head =>
            {
                resume = Some(Resume {
                    from: since + 1,
                    recovered: true,
                });
                true
            }
            _ => false,
        };
        let replayed = match resume {
            Some(r) if from_bus => History::count_in(replay, r.from, &req.filter),
            Some(r) => {
                // Counting and replaying walk the ring: charge a message per 10,000 results.
                self.rate
                    .charge(head.saturating_sub(r.from) as f64 / 10_000.0);
                history.count_matching(r.from, head, &req.filter)
            }
            None => 0,
        };
        let replaced = existing.map(|i| self.subs.remove(i));
        // Where the connection stands: every result before it went to every subscription.
        let at = self.cursor.unwrap_or(head + 1);
        let start = match (resume, &replaced) {
            (Some(r), _) => r.from,
            // A replacement goes on where the old one stood, so results held back for its
            // name while another subscription replays still reach it; unless it asked for
            // a snapshot, which stands for everything up to `head`.
            (None, Some(old)) if !req.snapshot => old.start.max(at),
            (None, _) => head + 1,
        };
        let sub = Subscription {
            name_json: json_string(&req.subscription),
            name: req.subscription.into_boxed_str(),
            filter: req.filter,
            start,
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
        if from_bus || !self.older.is_empty() {
            // Every subscription of this fresh connection replays from the bus's results,
            // each from its own start; the ring's part of them is in there too.
            if self.older.is_empty() {
                self.older = replay.iter().cloned().collect();
            }
            self.cursor = Some(head + 1);
        } else if start <= head {
            // From `at` on, the replay carries every subscription together.
            for other in &mut self.subs {
                other.start = other.start.max(at);
            }
            self.cursor = Some(at.min(start));
        }
        self.subs.push(sub);
        caller.counted = true;
        self.tail.reset();
        if resume.is_some_and(|r| r.from <= head) {
            // PROTOCOL.md: the status follows the replay.
            self.status_owed = true;
        } else {
            reply(out, "status", Some(&caller.status(app)), None);
        }
    }

    /// Replays history from the cursor while `out` holds less than `budget` bytes,
    /// visiting at most `visits` results. The first pass runs in the turn of the
    /// `subscribe`, before new results can push anything out of the ring; if the ring
    /// later overtakes the cursor, the client did not keep up: the connection closes with
    /// 4008, so it resumes and learns of the loss (`Err(FellBehind)`).
    pub fn pump_replay(
        &mut self,
        out: &mut OutBuf,
        app: &App,
        budget: usize,
        visits: usize,
        status: &StatusView,
    ) -> Result<(), FellBehind> {
        let (history, metrics) = (&app.history, &app.metrics);
        let Some(mut next) = self.cursor else {
            return Ok(());
        };
        if next < history.oldest() {
            return Err(FellBehind);
        }
        while let Some(ev) = self.older.front() {
            if out.pending() >= budget {
                return Ok(());
            }
            let d = delivery(&self.subs, ev);
            if !d.is_empty() {
                write_result(out.vec(), ev, &self.subs, d, &mut self.tail);
                metrics.replayed.inc();
                metrics.frames_sent.inc();
            }
            self.older.pop_front();
        }
        for ev in history.range(next, history.head()).take(visits) {
            if out.pending() >= budget {
                break;
            }
            // An update this edge sent in place of skipped ones leaves as it did live.
            let d = app.superseded.delivery(&self.subs, ev);
            if !d.is_empty() {
                write_result(out.vec(), ev, &self.subs, d, &mut self.tail);
                metrics.replayed.inc();
                metrics.frames_sent.inc();
            }
            next = ev.seq + 1;
        }
        if next > history.head() {
            self.cursor = None;
            self.live_from = next;
            if std::mem::take(&mut self.status_owed) {
                reply(out.vec(), "status", Some(status), None);
            }
            // Answers that had to wait for results still in the replay.
            out.extend(&self.deferred);
            self.deferred = Vec::new();
        } else {
            self.cursor = Some(next);
        }
        Ok(())
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

/// Results a resume from the bus may bring into one connection at most.
const MAX_OLDER_HELD: usize = 200_000;

/// Asks the bus for the results from `from` to just before the ring, for `caller`'s
/// request `id`; false when it cannot be asked.
fn ask_bus(app: &App, caller: &Caller, id: Option<&Value>, from: u64) -> bool {
    let requester = Requester {
        edge: app.edge,
        conn: Some(caller.id),
        id: id.cloned(),
    }
    .tag();
    let to = app.history.oldest().saturating_sub(1);
    app.bus
        .command(Command::Older {
            from,
            to,
            requester,
        })
        .is_ok()
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

/// Appends a message frame whose `data` is JSON encoded already (an alert).
pub fn reply_raw(out: &mut Vec<u8>, ty: &str, json: &str, id: Option<&Value>) {
    let data = |out: &mut Vec<u8>| out.extend_from_slice(json.as_bytes());
    text_frame(out, |out| write_envelope_raw(out, ty, Some(data), id));
}

/// Appends an `error` frame and counts it.
pub fn reply_error(
    out: &mut Vec<u8>,
    metrics: &Metrics,
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
            strikes: 0.0,
        };
        let allowed = (0..5).filter(|_| r.allow(t0, 2, 3)).count();
        assert_eq!((allowed, r.strikes), (3, 2.0));
        // Half a second at 2 per second earns one more, and forgives half a refusal.
        assert!(r.allow(t0 + Duration::from_millis(500), 2, 3));
        assert_eq!(r.strikes, 1.5);
        assert!(!r.allow(t0 + Duration::from_millis(500), 2, 3));
    }

    #[test]
    fn a_steady_offender_piles_up_strikes() {
        // Twice the allowed rate, for ten seconds, after the burst is spent.
        let t0 = Instant::now();
        let mut r = RateLimit {
            tokens: 0.0,
            last: t0,
            strikes: 0.0,
        };
        for i in 1..=200 {
            r.allow(t0 + Duration::from_millis(50 * i), 10, 20);
        }
        assert!(r.strikes > 20.0, "strikes {}", r.strikes);
    }
}
