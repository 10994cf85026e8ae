//! The reactor's side of fan-out: the subscriber list, publishing results from the
//! scanner's channel, broadcasting statuses, and pumping replays.
//!
//! Each result is matched and copied into out buffers here; writing happens at the end of
//! the turn. Nothing here may serialise a result or touch a socket.

use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::TryRecvError;

use super::app::{App, Caller};
use super::broadcast::write_result;
use super::conflate::{Plan, planned_delivery};
use super::conn::Phase;
use super::conns::{ConnId, Replayed};
use super::http;
use super::mirror::AlertMirror;
use super::requester::Requester;
use super::session::{AdhocDoneView, ShownPhase, WsSession};
use super::{
    MAX_BACKLOG, MAX_DRAIN, MAX_HOLD, MAX_TURN_DELIVERIES, REPLAY_VISITS, Reactor, session,
};
use crate::alerts::{AlertNote, Change};
use crate::bus::{Cut, Event, Tag};
use crate::event::ScanEvent;
use crate::protocol::{ErrorCode, close};
use crate::scanner::{self, ScannerStatus};

impl Reactor {
    /// Brings the subscriber list, count and replay list in line with a connection.
    pub(super) fn sync_subscriber(&mut self, key: usize) {
        let Some(id) = self.conns.id(key) else {
            return;
        };
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let has = conn.has_subscriptions();
        let newly_listed = has && !conn.listed;
        conn.listed |= has;
        let changed = has != conn.subscriber;
        conn.subscriber = has;
        let replay = conn.session().is_some_and(|s| s.is_replaying()) && !conn.replay_listed;
        conn.replay_listed |= replay;
        if newly_listed {
            self.conns.subscribers.push(id);
        }
        if changed {
            self.app.count_subscriber(has);
            self.conns.subscribers_stale |= !has;
        }
        if replay {
            self.conns.replaying.push(id);
        }
    }

    /// Takes the producer's events, at most a turn's worth of results. Once results have
    /// waited longer than `max_lag`, the whole input is taken and conflated first
    /// (PROTOCOL.md, "Overload").
    pub(super) fn drain_scanner(&mut self) {
        self.conns.purge_subscribers();
        let now = Instant::now();
        let max_lag = self.config.max_lag.0;
        let lagging = |published: Instant| {
            !max_lag.is_zero() && now.saturating_duration_since(published) > max_lag
        };
        let (mut results, mut taken) = (0, 0);
        self.more_results = false;
        self.turn_full = false;
        self.turn_deliveries = 0;
        if self.backlog.oldest_result().is_some_and(lagging) {
            self.hold_input();
        }
        loop {
            // A burst stops short of what one turn may add to a connection (see
            // `publish`), so it alone never makes a reader that keeps up look slow.
            // Skipped results cost little, but each moves the history ring on: a turn
            // takes a bounded number, so a replaying cursor is not overtaken at once.
            if results == MAX_DRAIN
                || taken == MAX_HOLD
                || self.turn_full
                || self.turn_deliveries >= MAX_TURN_DELIVERIES
            {
                self.more_results = true;
                break;
            }
            let (event, plan) = match self.backlog.pop() {
                Some(held) => (held.event, held.plan),
                None => match self.app.bus.events.try_recv() {
                    Ok(Event::Result(ev)) if lagging(ev.published) => {
                        self.backlog.push(Event::Result(ev));
                        self.hold_input();
                        continue;
                    }
                    Ok(event) => (event, Plan::Send),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        if !self.scanner_gone {
                            self.scanner_failed("the scanner thread ended");
                        }
                        break;
                    }
                },
            };
            match event {
                Event::Result(ev) => {
                    results += usize::from(plan != Plan::Skip);
                    taken += 1;
                    self.lag_peak = self
                        .lag_peak
                        .max(now.saturating_duration_since(ev.published));
                    self.publish(ev, &plan);
                }
                other => self.on_event(other),
            }
        }
        self.app
            .metrics
            .conflated
            .add(self.backlog.take_conflated());
        if results > 0 {
            self.app.metrics.batch_sizes.observe(results as f64);
        }
    }

    /// Takes what waits in the channel into the backlog, conflating it, up to
    /// `MAX_BACKLOG` held: past it the producer waits on the channel, as it does for an
    /// edge that keeps up.
    fn hold_input(&mut self) {
        while self.backlog.len() < MAX_BACKLOG {
            match self.app.bus.events.try_recv() {
                Ok(event) => self.backlog.push(event),
                // A gone producer is noticed once the backlog is sent.
                Err(_) => break,
            }
        }
    }

    /// Acts on an event that is not a result.
    fn on_event(&mut self, event: Event) {
        match event {
            Event::Result(ev) => self.publish(ev, &Plan::Send),
            Event::Cut(cut) => self.on_cut(*cut),
            Event::Status(status) => self.on_status(status),
            Event::Symbols(names) => self.app.adhoc.learn(&names),
            Event::AdhocDone {
                requester,
                symbols,
                results,
            } => self.adhoc_done(&requester, symbols, results),
            Event::Alert(note) => self.on_alert(&note),
            Event::AlertStats(stats) => self.app.alerts.stats = stats,
            Event::AckDone {
                requester,
                alert_id,
                alert,
            } => {
                self.ack_done(&requester, &alert_id, alert.as_deref(), Instant::now());
            }
            Event::Failed(message) => self.scanner_failed(&message),
            Event::Older { requester, results } => self.older(&requester, &results),
        }
    }

    /// Records a result and appends it to every live connection whose subscriptions
    /// match it under `plan`. Replaying connections take it from the ring later, in order.
    pub(super) fn publish(&mut self, ev: Arc<ScanEvent>, plan: &Plan) {
        self.app.metrics.events_published.inc();
        // Statuses come at the progress interval; the count is exact between them.
        self.app.status.scanner.results_total = ev.seq;
        if *plan == Plan::Skip {
            self.app.history.push_skipped(ev);
            return;
        }
        self.app.history.push(Arc::clone(&ev));
        self.app
            .superseded
            .record(&ev, plan, self.app.history.oldest());
        self.turn_published.push(ev.published);
        let cap = self.config.out_buffer_cap;
        let (metrics, turn_full) = (&self.app.metrics, &mut self.turn_full);
        let deliveries = &mut self.turn_deliveries;
        self.conns.each_subscriber(|conn| {
            let Phase::WebSocket(session) = &mut conn.phase else {
                return false;
            };
            if session.is_replaying() {
                return false;
            }
            let d = planned_delivery(&session.subs, session.live_from(), &ev, plan);
            if d.is_empty() {
                return false;
            }
            let before = conn.out.pending();
            write_result(conn.out.vec(), &ev, &session.subs, d, &mut session.tail);
            conn.turn_bytes += conn.out.pending() - before;
            // Past a quarter of the cap in one turn: write before taking more results.
            *turn_full |= conn.turn_bytes > cap / 4;
            metrics.deliveries.inc();
            metrics.frames_sent.inc();
            *deliveries += 1;
            true
        });
    }

    /// Closes a connection that did not keep up, saying why (`msg`), with 4008.
    pub(super) fn slow_consumer(&mut self, key: usize, msg: &str, now: Instant) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        session::reply_error(
            conn.out.vec(),
            &self.app.metrics,
            ErrorCode::SlowConsumer,
            msg,
            None,
        );
        self.app.metrics.slow_consumer_closes.inc();
        tracing::debug!(key, pending = conn.out.pending(), "slow consumer");
        self.close_conn(key, close::SLOW_CONSUMER, "slow consumer", now);
    }

    /// Keeps the scanner's status; it goes out with the next status broadcast.
    pub(super) fn on_status(&mut self, status: ScannerStatus) {
        if status.cycle > self.app.status.scanner.cycle {
            self.app
                .metrics
                .cycle_seconds
                .observe(status.last_cycle_ms / 1000.0);
        }
        self.app.status.scanner = status;
        self.app.status.phase = status.phase.into();
        // Results sent before this status may still wait in the channel behind it.
        self.app.status.scanner.results_total = status.results_total.max(self.app.history.head());
        self.status_changed = true;
    }

    /// A late edge's first event: serve from the producer's state as of its cut.
    fn on_cut(&mut self, cut: Cut) {
        self.app.history = cut.history;
        self.app.alerts = AlertMirror::new(self.config.alert_history, cut.alerts);
        self.app.alerts.stats = cut.alert_stats;
        self.app.adhoc.learn(&cut.symbols);
        self.on_status(cut.status);
    }

    /// The scanner thread is gone: say so in every status and in /healthz, and go on
    /// serving the stream and its history.
    fn scanner_failed(&mut self, message: &str) {
        tracing::error!(%message, "the scanner has failed; serving history only");
        self.scanner_gone = true;
        self.app.scanner_failure = Some(message.to_owned());
        self.app.bus.mark_failed();
        self.app.adhoc.clear();
        self.app.status.scanner.state = scanner::RunState::Stopped;
        self.app.status.phase = ShownPhase::Idle;
        self.app.status.health = session::Health::Degraded;
        self.app.status.reason = Some("the scanner failed");
        self.status_changed = true;
        // Requests waiting for the producer will not be answered by it.
        let waiting: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.awaiting.is_some())
            .map(|(key, _)| key)
            .collect();
        for key in waiting {
            let refusal =
                http::Response::error(503, ErrorCode::Unavailable, "the scanner is not running");
            self.answer_waiting(key, refusal, Instant::now());
        }
    }

    /// An ad-hoc request is done: its results went out before this, so tell the requester
    /// (if it is still there) with a status of phase `adhoc` carrying its request `id`.
    fn adhoc_done(&mut self, tag: &Tag, symbols: usize, results: usize) {
        // Another edge's request, or one of this edge's from `POST /scan`: no one to tell.
        let Some(requester) = self.app.adhoc.done(tag, symbols) else {
            return;
        };
        let Some(id) = requester.conn else {
            return;
        };
        let mut status = self.app.status();
        status.phase = ShownPhase::Adhoc;
        let view = AdhocDoneView {
            status,
            symbols,
            results,
        };
        let Some(conn) = self.conns.get_live(id) else {
            return;
        };
        let Phase::WebSocket(session) = &mut conn.phase else {
            return;
        };
        self.scratch.clear();
        session::reply(
            &mut self.scratch,
            "status",
            Some(&view),
            requester.id.as_ref(),
        );
        // A replaying requester gets its results from the ring later: answer after them.
        session.after_replay(conn.out.vec(), &self.scratch);
        self.app.metrics.frames_sent.inc();
        self.conns.mark_dirty(id.key);
    }

    /// Sends the latest status, encoded once, to every subscriber: at most once per
    /// `progress_interval`, however often the scanner reports (ad-hoc requests and
    /// start/stop each make it report).
    pub(super) fn broadcast_status(&mut self, now: Instant) {
        // The bus went away or came back: the status says so.
        let bus_changes = self.app.shared.bus.changes();
        if bus_changes != self.bus_changes {
            self.bus_changes = bus_changes;
            self.status_changed = true;
        }
        if !self.status_changed || now < self.next_status {
            return;
        }
        self.status_changed = false;
        self.next_status = now + self.config.progress_interval.0;
        // To a tenth of a millisecond: finer is noise.
        let lag = std::mem::take(&mut self.lag_peak).as_secs_f64() * 1000.0;
        self.app.status.lag_ms = (lag * 10.0).round() / 10.0;
        self.scratch.clear();
        session::reply(&mut self.scratch, "status", Some(&self.app.status()), None);
        self.send_scratch_to_subscribers();
    }

    /// An alert raised or acknowledged: into the mirror, and to every connection holding a
    /// subscription as `alert` (when its rule broadcasts) or `acked`.
    fn on_alert(&mut self, note: &AlertNote) {
        self.app.alerts.apply(note);
        let ty = match note.change {
            Change::Raised { broadcast: false } => return,
            Change::Raised { broadcast: true } => "alert",
            Change::Acked => "acked",
        };
        self.scratch.clear();
        session::reply_raw(&mut self.scratch, ty, &note.json, None);
        self.send_scratch_to_subscribers();
    }

    /// A replay from the bus is done: the subscribes held meanwhile are answered.
    fn release_held(&mut self, id: ConnId) {
        self.on_session(id, |session, out, app, caller| {
            session.release_held(out, app, caller);
        });
    }

    /// The bus answered a resume from before the ring: the held `subscribe` goes on.
    fn older(&mut self, tag: &Tag, results: &[Arc<ScanEvent>]) {
        let Some(requester) = Requester::read(tag, self.app.edge) else {
            return;
        };
        let Some(id) = requester.conn else {
            return;
        };
        self.on_session(id, |session, out, app, caller| {
            session.older_arrived(results, out, app, caller);
        });
    }

    /// Runs `f` on connection `id`'s WebSocket session as a message read would, then
    /// brings its subscriber state up to date and has its out buffer written.
    fn on_session(
        &mut self,
        id: ConnId,
        f: impl FnOnce(&mut WsSession, &mut Vec<u8>, &mut App, &mut Caller),
    ) {
        let Some(conn) = self.conns.get_live(id) else {
            return;
        };
        let Phase::WebSocket(session) = &mut conn.phase else {
            return;
        };
        let mut caller = Caller::new(id, conn.subscriber);
        f(session, conn.out.vec(), &mut self.app, &mut caller);
        self.sync_subscriber(id.key);
        self.conns.mark_dirty(id.key);
    }

    /// An acknowledgment this edge sent is answered: tell the requester, a WebSocket with
    /// `acked` (or `not_found`) carrying its request `id`, an HTTP request with its
    /// response.
    fn ack_done(&mut self, tag: &Tag, alert_id: &str, alert: Option<&str>, now: Instant) {
        let Some(requester) = Requester::read(tag, self.app.edge) else {
            return;
        };
        let Some(id) = requester.conn else {
            return;
        };
        let Some(conn) = self.conns.get_live(id) else {
            return;
        };
        let request_id = requester.id.as_ref();
        let not_found = || {
            let shown: String = alert_id.chars().take(100).collect();
            format!("no alert `{shown}`")
        };
        match &mut conn.phase {
            Phase::WebSocket(session) => {
                self.scratch.clear();
                match alert {
                    Some(json) => session::reply_raw(&mut self.scratch, "acked", json, request_id),
                    None => session::reply_error(
                        &mut self.scratch,
                        &self.app.metrics,
                        ErrorCode::NotFound,
                        &not_found(),
                        request_id,
                    ),
                }
                // A replaying requester gets its results from the ring first.
                session.after_replay(conn.out.vec(), &self.scratch);
                self.app.metrics.frames_sent.inc();
                self.conns.mark_dirty(id.key);
            }
            Phase::Http { .. } => {
                let response = match alert {
                    Some(json) => http::Response::raw_json(200, json),
                    None => http::Response::error(404, ErrorCode::NotFound, &not_found()),
                };
                self.answer_waiting(id.key, response, now);
            }
            Phase::Closing { .. } => {}
        }
    }

    /// Appends `scratch`, one frame encoded once, to every subscribed connection.
    fn send_scratch_to_subscribers(&mut self) {
        let (scratch, metrics) = (&self.scratch, &self.app.metrics);
        self.conns.each_subscriber(|conn| {
            if !conn.has_subscriptions() {
                return false;
            }
            conn.out.extend(scratch);
            metrics.frames_sent.inc();
            true
        });
    }

    pub(super) fn pump_replays(&mut self, now: Instant) {
        if self.conns.replaying.is_empty() {
            return;
        }
        let budget = self.config.out_buffer_cap / 2;
        let (mut lost, mut held) = (Vec::new(), Vec::new());
        let status = self.app.status();
        let app = &self.app;
        self.conns.retain_replaying(|id, conn| {
            let Phase::WebSocket(session) = &mut conn.phase else {
                conn.replay_listed = false;
                return Replayed {
                    wrote: false,
                    keep: false,
                };
            };
            let before = conn.out.pending();
            let pumped = session.pump_replay(&mut conn.out, app, budget, REPLAY_VISITS, &status);
            if pumped.is_err() {
                lost.push(id.key);
            } else if session.holds_subscribes() {
                held.push(id);
            }
            conn.replay_listed = session.is_replaying() && pumped.is_ok();
            Replayed {
                wrote: conn.out.pending() != before,
                keep: conn.replay_listed,
            }
        });
        for key in lost {
            let msg = "the replay fell behind the history; resume with since";
            self.slow_consumer(key, msg, now);
        }
        for id in held {
            self.release_held(id);
        }
    }
}
