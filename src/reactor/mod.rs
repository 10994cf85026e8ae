//! The reactor, an edge: one thread, one `mio::Poll`, every socket it serves.
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
mod conn;
mod conns;
mod fanout;
mod host;
pub(crate) mod http;
mod mirror;
mod outbuf;
mod read;
mod requester;
mod session;
mod timers;
pub(crate) mod websocket;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};

pub use session::StatusView;

use crate::alerts::{AlertError, Alerts};
use crate::bus::local as local_bus;
use crate::config::Config;
use crate::history::History;
use crate::metrics::{Gauges, Metrics};
use crate::protocol::close;
use crate::scanner::{self, ProducerThread, RunState, ScannerOptions, ScannerStatus, Source};
use app::App;
use conn::Phase;
use conns::{ConnId, Conns};

const LISTENER: Token = Token(usize::MAX);
const WAKER: Token = Token(usize::MAX - 1);

/// Results taken from the channel per turn at most, so sockets are served in between
/// and one turn adds at most this many frames to an out buffer before it is written.
const MAX_DRAIN: usize = 1024;
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
}

/// Asks a running server to shut down gracefully, from any thread.
#[derive(Clone)]
pub struct ShutdownHandle {
    flag: Arc<AtomicBool>,
    waker: Arc<Waker>,
}

impl ShutdownHandle {
    /// Starts the graceful shutdown: close 1001 to every WebSocket, flush, return.
    pub fn shutdown(&self) {
        self.flag.store(true, Ordering::SeqCst);
        // If the wake fails the poll is already gone, which is the goal.
        let _ = self.waker.wake();
    }
}

/// The server: a bound listener, a scanner thread and the event loop.
pub struct Reactor {
    poll: Poll,
    listener: Option<TcpListener>,
    local_addr: SocketAddr,
    waker: Arc<Waker>,
    shutdown_flag: Arc<AtomicBool>,
    config: Config,
    conns: Conns,
    /// What the edge answers from, beside its connections.
    app: App,
    /// The producer's thread, joined after the bus is let go at shutdown (the first
    /// edge holds it).
    producer: Option<ProducerThread>,
    /// Attaches more edges to the producer.
    attacher: Option<local_bus::Attacher>,
    /// Publish instants of the results fanned out this turn.
    turn_published: Vec<Instant>,
    /// The channel held more than one turn's worth.
    more_results: bool,
    /// A connection took a quarter of its cap this turn: drain no more until written.
    turn_full: bool,
    /// The scanner's status changed since it was last broadcast.
    status_changed: bool,
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
    /// Binds the listener and starts the scanner over the configured source.
    pub fn bind(config: Config) -> Result<Reactor, ServerError> {
        let source =
            scanner::source_for(&config.source, &config.source_settings()).map_err(|source| {
                ServerError::Source {
                    spec: config.source.to_string(),
                    source,
                }
            })?;
        Reactor::bind_with(config, source)
    }

    /// Binds the listener and starts the scanner over `source`.
    pub fn bind_with(config: Config, source: Box<dyn Source>) -> Result<Reactor, ServerError> {
        let (poll, listener, waker) = listen(config.listen)?;
        // Symbols known up front can be asked for from the first request on.
        let mut names = Vec::new();
        let mut source = source;
        source.new_symbols(&mut names);
        let alerts = Alerts::start(&config.alert_settings(), config.data_dir.as_deref())?;
        // The edge starts from the history the producer loaded from its journal.
        let mirror = mirror::AlertMirror::new(config.alert_history, alerts.log().iter().cloned());
        // Every ad-hoc request holds a symbol at least, so the edges' bound on symbols
        // bounds the scans waiting too.
        let (producer_link, mut edges, attacher) = local_bus::bus(
            std::slice::from_ref(&waker),
            scanner::EVENT_CHANNEL,
            scanner::CONTROL_COMMANDS + config.adhoc_queue.max(1),
        );
        let bus = edges
            .pop()
            .ok_or_else(|| io::Error::other("no edge on the bus"))?;
        let epoch = new_epoch();
        let history = History::new(config.history_size, epoch);
        let options = ScannerOptions {
            progress_interval: config.progress_interval.0,
            history: history.clone(),
            symbols: names.clone(),
        };
        let producer = scanner::spawn(source, alerts, producer_link, options)?;
        let mut edge = Reactor::edge(config, 0, (poll, listener, waker), bus, history, mirror)?;
        edge.app.adhoc.learn(&names);
        edge.producer = Some(producer);
        edge.attacher = Some(attacher);
        Ok(edge)
    }

    /// Something that attaches more edges to this server's producer, from any thread.
    /// The producer ends when every edge and every maker is gone: drop it before
    /// waiting for [`run`](Reactor::run) to return.
    pub fn edge_maker(&self) -> Option<EdgeMaker> {
        Some(EdgeMaker {
            attacher: self.attacher.clone()?,
            config: self.config.clone(),
        })
    }

    /// An edge on `listener` over `bus`, serving from `history` and `alerts`.
    fn edge(
        config: Config,
        index: usize,
        (poll, listener, waker): (Poll, TcpListener, Arc<Waker>),
        bus: local_bus::EdgeLink,
        history: History,
        alerts: mirror::AlertMirror,
    ) -> Result<Reactor, ServerError> {
        let local_addr = listener.local_addr()?;
        // The epoch last: the browser tests read it off the end of this line.
        tracing::info!(%local_addr, source = %config.source, edge = index, epoch = %history.epoch(), "listening");
        let now = Instant::now();
        Ok(Reactor {
            poll,
            listener: Some(listener),
            local_addr,
            waker,
            shutdown_flag: Arc::new(AtomicBool::new(false)),
            app: App {
                edge: index,
                history,
                status: StatusView {
                    scanner: ScannerStatus::initial(),
                    phase: ScannerStatus::initial().phase.into(),
                    subscribers: 0,
                    health: session::Health::Ok,
                },
                bus,
                adhoc: adhoc::Adhoc::new(index, config.adhoc_queue),
                access: access::Access::new(&config),
                alerts,
                metrics: Metrics::default(),
                limits: session::Limits {
                    max_subscriptions: config.max_subscriptions,
                    max_symbols: config.max_filter_symbols,
                    rate: config.message_rate,
                    burst: config.message_burst,
                },
                scanner_failure: None,
            },
            producer: None,
            attacher: None,
            conns: Conns::default(),
            turn_published: Vec::new(),
            more_results: false,
            turn_full: false,
            status_changed: false,
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
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A handle that stops the server gracefully.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            flag: Arc::clone(&self.shutdown_flag),
            waker: Arc::clone(&self.waker),
        }
    }

    /// Runs until shut down. Only poll failures end it with an error.
    pub fn run(mut self) -> Result<(), ServerError> {
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
            if self.shutdown_flag.load(Ordering::SeqCst) && self.shutdown_deadline.is_none() {
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
        tracing::info!(open = self.conns.len(), "shut down");
        // Letting go of the bus ends the producer; then wait for it.
        let producer = self.producer.take();
        drop(self);
        if let Some(producer) = producer {
            producer.join();
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
        let _ = self.poll.registry().deregister(&mut conn.socket);
        if conn.subscriber {
            self.app.status.subscribers -= 1;
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
        match conn
            .out
            .write_to(&mut conn.socket, &mut self.app.metrics.write_calls)
        {
            Ok((written, flushed)) => {
                self.app.metrics.bytes_sent += written as u64;
                let wants_write = flushed == outbuf::Flushed::Blocked;
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
                        .reregister(&mut conn.socket, t, interest)
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
                    Phase::Closing { .. } if conn.peer_done && pending == 0 => self.drop_conn(key),
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
        tracing::info!(open = self.conns.len(), "shutting down");
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

    /// The metrics page.
    fn render_metrics(&self) -> String {
        let mut g = Gauges {
            connections: self.conns.len(),
            subscribers: self.app.status.subscribers,
            history_len: self.app.history.len(),
            active: self.app.history.active_len(),
            symbols: self.app.status.scanner.total,
            adhoc_queue: self.app.adhoc.pending(),
            scanner_running: self.app.status.scanner.state == RunState::Running
                && !self.scanner_gone,
            cycles: self.app.status.scanner.cycle,
            updates: self.app.status.scanner.counters.updates,
            evaluated: self.app.status.scanner.counters.evaluated,
            bad_input: self.app.status.scanner.counters.bad_input,
            alerts: self.app.alerts.stats.counters,
            alert_history: self.app.alerts.log().len(),
            alerts_unacked: self.app.alerts.log().unacked(),
            webhook: self.app.alerts.stats.webhook,
            ..Gauges::default()
        };
        for (_, conn) in self.conns.iter() {
            g.pending_bytes += conn.out.pending();
            if matches!(conn.phase, Phase::WebSocket(_)) {
                g.websockets += 1;
            }
        }
        self.app.metrics.render(&g)
    }
}

/// A poll, a listener on `addr` registered with it, and a waker.
fn listen(addr: SocketAddr) -> Result<(Poll, TcpListener, Arc<Waker>), ServerError> {
    let poll = Poll::new()?;
    let mut listener =
        TcpListener::bind(addr).map_err(|source| ServerError::Bind { addr, source })?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    Ok((poll, listener, waker))
}

/// Starts more edges on a running server's producer: each attaches, gets the producer's
/// cut (history, active set, alerts, status) and then everything after it.
#[derive(Debug, Clone)]
pub struct EdgeMaker {
    attacher: local_bus::Attacher,
    config: Config,
}

impl EdgeMaker {
    /// Binds edge number `index` on `addr`; run it with [`Reactor::run`].
    pub fn bind(&self, index: usize, addr: SocketAddr) -> Result<Reactor, ServerError> {
        let (poll, listener, waker) = listen(addr)?;
        let bus = self
            .attacher
            .attach(Arc::clone(&waker))
            .map_err(|_| io::Error::other("the producer has ended"))?;
        let config = Config {
            listen: addr,
            ..self.config.clone()
        };
        // Empty until the cut arrives, the first thing the edge reads.
        let history = History::new(config.history_size, String::new());
        let alerts = mirror::AlertMirror::new(config.alert_history, Vec::new());
        Reactor::edge(config, index, (poll, listener, waker), bus, history, alerts)
    }
}

/// A short random identifier for this run, so clients can tell a restart.
fn new_epoch() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..8)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}
