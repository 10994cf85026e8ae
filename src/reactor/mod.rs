//! The reactor, an edge: one thread, one `mio::Poll`, every socket it serves; and the
//! server (`server`), that runs one producer and `--threads` edges on one port.
//!
//! It owns the listener and every connection (`conns`), and what it answers from (`app`:
//! the history ring, the status, the alert mirror, its end of the bus). Each loop turn it
//! accepts, reads and answers, drains the producer's events and fans results out into
//! out buffers, pumps replays, sweeps timers, then writes each dirty connection once. It
//! must never block: no locks, no blocking I/O, nothing slow on behalf of one client;
//! what needs the producer (an ad-hoc scan, an acknowledgment) goes as a command, and
//! the answer comes back as an event.

mod accept;
pub(crate) mod access;
mod adhoc;
mod api;
mod app;
pub(crate) mod broadcast;
mod conflate;
mod conn;
mod conns;
mod fanout;
mod host;
pub(crate) mod http;
mod mirror;
mod outbuf;
mod read;
mod requester;
mod server;
mod session;
mod shared;
mod timers;
mod transport;
pub(crate) mod websocket;

use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};

pub use server::{EdgeMaker, Server, TlsReload};
pub use session::StatusView;

use crate::alerts::AlertError;
use crate::bus::health::BusProblem;
use crate::bus::local as local_bus;
use crate::config::BusSpec;
use crate::config::Config;
use crate::history::History;
use crate::metrics::{self, BusGauges, Gauges, Metrics};
use crate::protocol::close;
use crate::scanner::{RunState, ScannerStatus};
use app::App;
use conn::Phase;
use conns::{ConnId, Conns};
use server::Listening;
use shared::Shared;

const LISTENER: Token = Token(usize::MAX);
const WAKER: Token = Token(usize::MAX - 1);

/// Results taken from the channel per turn at most, so sockets are served in between
/// and one turn adds at most this many frames to an out buffer before it is written.
const MAX_DRAIN: usize = 1024;
/// Result frames one turn queues at most, over all connections, before writing them:
/// at saturation a turn of MAX_DRAIN results to a thousand subscribers would hold the
/// first of them back for half a second.
const MAX_TURN_DELIVERIES: usize = 65_536;
/// Results one turn takes from a lagging edge's backlog at most, skipped ones included.
const MAX_HOLD: usize = 8 * MAX_DRAIN;
/// Events a lagging edge holds at most (the channel holds 8,192 more).
const MAX_BACKLOG: usize = 65_536;
/// Unsent bytes an HTTP connection may have before its requests are no longer read:
/// a client that pipelines without reading its responses waits for them.
const HTTP_OUT_CAP: usize = 64 * 1024;
/// History entries one replaying connection walks per turn at most, so a filter that
/// matches little cannot make one turn walk the whole ring.
const REPLAY_VISITS: usize = 4096;

/// What a handler wants done with its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Keep it open.
    Keep,
    /// Close it with this WebSocket close code and reason.
    Close(u16, &'static str),
}

/// Why the server could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The listen address is taken or not ours; pick another with `--listen`.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// The configured source could not be opened (a missing file, a bad CSV header).
    #[error("source {spec}: {source}")]
    Source {
        /// The source as configured.
        spec: String,
        /// Why.
        source: io::Error,
    },
    /// The poll, its waker or the scanner thread could not be set up or failed.
    #[error("event loop: {0}")]
    Poll(#[from] io::Error),
    /// An alert rule, the journal or the webhook setting is wrong.
    #[error("alerts: {0}")]
    Alerts(#[from] AlertError),
    /// The TLS certificate or key cannot serve.
    #[error("tls: {0}")]
    Tls(#[from] crate::tls::TlsError),
}

/// Asks a running server to shut down gracefully, from any thread.
#[derive(Clone)]
pub struct ShutdownHandle {
    shared: Arc<Shared>,
}

impl ShutdownHandle {
    /// Starts the graceful shutdown: every edge closes its WebSockets with 1001, flushes
    /// and returns.
    pub fn shutdown(&self) {
        self.shared.shutdown();
    }
}

/// What an edge starts serving from: the history ring and the alert history.
struct Start {
    history: History,
    alerts: mirror::AlertMirror,
}

/// An edge: a listener, its connections and the event loop that serves them.
struct Reactor {
    poll: Poll,
    listener: Option<TcpListener>,
    local_addr: SocketAddr,
    config: Config,
    conns: Conns,
    /// What the edge answers from, beside its connections.
    app: App,
    /// Publish instants of the results fanned out this turn.
    turn_published: Vec<Instant>,
    /// The channel held more than one turn's worth.
    more_results: bool,
    /// A connection took a quarter of its cap this turn: drain no more until written.
    turn_full: bool,
    /// Result frames queued this turn.
    turn_deliveries: usize,
    /// Input taken while lagging, conflated, sent from before the channel.
    backlog: conflate::Backlog,
    /// The longest a result taken had waited, since the last status broadcast.
    lag_peak: Duration,
    /// The scanner's status changed since it was last broadcast.
    status_changed: bool,
    /// The bus health's changes as of the last status broadcast.
    bus_changes: u64,
    /// No status broadcast before this.
    next_status: Instant,
    /// The scanner thread has ended (it panicked or could not run).
    scanner_gone: bool,
    shutdown_deadline: Option<Instant>,
    accept_paused_until: Option<Instant>,
    next_sweep: Instant,
    /// Reused scratch space for frames shared by every subscriber (status).
    scratch: Vec<u8>,
}

impl Reactor {
    /// Edge number `index` on `listening`, over `bus`, serving from `start`; one of the
    /// edges of `shared`, counting into `metrics`.
    fn edge(
        config: Config,
        index: usize,
        (poll, listener, _waker): Listening,
        bus: local_bus::EdgeLink,
        start: Start,
        shared: Arc<Shared>,
        metrics: Arc<Metrics>,
    ) -> Result<Reactor, ServerError> {
        let local_addr = listener.local_addr()?;
        let now = Instant::now();
        let tls = shared.tls_since(u64::MAX).and_then(|(_, tls)| tls);
        Ok(Reactor {
            poll,
            listener: Some(listener),
            local_addr,
            app: App {
                edge: index,
                history: start.history,
                status: StatusView {
                    scanner: ScannerStatus::initial(),
                    phase: ScannerStatus::initial().phase.into(),
                    subscribers: 0,
                    health: session::Health::Ok,
                    reason: None,
                    lag_ms: 0.0,
                },
                bus,
                adhoc: adhoc::Adhoc::new(index, Arc::clone(&shared), config.adhoc_queue),
                access: access::Access::new(&config),
                alerts: start.alerts,
                metrics,
                shared,
                limits: session::Limits {
                    max_subscriptions: config.max_subscriptions,
                    max_symbols: config.max_filter_symbols,
                    rate: config.message_rate,
                    burst: config.message_burst,
                },
                scanner_failure: None,
                deep_history: config.deep_history(),
                tls,
                tls_generation: 0,
                scans: api::scan_list(&config).into(),
                superseded: conflate::Superseded::default(),
            },
            conns: Conns::default(),
            turn_published: Vec::new(),
            more_results: false,
            turn_full: false,
            turn_deliveries: 0,
            backlog: conflate::Backlog::default(),
            lag_peak: Duration::ZERO,
            status_changed: false,
            bus_changes: 0,
            next_status: now,
            scanner_gone: false,
            shutdown_deadline: None,
            accept_paused_until: None,
            next_sweep: now + config.sweep_interval.0,
            scratch: Vec::new(),
            config,
        })
    }

    /// The address actually bound (useful with port 0).
    fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Runs until shut down. Only poll failures end it with an error.
    fn run(mut self) -> Result<(), ServerError> {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = self.poll_timeout(Instant::now());
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e.into());
                }
            }
            let now = Instant::now();
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(now),
                    WAKER => {}
                    token => {
                        let id = ConnId::from_token(token);
                        if !self.conns.is_live(id) {
                            continue; // a stale event for an older occupant of the slot
                        }
                        let key = id.key;
                        if event.is_writable() {
                            self.conns.mark_dirty(key);
                        }
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.on_readable(key, now);
                        }
                    }
                }
            }
            if self.app.shared.shutting_down() && self.shutdown_deadline.is_none() {
                self.begin_shutdown(now);
            }
            self.retry_reads(now);
            // Replays first: a fresh cursor starts before new results can push its first
            // entries out of the ring.
            self.pump_replays(now);
            self.drain_scanner();
            self.broadcast_status(now);
            if now >= self.next_sweep {
                self.sweep(now);
                self.next_sweep = now + self.config.sweep_interval.0;
            }
            if self.accept_paused_until.is_some_and(|t| now >= t) {
                self.accept_paused_until = None;
                self.accept(now);
            }
            self.flush_dirty(now);
            self.observe_latency();
            if let Some(deadline) = self.shutdown_deadline {
                if self.conns.is_empty() || now >= deadline {
                    break;
                }
            }
        }
        tracing::info!(edge = self.app.edge, open = self.conns.len(), "shut down");
        // What this edge still counts leaves the process's counts with it.
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            self.drop_conn(key);
        }
        Ok(())
    }

    fn poll_timeout(&self, now: Instant) -> Duration {
        if self.more_results || !self.conns.pending_reads.is_empty() || self.can_replay() {
            return Duration::ZERO;
        }
        let mut until = self.next_sweep;
        if let Some(t) = self.accept_paused_until {
            until = until.min(t);
        }
        if self.status_changed {
            until = until.min(self.next_status);
        }
        until.saturating_duration_since(now)
    }

    /// A replaying connection has room for more: pump again without waiting for an event
    /// (a socket that took everything sends no `WRITABLE` edge).
    fn can_replay(&self) -> bool {
        let budget = self.config.out_buffer_cap / 2;
        self.conns.replaying.iter().any(|&id| {
            self.conns
                .live(id)
                .is_some_and(|c| c.out.pending() < budget)
        })
    }

    /// Closes a connection's socket now and forgets it.
    fn drop_conn(&mut self, key: usize) {
        let Some(mut conn) = self.conns.remove(key) else {
            return;
        };
        let _ = self.poll.registry().deregister(conn.transport.socket_mut());
        if let Some(reason) = conn.transport.handshake_failure() {
            let i = transport::FAILURES.iter().position(|r| *r == reason);
            if let Some(counter) = i.and_then(|i| self.app.metrics.tls_failures.get(i)) {
                counter.inc();
            }
        }
        Shared::release(&self.app.shared.open, 1);
        if conn.subscriber {
            self.app.count_subscriber(false);
        }
        if conn.listed {
            self.conns.subscribers_stale = true;
        }
    }

    /// Sends a close (frame or final response already queued) and lets the connection
    /// drain; keeps the subscriber count right.
    fn close_conn(&mut self, key: usize, code: u16, reason: &str, now: Instant) {
        let linger = self.config.close_timeout.0;
        if let Some(conn) = self.conns.get_mut(key) {
            if matches!(conn.phase, Phase::WebSocket(_)) {
                self.app.metrics.count_close(code);
            }
            conn.close(code, reason, now, linger);
        }
        self.sync_subscriber(key);
        self.conns.mark_dirty(key);
    }

    /// Writes each dirty connection once.
    fn flush_dirty(&mut self, now: Instant) {
        let mut dirty = std::mem::take(&mut self.conns.dirty);
        for key in dirty.drain(..) {
            self.flush(key, now);
        }
        // Keep the capacity, and what flushing queued (a slow consumer's close frame).
        dirty.append(&mut self.conns.dirty);
        self.conns.dirty = dirty;
    }

    fn flush(&mut self, key: usize, now: Instant) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if !conn.dirty {
            return;
        }
        conn.dirty = false;
        conn.turn_bytes = 0;
        // TLS bytes the socket did not take last time go first.
        if conn.transport.flush().is_err() {
            self.drop_conn(key);
            return;
        }
        match conn
            .out
            .write_to(&mut conn.transport, &self.app.metrics.write_calls)
        {
            Ok((written, flushed)) => {
                self.app.metrics.bytes_sent.add(written as u64);
                let wants_write =
                    flushed == outbuf::Flushed::Blocked || conn.transport.has_pending();
                if wants_write != conn.wants_write {
                    conn.wants_write = wants_write;
                    let interest = if wants_write {
                        Interest::READABLE | Interest::WRITABLE
                    } else {
                        Interest::READABLE
                    };
                    let t = ConnId {
                        key,
                        generation: conn.generation,
                    }
                    .token();
                    if self
                        .poll
                        .registry()
                        .reregister(conn.transport.socket_mut(), t, interest)
                        .is_err()
                    {
                        self.drop_conn(key);
                        return;
                    }
                }
                conn.shut_write_when_flushed();
                let pending = conn.out.pending();
                match conn.phase {
                    Phase::WebSocket(_) if pending > self.config.out_buffer_cap => {
                        let msg = "unsent data passed the per-connection limit; resume with since";
                        self.slow_consumer(key, msg, now);
                    }
                    Phase::Http { .. } if conn.read_paused && pending <= HTTP_OUT_CAP / 2 => {
                        conn.read_paused = false;
                        let id = ConnId {
                            key,
                            generation: conn.generation,
                        };
                        self.conns.pending_reads.push(id);
                    }
                    Phase::Closing { .. }
                        if conn.peer_done && pending == 0 && !conn.transport.has_pending() =>
                    {
                        self.drop_conn(key)
                    }
                    _ => {}
                }
            }
            Err(_) => self.drop_conn(key),
        }
    }

    fn observe_latency(&mut self) {
        if self.turn_published.is_empty() {
            return;
        }
        let flushed = Instant::now();
        for published in self.turn_published.drain(..) {
            self.app
                .metrics
                .observe_latency(flushed.saturating_duration_since(published));
        }
    }

    fn begin_shutdown(&mut self, now: Instant) {
        tracing::info!(
            edge = self.app.edge,
            open = self.conns.len(),
            "shutting down"
        );
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        self.shutdown_deadline = Some(now + self.config.shutdown_timeout.0);
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            match &conn.phase {
                Phase::WebSocket(_) => {
                    self.close_conn(key, close::GOING_AWAY, "server shutting down", now);
                }
                Phase::Http { .. } if conn.out.is_empty() => self.drop_conn(key),
                Phase::Http { .. } => {
                    let linger = self.config.shutdown_timeout.0;
                    conn.close(close::GOING_AWAY, "", now, linger);
                    self.conns.mark_dirty(key);
                }
                Phase::Closing { .. } => {}
            }
        }
    }

    /// The metrics page: every edge's counters added up, and the process's gauges.
    fn render_metrics(&self) -> String {
        self.publish_gauges();
        let app = &self.app;
        let scanner = &app.status.scanner;
        let bus = &app.shared.bus;
        let g = Gauges {
            bus: (self.config.bus != BusSpec::Local).then(|| BusGauges {
                up: bus.current().is_none(),
                problems: BusProblem::ALL.map(|p| bus.began(p)),
                dropped: bus.dropped(),
            }),
            connections: app.shared.open.load(Ordering::Relaxed),
            subscribers: app.shared.subscribers.load(Ordering::Relaxed),
            history_len: app.history.len(),
            active: app.history.active_len(),
            symbols: scanner.total,
            adhoc_queue: app.adhoc.pending(),
            scanner_running: scanner.state == RunState::Running && !self.scanner_gone,
            cycles: scanner.cycle,
            updates: scanner.counters.updates,
            evaluated: scanner.counters.evaluated,
            bad_input: scanner.counters.bad_input,
            alerts: app.alerts.stats.counters,
            alert_history: app.alerts.log().len(),
            alerts_unacked: app.alerts.log().unacked(),
            webhook: app.alerts.stats.webhook,
        };
        let edges: Vec<&Metrics> = app.shared.metrics.iter().map(|m| &**m).collect();
        metrics::render(&edges, &g, &transport::FAILURES)
    }

    /// Sets this edge's gauges that take a walk over its connections; the sweep calls
    /// it, so another edge's `/metrics` shows them as of the last sweep.
    fn publish_gauges(&self) {
        let (mut websockets, mut pending) = (0, 0);
        for (_, conn) in self.conns.iter() {
            pending += conn.out.pending() as u64;
            websockets += u64::from(matches!(conn.phase, Phase::WebSocket(_)));
        }
        self.app.metrics.connections.set(self.conns.len() as u64);
        self.app.metrics.websockets.set(websockets);
        self.app.metrics.pending_bytes.set(pending);
    }
}
