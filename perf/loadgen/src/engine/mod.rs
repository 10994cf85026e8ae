//! The benchmark engine: one thread, one mio `Poll`, every connection in a `Vec` indexed
//! by its token. Connections open at a fixed rate, complete the WebSocket handshake
//! without blocking, subscribe, and are then read edge-triggered until `WouldBlock`
//! through one shared read buffer, so 10,000 idle connections cost only their sockets and
//! a partial frame each. The connection itself is [`crate::conn`]; this module decides
//! when connections open, end and count, and never parses a frame itself.
//!
//! `count` says what a frame means to the benchmark, `churn` runs churn mode, `window`
//! measures the window, `check` keeps and checks the tables of `--check-table`, `report`
//! holds the figures handed to the caller and `output` prints them.

mod check;
#[cfg(test)]
mod check_tests;
mod churn;
mod count;
mod output;
mod report;
mod window;

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token};

use crate::conn::{Conn, End, Phase, Progress, ReadBuf};
use crate::sys::wall_ns;
use crate::tls::Tls;
use count::{Counters, Track, on_frame};
use report::summary;
use window::Window;

pub use check::{TableCheckConfig, TableCheckReport};
pub use report::{ChurnReport, LatencySummary, Report, ServerUsage};

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    pub addr: SocketAddr,
    /// TLS settings for `wss://`; `None` speaks plain `ws://`.
    pub tls: Option<Tls>,
    /// `Host` header value.
    pub host: String,
    /// Request target: path and query.
    pub path: String,
    pub clients: usize,
    /// Connections opened per second.
    pub ramp: f64,
    /// The text message sent once connected; `None` stays idle.
    pub subscribe: Option<Vec<u8>>,
    pub warmup: Duration,
    pub duration: Duration,
    /// Handshake deadline per connection, from its `connect`.
    pub connect_timeout: Duration,
    pub server_pid: Option<u32>,
    /// Largest frame payload accepted; larger closes the connection with 1009.
    pub max_frame: usize,
    /// Churn mode: each connection leaves once subscribed and its slot starts over.
    pub churn: Option<Churn>,
    /// The table check: after the window, sampled connections compare the table they
    /// kept with a fresh snapshot. `subscribe` must then ask for a snapshot.
    pub check: Option<TableCheckConfig>,
}

/// How churn slots behave.
#[derive(Debug, Clone, Copy)]
pub struct Churn {
    /// Longest a cycle may take from `connect` to `subscribed`.
    pub cycle_timeout: Duration,
    /// Longest to wait, after our close frame, for the server to close the TCP connection.
    pub close_wait: Duration,
    /// Reset (SO_LINGER 0) right after the close frame instead of waiting for the server.
    pub reset: bool,
}

/// Reads one shared buffer's worth per `read` call; 256 KiB keeps syscalls per message low
/// when the server batches.
const READ_CHUNK: usize = 256 * 1024;
const TICK: Duration = Duration::from_millis(100);

/// Where the run stands.
enum Stage {
    Ramp,
    Warmup(Instant),
    Measure(Instant),
    /// The table check, after the window, until this deadline.
    Check(Instant),
}

/// One connection of the run and what the engine follows on it.
struct Client {
    conn: Conn,
    track: Track,
}

pub struct Engine {
    cfg: Config,
    poll: Poll,
    conns: Vec<Option<Client>>,
    /// Messages in the window of connections already gone.
    per_client: Vec<u64>,
    /// Open when the window started: the connections fairness is judged on.
    fair: Vec<bool>,
    rbuf: ReadBuf,
    c: Counters,
    in_window: bool,
    /// Connections connecting or handshaking.
    pending: usize,
    /// Connections cut short by their read budget: read again before the next poll.
    ready: Vec<usize>,
    /// Seeds every connection's masks and nonce.
    request_seed: u64,
    /// Churn slots to start again at the next tick, after an error.
    restart: Vec<usize>,
}

impl Engine {
    pub fn new(cfg: Config) -> io::Result<Engine> {
        let n = cfg.clients;
        Ok(Engine {
            poll: Poll::new()?,
            conns: (0..n).map(|_| None).collect(),
            per_client: vec![0; n],
            fair: vec![false; n],
            rbuf: ReadBuf::new(READ_CHUNK, true),
            c: Counters::default(),
            in_window: false,
            pending: 0,
            ready: Vec::new(),
            request_seed: wall_ns() as u64 | 1,
            restart: Vec::new(),
            cfg,
        })
    }

    /// Runs the whole test: ramp, warm-up, the measured window; then closes everything.
    pub fn run(mut self, progress: bool) -> io::Result<Report> {
        let mut events = Events::with_capacity(1024);
        let start = Instant::now();
        let ramp_interval = Duration::from_secs_f64(1.0 / self.cfg.ramp.max(0.001));
        let mut next_open = 0usize;
        let mut stage = Stage::Ramp;
        let mut ramp_s = 0.0;
        let mut next_tick = start + TICK;
        let mut window = Window::default();

        loop {
            let now = Instant::now();
            // Open the connections that are due; a cap per turn keeps reads flowing.
            let mut opened = 0;
            while next_open < self.cfg.clients
                && opened < 256
                && start + ramp_interval.mul_f64(next_open as f64) <= now
            {
                self.open(next_open);
                next_open += 1;
                opened += 1;
            }
            if now >= next_tick {
                next_tick = now + TICK;
                if self.cfg.churn.is_some() {
                    self.churn_tick(now);
                } else if self.pending > 0 {
                    self.expire_handshakes(now);
                }
                if let Stage::Measure(_) = stage {
                    window.sample_server();
                }
            }
            if let Stage::Measure(_) = stage {
                window.count_interval(&self, now);
            }
            match stage {
                Stage::Ramp
                    if next_open == self.cfg.clients
                        && (self.pending == 0 || self.cfg.churn.is_some()) =>
                {
                    ramp_s = start.elapsed().as_secs_f64();
                    if self.cfg.churn.is_some() {
                        // Slots never settle in churn mode: the ramp ends once all started.
                        if progress {
                            eprintln!(
                                "loadgen: churn: {} slots started in {:.2} s",
                                self.cfg.clients, ramp_s
                            );
                        }
                        stage = Stage::Warmup(now + self.cfg.warmup);
                        continue;
                    }
                    if progress {
                        eprintln!(
                            "loadgen: {} of {} connected in {:.2} s, {} failed",
                            self.c.connected,
                            self.cfg.clients,
                            ramp_s,
                            self.cfg.clients as u64 - self.c.connected
                        );
                    }
                    if self.c.connected == 0 {
                        // Nothing to measure; report the failures at once.
                        break;
                    }
                    stage = Stage::Warmup(now + self.cfg.warmup);
                    continue;
                }
                Stage::Warmup(end) if now >= end => {
                    window = Window::start(&mut self, now);
                    stage = Stage::Measure(now + self.cfg.duration);
                    continue;
                }
                Stage::Measure(end) if now >= end => {
                    window.finish(&self, now);
                    if let Some(timeout) = self.cfg.check.as_ref().map(|c| c.timeout) {
                        self.in_window = false;
                        if self.start_table_check() {
                            if progress {
                                eprintln!(
                                    "loadgen: table check: {} connections ask for a fresh snapshot",
                                    self.table_checks_in_flight()
                                );
                            }
                            stage = Stage::Check(now + timeout);
                            continue;
                        }
                    }
                    break;
                }
                Stage::Check(end) if now >= end || self.table_checks_in_flight() == 0 => break,
                _ => {}
            }

            let mut deadline = next_tick;
            match stage {
                Stage::Ramp if next_open < self.cfg.clients => {
                    deadline = deadline.min(start + ramp_interval.mul_f64(next_open as f64));
                }
                Stage::Warmup(end) | Stage::Check(end) => deadline = deadline.min(end),
                Stage::Measure(end) => {
                    deadline = deadline.min(end);
                    if let Some(next) = window.next_interval {
                        deadline = deadline.min(next);
                    }
                }
                Stage::Ramp => {}
            }
            let timeout = if self.ready.is_empty() {
                deadline.saturating_duration_since(Instant::now())
            } else {
                Duration::ZERO
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout))
                && e.kind() != io::ErrorKind::Interrupted
            {
                return Err(e);
            }
            for ev in events.iter() {
                let i = ev.token().0;
                let readable = ev.is_readable() || ev.is_read_closed() || ev.is_error();
                self.on_event(i, readable, ev.is_writable());
            }
            for i in std::mem::take(&mut self.ready) {
                if self.conns[i]
                    .as_ref()
                    .is_some_and(|c| c.conn.is_reading_frames())
                    && self.read_frames(i)
                {
                    self.ready.push(i);
                }
            }
        }
        Ok(self.report(ramp_s, window))
    }

    fn open(&mut self, i: usize) {
        let seed = self
            .request_seed
            .wrapping_add(i as u64)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let now = Instant::now();
        let mut conn = match Conn::connect(self.cfg.addr, self.cfg.tls.as_ref(), seed, now) {
            Ok(c) => c,
            Err(e) => return self.fail(i, None, &e.to_string()),
        };
        if let Err(e) = conn.register(self.poll.registry(), Token(i)) {
            return self.fail(i, None, &e.to_string());
        }
        self.conns[i] = Some(Client {
            conn,
            track: Track::default(),
        });
        self.pending += 1;
    }

    /// A connection that never got open: counted by reason, socket dropped.
    fn fail(&mut self, i: usize, client: Option<Client>, why: &str) {
        let step = match client.as_ref().map(|c| c.conn.phase()) {
            Some(Phase::Handshaking) => "handshake",
            _ => "connect",
        };
        if let Some(client) = client {
            self.pending -= 1;
            // Closing first would leave this side in TIME_WAIT.
            client
                .conn
                .close(self.poll.registry(), self.cfg.churn.is_some());
        }
        *self.c.connect_errors.entry(why.to_string()).or_default() += 1;
        self.conns[i] = None;
        if self.cfg.churn.is_some() {
            self.churn_error(format!("{step}: {why}"));
            self.restart.push(i);
        }
    }

    fn expire_handshakes(&mut self, now: Instant) {
        for i in 0..self.conns.len() {
            let late = self.conns[i].as_ref().is_some_and(|c| {
                !c.conn.is_open() && now.duration_since(c.conn.opened()) > self.cfg.connect_timeout
            });
            if late {
                let client = self.conns[i].take();
                let why = match client.as_ref().map(|c| c.conn.phase()) {
                    Some(Phase::Connecting) => "connect timed out",
                    _ => "handshake timed out",
                };
                self.fail(i, client, why);
            }
        }
    }

    fn on_event(&mut self, i: usize, readable: bool, writable: bool) {
        let Some(phase) = self
            .conns
            .get(i)
            .and_then(|c| c.as_ref())
            .map(|c| c.conn.phase())
        else {
            return;
        };
        match phase {
            Phase::Connecting => self.on_connect(i),
            Phase::Handshaking => {
                if writable {
                    self.flush(i);
                }
                if readable {
                    self.read_handshake(i);
                }
            }
            Phase::Open | Phase::Closing { .. } => {
                if writable {
                    self.flush(i);
                }
                if readable && self.read_frames(i) {
                    self.ready.push(i);
                }
            }
        }
    }

    fn flush(&mut self, i: usize) {
        let Some(client) = self.conns[i].as_mut() else {
            return;
        };
        if let Err(e) = client.conn.flush() {
            if client.conn.is_reading_frames() {
                if self.cfg.churn.is_some() {
                    self.churn_after_read(i, Some(End::Abrupt), false);
                    return;
                }
                let client = self.conns[i].take();
                self.end(i, client, End::Abrupt);
            } else {
                let client = self.conns[i].take();
                self.fail(i, client, &e.to_string());
            }
        }
    }

    fn on_connect(&mut self, i: usize) {
        let Some(client) = self.conns[i].as_mut() else {
            return;
        };
        if let Err(e) = client.conn.send_upgrade(&self.cfg.host, &self.cfg.path) {
            let client = self.conns[i].take();
            self.fail(i, client, &e.to_string());
        }
    }

    fn read_handshake(&mut self, i: usize) {
        let Some(client) = self.conns[i].as_mut() else {
            return;
        };
        match client.conn.read_upgrade() {
            Ok(Progress::Waiting) => return,
            Ok(Progress::Done) => {}
            Err(e) => {
                let client = self.conns[i].take();
                return self.fail(i, client, &e.to_string());
            }
        }
        self.pending -= 1;
        self.c.connected += 1;
        if let Some(sub) = &self.cfg.subscribe {
            let check = self.cfg.check.as_ref();
            client.track.table = check::sampled(check, &mut self.c.check);
            match check.filter(|_| client.track.table.is_some()) {
                Some(c) => client.conn.out().text(c.first_message()),
                None => client.conn.out().text(sub),
            }
        }
        // Frames that came with the 101 response; the socket may hold more.
        let in_window = self.in_window;
        let Client { conn, track } = client;
        let c = &mut self.c;
        let end = conn.early_frames(self.cfg.max_frame, |f, now_ns| {
            on_frame(f, now_ns, in_window, track, c)
        });
        if let Some(end) = end {
            if self.cfg.churn.is_some() {
                self.churn_after_read(i, Some(end), false);
                return;
            }
            let client = self.conns[i].take();
            return self.end(i, client, end);
        }
        self.flush(i);
        if self.conns[i].is_some() && self.read_frames(i) {
            self.ready.push(i);
        }
    }

    /// Reads an open connection until `WouldBlock` or its budget; true when cut short.
    fn read_frames(&mut self, i: usize) -> bool {
        let Engine {
            conns,
            rbuf,
            c,
            cfg,
            in_window,
            ..
        } = self;
        let Some(Client { conn, track }) = conns[i].as_mut() else {
            return false;
        };
        let in_window = *in_window;
        let counters = &mut *c;
        let r = conn.read_frames(rbuf, cfg.max_frame, move |f, now_ns| {
            on_frame(f, now_ns, in_window, track, counters)
        });
        if in_window {
            c.bytes += r.bytes;
        }
        if let Some(code) = r.answered {
            // Our close is answered; the server's EOF is awaited.
            *c.close_codes.entry(code).or_default() += 1;
        }
        if cfg.churn.is_some() {
            return self.churn_after_read(i, r.end, r.more);
        }
        if let Some(end) = r.end {
            let client = self.conns[i].take();
            self.end(i, client, end);
            return false;
        }
        r.more
    }

    /// An open connection ended: record why, answer a close, drop it.
    fn end(&mut self, i: usize, client: Option<Client>, why: End) {
        let Some(mut client) = client else { return };
        self.c.disconnects += 1;
        if let Some(tc) = client.track.table.as_deref_mut() {
            tc.abandon(&mut self.c.check);
        }
        let reply = match why {
            End::CloseFrame(code) => {
                let code = code.unwrap_or(1005);
                *self.c.close_codes.entry(code).or_default() += 1;
                // Echo the code, as RFC 6455 section 5.5.1 asks; 1005 must not be sent.
                Some(if code == 1005 { 1000 } else { code })
            }
            End::Abrupt => {
                *self.c.close_codes.entry(1006).or_default() += 1;
                None
            }
            End::Protocol(e) => {
                self.c.protocol_errors += 1;
                self.c.last_protocol_error = Some(e.to_string());
                Some(e.close_code())
            }
        };
        if let Some(code) = reply {
            client.conn.out().close(code);
            let _ = client.conn.flush();
        }
        self.per_client[i] += client.track.window_msgs;
        client.conn.close(self.poll.registry(), false);
    }

    fn report(mut self, ramp_s: f64, window: Window) -> Report {
        self.abandon_table_checks();
        // Close what is still open, politely but without waiting for the answer.
        for i in 0..self.conns.len() {
            if let Some(mut client) = self.conns[i].take() {
                if client.conn.is_open() {
                    client.conn.out().close(1000);
                    let _ = client.conn.flush();
                }
                self.per_client[i] += client.track.window_msgs;
            }
        }
        let fair: Vec<u64> = (0..self.per_client.len())
            .filter(|&i| self.fair[i])
            .map(|i| self.per_client[i])
            .collect();
        let h = &self.c.hist;
        let churn = self.cfg.churn.map(|_| ChurnReport {
            cycles: self.c.cycles,
            cycles_total: self.c.cycles_total,
            errors: std::mem::take(&mut self.c.churn_errors),
            errors_in_window: self.c.churn_errors_in_window,
            cycle_latency: summary(&self.c.cycle_hist),
            cycles_by_second: window.cycle_intervals.clone(),
        });
        let mut others: Vec<(String, u64)> = self
            .c
            .others
            .iter()
            .map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), *v))
            .collect();
        others.sort();
        Report {
            clients: self.cfg.clients,
            connected: self.c.connected,
            connect_failures: self.c.connect_errors.values().sum(),
            connect_errors: std::mem::take(&mut self.c.connect_errors),
            ramp_s,
            warmup_s: self.cfg.warmup.as_secs_f64(),
            duration_s: window.elapsed_s,
            messages: self.c.messages,
            bytes: self.c.bytes,
            latency: summary(h),
            negative_latency: self.c.negative,
            min_per_client: fair.iter().copied().min().unwrap_or(0),
            max_per_client: fair.iter().copied().max().unwrap_or(0),
            fairness_clients: fair.len() as u64,
            lost: self.c.seq.lost,
            gaps: self.c.seq.gaps,
            duplicated: self.c.seq.duplicated,
            out_of_order: self.c.seq.out_of_order,
            bad_results: self.c.bad_results,
            other_messages: others.into_iter().collect(),
            disconnects: self.c.disconnects,
            close_codes: std::mem::take(&mut self.c.close_codes),
            protocol_errors: self.c.protocol_errors,
            last_protocol_error: self.c.last_protocol_error.take(),
            intervals: window.intervals,
            server: window.server,
            loadgen_cpu_ns: window.loadgen_cpu_ns,
            churn,
            table_check: self
                .cfg
                .check
                .is_some()
                .then(|| self.c.check.report.clone()),
        }
    }
}
