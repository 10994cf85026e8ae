//! The load generator proper: one thread, one mio `Poll`, every connection in a `Vec`
//! indexed by its token. Connections open at a fixed rate, complete the WebSocket
//! handshake without blocking, subscribe, and are then read edge-triggered until
//! `WouldBlock` through one shared read buffer, so 10,000 idle connections cost only their
//! sockets and a partial frame each.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use crate::msg::{self, Kind};
use crate::rng::Rng;
use crate::seq::{Seq, Tally};
use crate::stats::Histogram;
use crate::sys::{self, wall_ns};
use crate::ws::{self, Frame, Parsed, WsError};

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    pub addr: SocketAddr,
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

/// Churn figures for the report.
#[derive(Debug, Default)]
pub struct ChurnReport {
    /// Cycles whose `subscribed` arrived in the window.
    pub cycles: u64,
    /// The same over the whole run.
    pub cycles_total: u64,
    /// Failed cycles by reason, whole run.
    pub errors: BTreeMap<String, u64>,
    /// Failed cycles in the window.
    pub errors_in_window: u64,
    /// `connect` to `subscribed` of the window's cycles.
    pub cycle_latency: LatencySummary,
    /// Cycles in each whole second of the window.
    pub cycles_by_second: Vec<u64>,
}

/// Everything measured, ready for the table and the JSON line.
#[derive(Debug, Default)]
pub struct Report {
    pub clients: usize,
    pub connected: u64,
    pub connect_failures: u64,
    pub connect_errors: BTreeMap<String, u64>,
    pub ramp_s: f64,
    pub warmup_s: f64,
    pub duration_s: f64,
    /// Results received in the window.
    pub messages: u64,
    /// Wire bytes read in the window (frame headers included).
    pub bytes: u64,
    pub latency: LatencySummary,
    /// Results whose timestamp was after the receive time (clock trouble), counted as 0.
    pub negative_latency: u64,
    pub min_per_client: u64,
    pub max_per_client: u64,
    /// Connections counted for fairness: open when the window started.
    pub fairness_clients: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub bad_results: u64,
    /// Non-result messages by `type`, whole run.
    pub other_messages: BTreeMap<String, u64>,
    pub disconnects: u64,
    pub close_codes: BTreeMap<u16, u64>,
    pub protocol_errors: u64,
    pub last_protocol_error: Option<String>,
    /// Results per second in each whole second of the window.
    pub intervals: Vec<u64>,
    pub server: Option<ServerUsage>,
    pub loadgen_cpu_ns: u64,
    pub churn: Option<ChurnReport>,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct LatencySummary {
    pub count: u64,
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    pub max_ns: u64,
    pub min_ns: u64,
}

#[derive(Debug, Default, Clone)]
pub struct ServerUsage {
    pub pid: u32,
    pub cpu_ns: Option<u64>,
    pub cpu_source: &'static str,
    pub rss_kib_start: Option<u64>,
    pub rss_kib_max: Option<u64>,
    pub rss_kib_end: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Connecting,
    Handshaking,
    Open,
    /// Churn: our close frame is sent; waiting for the server to close the connection.
    Closing,
}

struct Conn {
    sock: TcpStream,
    state: State,
    /// Bytes of an incomplete frame (or HTTP response) carried to the next read.
    partial: Vec<u8>,
    /// Bytes to send: the request, the subscribe message, pongs, a close.
    out: Vec<u8>,
    accept: String,
    opened: Instant,
    seq: Seq,
    window_msgs: u64,
    /// Inside a fragmented message: its frames are skipped, the message counted once.
    fragmented: bool,
    /// Masks and the handshake nonce.
    rng: Rng,
    /// A `subscribed` reply arrived.
    subscribed: bool,
    /// Churn: when our close frame went out.
    closing_since: Instant,
    /// Churn: the server's close frame arrived; what follows is discarded until EOF.
    server_closed: bool,
}

impl Conn {
    /// A connection in `state` over `sock`; `seed` seeds its masks and nonce.
    fn new(sock: TcpStream, state: State, seed: u64) -> Conn {
        Conn {
            sock,
            state,
            partial: Vec::new(),
            out: Vec::new(),
            accept: String::new(),
            opened: Instant::now(),
            seq: Seq::default(),
            window_msgs: 0,
            fragmented: false,
            rng: Rng::new(seed),
            subscribed: false,
            closing_since: Instant::now(),
            server_closed: false,
        }
    }

    fn mask(&mut self) -> [u8; 4] {
        self.rng.mask()
    }

    /// Writes what is queued until done or `WouldBlock`.
    fn flush(&mut self) -> io::Result<()> {
        ws::flush(&mut self.sock, &mut self.out)
    }
}

/// Why an open connection ended.
#[derive(Debug)]
enum End {
    /// The server sent a close frame (code, or none).
    CloseFrame(Option<u16>),
    /// EOF or a socket error without a close frame: recorded as 1006.
    Abrupt,
    /// The server broke the protocol; we close with the matching code.
    Protocol(WsError),
}

/// Counters updated from the hot path.
#[derive(Default)]
struct Counters {
    messages: u64,
    bytes: u64,
    hist: Histogram,
    negative: u64,
    seq: Tally,
    bad_results: u64,
    others: HashMap<Vec<u8>, u64>,
    disconnects: u64,
    close_codes: BTreeMap<u16, u64>,
    protocol_errors: u64,
    last_protocol_error: Option<String>,
    connected: u64,
    connect_errors: BTreeMap<String, u64>,
    cycles: u64,
    cycles_total: u64,
    cycle_hist: Histogram,
    churn_errors: BTreeMap<String, u64>,
    churn_errors_in_window: u64,
}

/// Reads one shared buffer's worth per `read` call; 256 KiB keeps syscalls per message low
/// when the server batches.
const READ_CHUNK: usize = 256 * 1024;
/// Reads per connection per turn before others get theirs; edge-triggered, so a connection
/// cut short is queued to be read again.
const READ_BUDGET: usize = 8;
const TICK: Duration = Duration::from_millis(100);

/// Handles every complete frame at the start of `buf`. Returns the bytes consumed, the
/// size the read buffer must reach for the next frame, and the end of the connection if
/// a frame ended it.
#[inline]
fn on_frames(
    conn: &mut Conn,
    buf: &[u8],
    now_ns: i64,
    in_window: bool,
    c: &mut Counters,
    max_frame: usize,
) -> (usize, usize, Option<End>) {
    let mut pos = 0;
    loop {
        let (frame, used) = match ws::parse(&buf[pos..], max_frame) {
            Ok(Parsed::Frame(f, used)) => (f, used),
            Ok(Parsed::Incomplete { need }) => return (pos, need, None),
            Err(e) => return (pos, 0, Some(End::Protocol(e))),
        };
        pos += used;
        match frame {
            Frame::Text { fin: true, payload } if !conn.fragmented => {
                match msg::classify(payload) {
                    Kind::Result { seq, ts_ns } => {
                        // seq continuity spans the whole run; counts only the window.
                        c.seq.add(conn.seq.observe(seq));
                        if in_window {
                            c.messages += 1;
                            conn.window_msgs += 1;
                            let lat = now_ns - ts_ns;
                            if lat < 0 {
                                c.negative += 1;
                            }
                            c.hist.record(lat.max(0) as u64);
                        }
                    }
                    Kind::BadResult => c.bad_results += 1,
                    Kind::Other(t) => {
                        if t == b"subscribed" {
                            conn.subscribed = true;
                        }
                        count_other(c, t)
                    }
                    Kind::Untyped => count_other(c, b"(untyped)"),
                }
            }
            Frame::Text { fin: false, .. } | Frame::Binary { fin: false, .. }
                if !conn.fragmented =>
            {
                conn.fragmented = true;
            }
            Frame::Continuation { fin, .. } if conn.fragmented => {
                if fin {
                    conn.fragmented = false;
                    count_other(c, b"(fragmented)");
                }
            }
            Frame::Text { .. } | Frame::Binary { .. } | Frame::Continuation { .. } => {
                let why = if conn.fragmented {
                    "new message inside a fragmented one"
                } else {
                    "continuation without a message"
                };
                return (pos, 0, Some(End::Protocol(WsError::Protocol(why))));
            }
            Frame::Ping(payload) => {
                let mask = conn.mask();
                ws::write_frame(&mut conn.out, ws::OP_PONG, payload, mask);
            }
            Frame::Pong(_) => count_other(c, b"(pong frame)"),
            Frame::Close(code) => return (pos, 0, Some(End::CloseFrame(code))),
        }
    }
}

#[cold]
fn count_other(c: &mut Counters, t: &[u8]) {
    match c.others.get_mut(t) {
        Some(n) => *n += 1,
        None => {
            c.others.insert(t.to_vec(), 1);
        }
    }
}

/// What wakes a churn slot.
#[derive(Debug)]
enum SlotEvent<'a> {
    /// Its socket was read (or written); `end` when the connection ended.
    Read(Option<&'a End>),
    /// The periodic check: how long the cycle and the close have been going on.
    Tick {
        cycle_age: Duration,
        closing_age: Duration,
    },
}

/// What a churn slot does next.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    Wait,
    /// `subscribed` arrived: count the cycle and send our close frame.
    Leave,
    /// The connection is over: count a cycle if `subscribed` came with its end, drop the
    /// socket (with a reset when the server has not closed it, so no TIME_WAIT stays
    /// here), then start again; after an error only at the next tick, so that a refusing
    /// server does not make the slots spin.
    Finish {
        cycle: bool,
        error: Option<String>,
        reset: bool,
    },
}

/// A churn slot's transitions, apart from sockets so that they can be tested alone.
/// Connect and handshake failures other than timeouts take the connect-failure path.
fn churn_step(state: State, subscribed: bool, ev: SlotEvent<'_>, churn: &Churn) -> Step {
    let finish = |cycle, error: Option<String>, reset| Step::Finish {
        cycle,
        error,
        reset,
    };
    match ev {
        SlotEvent::Read(None) if state == State::Open && subscribed => Step::Leave,
        SlotEvent::Read(None) => Step::Wait,
        SlotEvent::Read(Some(end)) => {
            // Only an EOF or a reset means the server has closed its side.
            let reset = !matches!(end, End::Abrupt);
            match (state, end) {
                // Answered close frames are consumed by the read loop; EOF ends the cycle.
                (State::Closing, End::CloseFrame(_)) => Step::Wait,
                (State::Closing, End::Abrupt) => finish(false, None, false),
                (_, End::Protocol(e)) => finish(
                    state == State::Open && subscribed,
                    Some(e.to_string()),
                    reset,
                ),
                (State::Open, _) if subscribed => finish(true, None, reset),
                (_, End::CloseFrame(code)) => finish(
                    false,
                    Some(format!(
                        "closed by the server ({}) before subscribed",
                        code.unwrap_or(1005)
                    )),
                    reset,
                ),
                (_, End::Abrupt) => finish(
                    false,
                    Some("connection ended before subscribed".into()),
                    reset,
                ),
            }
        }
        SlotEvent::Tick {
            cycle_age,
            closing_age,
        } => match state {
            State::Closing if closing_age > churn.close_wait => finish(
                false,
                Some(format!(
                    "server did not close within {:?} of our close",
                    churn.close_wait
                )),
                true,
            ),
            State::Closing => Step::Wait,
            _ if cycle_age <= churn.cycle_timeout => Step::Wait,
            State::Connecting => finish(false, Some("connect timed out".into()), true),
            State::Handshaking => finish(false, Some("handshake timed out".into()), true),
            State::Open => finish(
                false,
                Some(format!(
                    "no subscribed within {:?} of connect",
                    churn.cycle_timeout
                )),
                true,
            ),
        },
    }
}

enum Phase {
    Ramp,
    Warmup(Instant),
    Measure(Instant),
}

pub struct Engine {
    cfg: Config,
    poll: Poll,
    conns: Vec<Option<Conn>>,
    /// Messages in the window of connections already gone.
    per_client: Vec<u64>,
    /// Open when the window started: the connections fairness is judged on.
    fair: Vec<bool>,
    rbuf: Vec<u8>,
    c: Counters,
    in_window: bool,
    pending: usize,
    ready: Vec<usize>,
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
            rbuf: vec![0; READ_CHUNK],
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
        let mut phase = Phase::Ramp;
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
                if let Phase::Measure(_) = phase {
                    window.sample_server();
                }
            }
            if let Phase::Measure(_) = phase {
                window.count_interval(&self, now);
            }
            match phase {
                Phase::Ramp
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
                        phase = Phase::Warmup(now + self.cfg.warmup);
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
                    phase = Phase::Warmup(now + self.cfg.warmup);
                    continue;
                }
                Phase::Warmup(end) if now >= end => {
                    window = Window::start(&mut self, now);
                    phase = Phase::Measure(now + self.cfg.duration);
                    continue;
                }
                Phase::Measure(end) if now >= end => {
                    window.finish(&self, now);
                    break;
                }
                _ => {}
            }

            let mut deadline = next_tick;
            match phase {
                Phase::Ramp if next_open < self.cfg.clients => {
                    deadline = deadline.min(start + ramp_interval.mul_f64(next_open as f64));
                }
                Phase::Warmup(end) => deadline = deadline.min(end),
                Phase::Measure(end) => {
                    deadline = deadline.min(end);
                    if let Some(next) = window.next_interval {
                        deadline = deadline.min(next);
                    }
                }
                Phase::Ramp => {}
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
                    .is_some_and(|c| matches!(c.state, State::Open | State::Closing))
                    && self.read_frames(i)
                {
                    self.ready.push(i);
                }
            }
        }
        Ok(self.report(ramp_s, window))
    }

    fn open(&mut self, i: usize) {
        let sock = match TcpStream::connect(self.cfg.addr) {
            Ok(s) => s,
            Err(e) => return self.fail(i, None, &e.to_string()),
        };
        let seed = self
            .request_seed
            .wrapping_add(i as u64)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut conn = Conn::new(sock, State::Connecting, seed);
        if let Err(e) = self.poll.registry().register(
            &mut conn.sock,
            Token(i),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            return self.fail(i, None, &e.to_string());
        }
        self.conns[i] = Some(conn);
        self.pending += 1;
    }

    /// A connection that never got open: counted by reason, socket dropped.
    fn fail(&mut self, i: usize, conn: Option<Conn>, why: &str) {
        let phase = match conn.as_ref().map(|c| c.state) {
            Some(State::Handshaking) => "handshake",
            _ => "connect",
        };
        if let Some(mut conn) = conn {
            let _ = self.poll.registry().deregister(&mut conn.sock);
            self.pending -= 1;
            if self.cfg.churn.is_some() {
                // Closing first would leave this side in TIME_WAIT.
                sys::set_linger_zero(&conn.sock);
            }
        }
        *self.c.connect_errors.entry(why.to_string()).or_default() += 1;
        self.conns[i] = None;
        if self.cfg.churn.is_some() {
            self.churn_error(format!("{phase}: {why}"));
            self.restart.push(i);
        }
    }

    fn churn_error(&mut self, why: String) {
        *self.c.churn_errors.entry(why).or_default() += 1;
        if self.in_window {
            self.c.churn_errors_in_window += 1;
        }
    }

    /// Restarts the slots that failed, and ends the cycles and closes that took too long.
    fn churn_tick(&mut self, now: Instant) {
        let Some(churn) = self.cfg.churn else { return };
        for i in std::mem::take(&mut self.restart) {
            if self.conns[i].is_none() {
                self.open(i);
            }
        }
        for i in 0..self.conns.len() {
            let Some(conn) = self.conns[i].as_ref() else {
                continue;
            };
            let ev = SlotEvent::Tick {
                cycle_age: now.saturating_duration_since(conn.opened),
                closing_age: now.saturating_duration_since(conn.closing_since),
            };
            let state = conn.state;
            match churn_step(state, conn.subscribed, ev, &churn) {
                Step::Finish {
                    error: Some(why), ..
                } if matches!(state, State::Connecting | State::Handshaking) => {
                    let conn = self.conns[i].take();
                    self.fail(i, conn, &why);
                }
                step @ Step::Finish { .. } => self.churn_finish(i, step),
                Step::Wait | Step::Leave => {}
            }
        }
    }

    /// After a read of a churn slot: records how it ended, if it did, and moves it on.
    /// Returns true when the socket may hold more to read.
    fn churn_after_read(&mut self, i: usize, end: Option<End>, more: bool) -> bool {
        let Some(churn) = self.cfg.churn else {
            return false;
        };
        let Some(conn) = self.conns[i].as_ref() else {
            return false;
        };
        let (state, subscribed, server_closed) = (conn.state, conn.subscribed, conn.server_closed);
        match &end {
            Some(End::CloseFrame(code)) => {
                *self.c.close_codes.entry(code.unwrap_or(1005)).or_default() += 1;
            }
            Some(End::Abrupt) if !server_closed => {
                *self.c.close_codes.entry(1006).or_default() += 1;
            }
            Some(End::Protocol(e)) => {
                self.c.protocol_errors += 1;
                self.c.last_protocol_error = Some(e.to_string());
            }
            _ => {}
        }
        if end.is_some() && state == State::Open {
            self.c.disconnects += 1;
        }
        match churn_step(state, subscribed, SlotEvent::Read(end.as_ref()), &churn) {
            Step::Wait => more,
            Step::Leave => {
                let opened = conn.opened;
                self.count_cycle(opened);
                let Some(conn) = self.conns[i].as_mut() else {
                    return false;
                };
                let mask = conn.mask();
                ws::write_close(&mut conn.out, 1000, mask);
                let _ = conn.flush();
                if churn.reset {
                    let conn = self.conns[i].take();
                    if let Some(conn) = conn {
                        self.drop_sock(conn, true);
                    }
                    self.open(i);
                    return false;
                }
                conn.state = State::Closing;
                conn.closing_since = Instant::now();
                // Results may still precede the server's close frame; keep reading.
                true
            }
            step @ Step::Finish { .. } => {
                self.churn_finish(i, step);
                false
            }
        }
    }

    fn count_cycle(&mut self, opened: Instant) {
        self.c.cycles_total += 1;
        if self.in_window {
            self.c.cycles += 1;
            self.c.cycle_hist.record(opened.elapsed().as_nanos() as u64);
        }
    }

    fn churn_finish(&mut self, i: usize, step: Step) {
        let Step::Finish {
            cycle,
            error,
            reset,
        } = step
        else {
            return;
        };
        let Some(conn) = self.conns[i].take() else {
            return;
        };
        if cycle {
            self.count_cycle(conn.opened);
        }
        if matches!(conn.state, State::Connecting | State::Handshaking) {
            self.pending -= 1;
        }
        self.drop_sock(conn, reset);
        match error {
            Some(why) => {
                self.churn_error(why);
                self.restart.push(i);
            }
            None => self.open(i),
        }
    }

    fn drop_sock(&mut self, mut conn: Conn, reset: bool) {
        let _ = self.poll.registry().deregister(&mut conn.sock);
        if reset {
            sys::set_linger_zero(&conn.sock);
        }
    }

    fn expire_handshakes(&mut self, now: Instant) {
        for i in 0..self.conns.len() {
            let late = self.conns[i].as_ref().is_some_and(|c| {
                c.state != State::Open && now.duration_since(c.opened) > self.cfg.connect_timeout
            });
            if late {
                let conn = self.conns[i].take();
                let why = match conn.as_ref().map(|c| c.state) {
                    Some(State::Connecting) => "connect timed out",
                    _ => "handshake timed out",
                };
                self.fail(i, conn, why);
            }
        }
    }

    fn on_event(&mut self, i: usize, readable: bool, writable: bool) {
        let Some(state) = self.conns.get(i).and_then(|c| c.as_ref()).map(|c| c.state) else {
            return;
        };
        match state {
            State::Connecting => self.on_connect(i),
            State::Handshaking => {
                if writable {
                    self.flush(i);
                }
                if readable {
                    self.read_handshake(i);
                }
            }
            State::Open | State::Closing => {
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
        let Some(conn) = self.conns[i].as_mut() else {
            return;
        };
        if let Err(e) = conn.flush() {
            let state = conn.state;
            if matches!(state, State::Open | State::Closing) {
                if self.cfg.churn.is_some() {
                    self.churn_after_read(i, Some(End::Abrupt), false);
                    return;
                }
                let conn = self.conns[i].take();
                self.end(i, conn, End::Abrupt);
            } else {
                let conn = self.conns[i].take();
                self.fail(i, conn, &e.to_string());
            }
        }
    }

    fn on_connect(&mut self, i: usize) {
        let Some(conn) = self.conns[i].as_mut() else {
            return;
        };
        let err = match conn.sock.take_error() {
            Ok(Some(e)) | Err(e) => Some(e),
            Ok(None) => match conn.sock.peer_addr() {
                Ok(_) => None,
                // Not connected yet: a spurious wake-up; wait for the next event.
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => Some(e),
            },
        };
        if let Some(e) = err {
            let conn = self.conns[i].take();
            return self.fail(i, conn, &e.to_string());
        }
        // A different nonce per connection; the server checks only its form.
        let key = ws::client_key(conn.rng.nonce());
        conn.accept = ws::accept_key(key.as_bytes());
        let req = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 13\r\n\r\n",
            self.cfg.path, self.cfg.host, key
        );
        conn.out.extend_from_slice(req.as_bytes());
        conn.state = State::Handshaking;
        self.flush(i);
    }

    fn read_handshake(&mut self, i: usize) {
        let Some(conn) = self.conns[i].as_mut() else {
            return;
        };
        let failure = match ws::read_handshake(&mut conn.sock, &mut conn.partial, &conn.accept) {
            Ok(false) => return,
            Ok(true) => None,
            Err(why) => Some(why),
        };
        if let Some(why) = failure {
            let conn = self.conns[i].take();
            return self.fail(i, conn, &why);
        }
        conn.state = State::Open;
        self.pending -= 1;
        self.c.connected += 1;
        if let Some(sub) = &self.cfg.subscribe {
            let mask = conn.mask();
            ws::write_frame(&mut conn.out, ws::OP_TEXT, sub, mask);
        }
        // Frames that came with the 101 response; the socket may hold more.
        let early = std::mem::take(&mut conn.partial);
        let (used, _, end) = on_frames(
            conn,
            &early,
            wall_ns(),
            self.in_window,
            &mut self.c,
            self.cfg.max_frame,
        );
        conn.partial.extend_from_slice(&early[used..]);
        if let Some(end) = end {
            if self.cfg.churn.is_some() {
                self.churn_after_read(i, Some(end), false);
                return;
            }
            let conn = self.conns[i].take();
            return self.end(i, conn, end);
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
            ..
        } = self;
        let Some(conn) = conns[i].as_mut() else {
            return false;
        };
        let mut end = None;
        let mut more = false;
        for _ in 0..READ_BUDGET {
            more = true;
            let k = conn.partial.len();
            if rbuf.len() < k + READ_CHUNK / 2 {
                rbuf.resize(k + READ_CHUNK, 0);
            }
            rbuf[..k].copy_from_slice(&conn.partial);
            conn.partial.clear();
            let n = match conn.sock.read(&mut rbuf[k..]) {
                Ok(0) => {
                    end = Some(End::Abrupt);
                    break;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    conn.partial.extend_from_slice(&rbuf[..k]);
                    more = false;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    conn.partial.extend_from_slice(&rbuf[..k]);
                    continue;
                }
                Err(_) => {
                    end = Some(End::Abrupt);
                    break;
                }
            };
            // One clock read per read call: every message in it gets the same receive time.
            let now_ns = wall_ns();
            if self.in_window {
                c.bytes += n as u64;
            }
            let filled = k + n;
            if conn.server_closed {
                // After the server's close frame only its EOF matters.
                continue;
            }
            let (used, need, e) = on_frames(
                conn,
                &rbuf[..filled],
                now_ns,
                self.in_window,
                c,
                cfg.max_frame,
            );
            conn.partial.extend_from_slice(&rbuf[used..filled]);
            match e {
                Some(End::CloseFrame(code)) if conn.state == State::Closing => {
                    // Our close is answered. Wait for the server's EOF, so that the server,
                    // which then closes first, holds TIME_WAIT and not this side.
                    *c.close_codes.entry(code.unwrap_or(1005)).or_default() += 1;
                    conn.server_closed = true;
                    conn.partial.clear();
                }
                Some(e) => {
                    end = Some(e);
                    break;
                }
                None => {}
            }
            if need > rbuf.len() {
                // A frame larger than the buffer (a big snapshot): grow to hold it whole.
                rbuf.resize(need + READ_CHUNK / 2, 0);
            }
            if n < rbuf.len() - k && conn.state != State::Closing {
                // A short read emptied the socket. Linux epoll wakes an edge-triggered
                // waiter on every arrival, so the read that would only say WouldBlock can
                // be skipped: with a server writing one small frame at a time it is half
                // of all syscalls. Not while closing: a FIN that came with the last bytes
                // raises no new edge, and its EOF is what ends the cycle.
                more = false;
                break;
            }
        }
        if end.is_none() && !conn.out.is_empty() && conn.flush().is_err() {
            end = Some(End::Abrupt);
        }
        if cfg.churn.is_some() {
            return self.churn_after_read(i, end, more);
        }
        if let Some(end) = end {
            let conn = conns[i].take();
            self.end(i, conn, end);
            return false;
        }
        more
    }

    /// An open connection ended: record why, answer a close, drop it.
    fn end(&mut self, i: usize, conn: Option<Conn>, why: End) {
        let Some(mut conn) = conn else { return };
        self.c.disconnects += 1;
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
            let mask = conn.mask();
            ws::write_close(&mut conn.out, code, mask);
            let _ = conn.flush();
        }
        let _ = self.poll.registry().deregister(&mut conn.sock);
        self.per_client[i] += conn.window_msgs;
    }

    fn report(mut self, ramp_s: f64, window: Window) -> Report {
        // Close what is still open, politely but without waiting for the answer.
        for i in 0..self.conns.len() {
            if let Some(mut conn) = self.conns[i].take() {
                if conn.state == State::Open {
                    let mask = conn.mask();
                    ws::write_close(&mut conn.out, 1000, mask);
                    let _ = conn.flush();
                }
                self.per_client[i] += conn.window_msgs;
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
            duplicated: self.c.seq.duplicated,
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
        }
    }
}

fn summary(h: &Histogram) -> LatencySummary {
    LatencySummary {
        count: h.count(),
        p50_ns: h.quantile(0.5),
        p90_ns: h.quantile(0.9),
        p99_ns: h.quantile(0.99),
        p999_ns: h.quantile(0.999),
        max_ns: h.max(),
        min_ns: h.min(),
    }
}

/// The measured window: its clock, the server's and our own CPU time, RSS samples and
/// the per-second message counts.
#[derive(Default)]
struct Window {
    started: Option<Instant>,
    elapsed_s: f64,
    server_cpu: sys::CpuSample,
    server_cpu_last: sys::CpuSample,
    server: Option<ServerUsage>,
    loadgen_cpu_start: u64,
    loadgen_cpu_ns: u64,
    next_interval: Option<Instant>,
    interval_base: u64,
    intervals: Vec<u64>,
    cycle_base: u64,
    cycle_intervals: Vec<u64>,
}

impl Window {
    fn start(engine: &mut Engine, now: Instant) -> Window {
        engine.in_window = true;
        for (i, c) in engine.conns.iter().enumerate() {
            engine.fair[i] = c.as_ref().is_some_and(|c| c.state == State::Open);
        }
        let mut w = Window {
            started: Some(now),
            loadgen_cpu_start: sys::thread_cpu_ns(),
            next_interval: Some(now + Duration::from_secs(1)),
            ..Window::default()
        };
        if let Some(pid) = engine.cfg.server_pid {
            w.server_cpu = sys::server_cpu(pid);
            w.server_cpu_last = w.server_cpu;
            let rss = sys::rss_kib(pid);
            w.server = Some(ServerUsage {
                pid,
                cpu_ns: None,
                cpu_source: "",
                rss_kib_start: rss,
                rss_kib_max: rss,
                rss_kib_end: rss,
            });
        }
        w
    }

    /// RSS for its maximum, and CPU time so that a server that dies mid-window still
    /// gets the CPU it used until then.
    fn sample_server(&mut self) {
        if let Some(s) = self.server.as_mut() {
            if let Some(rss) = sys::rss_kib(s.pid) {
                s.rss_kib_max = Some(s.rss_kib_max.map_or(rss, |m| m.max(rss)));
            }
            let cpu = sys::server_cpu(s.pid);
            if cpu.sched_ns.is_some() || cpu.stat_ns.is_some() {
                self.server_cpu_last = cpu;
            }
        }
    }

    /// Closes each whole second of the window; the poll deadline includes the boundary.
    fn count_interval(&mut self, engine: &Engine, now: Instant) {
        if let Some(next) = self.next_interval
            && now >= next
        {
            self.intervals.push(engine.c.messages - self.interval_base);
            self.interval_base = engine.c.messages;
            self.cycle_intervals.push(engine.c.cycles - self.cycle_base);
            self.cycle_base = engine.c.cycles;
            self.next_interval = Some(next + Duration::from_secs(1));
        }
    }

    fn finish(&mut self, engine: &Engine, now: Instant) {
        // The last second usually ends with the window itself.
        self.count_interval(engine, now);
        if let Some(started) = self.started {
            self.elapsed_s = now.duration_since(started).as_secs_f64();
        }
        self.loadgen_cpu_ns = sys::thread_cpu_ns().saturating_sub(self.loadgen_cpu_start);
        if let Some(s) = self.server.as_mut() {
            let mut end = sys::server_cpu(s.pid);
            if end.sched_ns.is_none() && end.stat_ns.is_none() {
                // The process is gone: count up to the last sample.
                end = self.server_cpu_last;
            }
            if let Some((ns, source)) = sys::cpu_delta(self.server_cpu, end) {
                s.cpu_ns = Some(ns);
                s.cpu_source = source;
            }
            let rss = sys::rss_kib(s.pid);
            s.rss_kib_end = rss;
            if let Some(rss) = rss {
                s.rss_kib_max = Some(s.rss_kib_max.map_or(rss, |m| m.max(rss)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpListener;

    fn test_conn() -> (Conn, TcpListener) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let sock = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let conn = Conn::new(sock, State::Open, 1);
        (conn, l)
    }

    fn text(payload: &[u8], fin: bool, opcode: u8) -> Vec<u8> {
        let mut out = Vec::new();
        ws::write_server_header(&mut out, opcode, payload.len());
        if !fin {
            out[0] &= 0x7F;
        }
        out.extend_from_slice(payload);
        out
    }

    fn result(seq: u64) -> Vec<u8> {
        let body = format!(
            r#"{{"type":"result","timestamp":"2026-11-28T06:23:33.842294182Z","data":{{"seq":{seq},"symbol":"X"}}}}"#
        );
        text(body.as_bytes(), true, 1)
    }

    #[test]
    fn frames_across_reads_count_results_gaps_and_pings() {
        let (mut conn, _l) = test_conn();
        let mut c = Counters::default();
        let mut stream = Vec::new();
        for seq in [1, 2, 3, 5, 5, 6] {
            stream.extend(result(seq));
        }
        stream.extend(text(b"hb", true, 9));
        stream.extend(text(br#"{"type":"status","data":{}}"#, true, 1));
        // Fragmented message: skipped as a whole, counted once.
        stream.extend(text(br#"{"type":"res"#, false, 1));
        stream.extend(text(br#"ult"}"#, true, 0));
        stream.extend(result(7));
        let ts = 1_795_847_013_842_294_182i64;
        // Feed it in awkward pieces, carrying the unused tail as read_frames does.
        let mut carry: Vec<u8> = Vec::new();
        for piece in stream.chunks(37) {
            carry.extend_from_slice(piece);
            let (used, need, end) =
                on_frames(&mut conn, &carry, ts + 1_000_000, true, &mut c, 1 << 20);
            assert!(end.is_none());
            assert!(need > carry.len() - used || used == carry.len());
            carry.drain(..used);
        }
        assert!(carry.is_empty());
        assert_eq!(c.messages, 7);
        assert_eq!(conn.window_msgs, 7);
        assert_eq!(c.seq.lost, 1);
        assert_eq!(c.seq.duplicated, 1);
        assert_eq!(c.hist.max(), 1_000_000);
        assert_eq!(c.others.get(&b"status"[..]), Some(&1));
        assert_eq!(c.others.get(&b"(fragmented)"[..]), Some(&1));
        // The ping was answered with a masked pong carrying its payload.
        assert_eq!(&conn.out[..2], &[0x8A, 0x82]);
        let m = &conn.out[2..6];
        assert_eq!([conn.out[6] ^ m[0], conn.out[7] ^ m[1]], *b"hb");
    }

    #[test]
    fn close_and_protocol_errors_end_the_connection() {
        let (mut conn, _l) = test_conn();
        let mut c = Counters::default();
        let mut buf = result(1);
        buf.extend(text(&[0x0F, 0xA0], true, 8)); // close 4000
        buf.extend(result(2));
        let (used, _, end) = on_frames(&mut conn, &buf, 0, false, &mut c, 1 << 20);
        assert!(matches!(end, Some(End::CloseFrame(Some(4000)))));
        assert!(used < buf.len());
        // Outside the window nothing is counted, but seq continuity is kept.
        assert_eq!(c.messages, 0);
        assert_eq!(conn.seq.observe(3), crate::seq::Outcome::Gap(1));

        let (used, _, end) = on_frames(&mut conn, &text(b"x", true, 0), 0, true, &mut c, 64);
        assert!(matches!(end, Some(End::Protocol(_))));
        assert_eq!(used, 3);
        let (_, _, end) = on_frames(
            &mut conn,
            &[0x81, 127, 0xFF, 0, 0, 0, 0, 0, 0, 0],
            0,
            true,
            &mut c,
            64,
        );
        assert!(matches!(end, Some(End::Protocol(WsError::TooBig(_)))));
    }

    const CHURN: Churn = Churn {
        cycle_timeout: Duration::from_secs(5),
        close_wait: Duration::from_secs(1),
        reset: false,
    };

    fn finish(cycle: bool, error: bool, reset: bool) -> impl Fn(Step) -> bool {
        move |s| matches!(s, Step::Finish { cycle: c, error: e, reset: r } if c == cycle && e.is_some() == error && r == reset)
    }

    #[test]
    fn churn_slot_transitions() {
        let read = |state, subscribed, end: Option<End>| {
            churn_step(state, subscribed, SlotEvent::Read(end.as_ref()), &CHURN)
        };
        // Waiting for `subscribed`, then leaving once it is there.
        assert_eq!(read(State::Open, false, None), Step::Wait);
        assert_eq!(read(State::Open, true, None), Step::Leave);
        // Closing: the server's close frame is not the end, its EOF is, and then no reset.
        assert_eq!(
            read(State::Closing, true, Some(End::CloseFrame(Some(1000)))),
            Step::Wait
        );
        assert!(finish(false, false, false)(read(
            State::Closing,
            true,
            Some(End::Abrupt)
        )));
        // Ended before `subscribed`: an error; reset unless the server already closed.
        assert!(finish(false, true, false)(read(
            State::Open,
            false,
            Some(End::Abrupt)
        )));
        assert!(finish(false, true, true)(read(
            State::Open,
            false,
            Some(End::CloseFrame(Some(1001)))
        )));
        // `subscribed` and the server's close in one read: the cycle still counts.
        assert!(finish(true, false, true)(read(
            State::Open,
            true,
            Some(End::CloseFrame(None))
        )));
        assert!(finish(true, true, true)(read(
            State::Open,
            true,
            Some(End::Protocol(WsError::Protocol("x")))
        )));

        let tick = |state, cycle_ms, closing_ms| {
            churn_step(
                state,
                false,
                SlotEvent::Tick {
                    cycle_age: Duration::from_millis(cycle_ms),
                    closing_age: Duration::from_millis(closing_ms),
                },
                &CHURN,
            )
        };
        for state in [State::Connecting, State::Handshaking, State::Open] {
            assert_eq!(tick(state, 4_999, 9_999), Step::Wait);
            assert!(finish(false, true, true)(tick(state, 5_001, 0)));
        }
        assert_eq!(tick(State::Closing, 9_999, 999), Step::Wait);
        assert!(finish(false, true, true)(tick(State::Closing, 0, 1_001)));
    }

    /// Reads one masked client frame; returns its opcode.
    fn read_client_frame(s: &mut std::net::TcpStream) -> io::Result<u8> {
        let mut h = [0u8; 2];
        s.read_exact(&mut h)?;
        let len = match h[1] & 0x7F {
            126 => {
                let mut b = [0u8; 2];
                s.read_exact(&mut b)?;
                usize::from(u16::from_be_bytes(b))
            }
            n => usize::from(n),
        };
        let mut rest = vec![0u8; 4 + len];
        s.read_exact(&mut rest)?;
        Ok(h[0] & 0x0F)
    }

    /// A server that does one connection at a time: handshake, `subscribed` for the
    /// subscribe, close for close, then closes its side first. Stops after `life`.
    fn churn_server(life: Duration) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        l.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            let until = Instant::now() + life;
            while Instant::now() < until {
                let Ok((mut s, _)) = l.accept() else {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                };
                let _ = s.set_nonblocking(false);
                let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                let _ = (|| -> io::Result<()> {
                    let mut req = Vec::new();
                    let mut b = [0u8; 1];
                    while !req.ends_with(b"\r\n\r\n") {
                        s.read_exact(&mut b)?;
                        req.push(b[0]);
                    }
                    let req = String::from_utf8_lossy(&req).into_owned();
                    let key = req
                        .lines()
                        .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
                        .unwrap_or("");
                    write!(
                        s,
                        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                         Connection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                        ws::accept_key(key.as_bytes())
                    )?;
                    assert_eq!(read_client_frame(&mut s)?, ws::OP_TEXT);
                    s.write_all(&text(br#"{"type":"subscribed","data":{}}"#, true, 1))?;
                    assert_eq!(read_client_frame(&mut s)?, ws::OP_CLOSE);
                    s.write_all(&text(&1000u16.to_be_bytes(), true, 8))?;
                    s.shutdown(std::net::Shutdown::Write)?;
                    let _ = s.read(&mut b)?;
                    Ok(())
                })();
            }
        });
        addr
    }

    #[test]
    fn churn_cycles_against_a_server_that_closes_first() {
        let addr = churn_server(Duration::from_secs(2));
        let cfg = Config {
            addr,
            host: addr.to_string(),
            path: "/stream".into(),
            clients: 2,
            ramp: 1000.0,
            subscribe: Some(b"{}".to_vec()),
            warmup: Duration::ZERO,
            duration: Duration::from_millis(400),
            connect_timeout: Duration::from_secs(1),
            server_pid: None,
            max_frame: 1 << 20,
            churn: Some(CHURN),
        };
        let r = Engine::new(cfg).unwrap().run(false).unwrap();
        let c = r.churn.unwrap();
        assert!(c.cycles > 10, "only {} cycles", c.cycles);
        assert!(c.errors.is_empty(), "{:?}", c.errors);
        // The run may end between a client's close and the server's answer to it: at most
        // one cycle per client is counted without its close code.
        let closes = r.close_codes.get(&1000).copied().unwrap_or(0);
        assert!(
            (c.cycles_total.saturating_sub(2)..=c.cycles_total).contains(&closes),
            "{closes} closes for {} cycles",
            c.cycles_total
        );
        assert_eq!(r.connect_failures, 0);
    }

    #[test]
    fn garbage_never_panics() {
        let (mut conn, _l) = test_conn();
        let mut c = Counters::default();
        let mut rng = Rng::new(0x1234_5678);
        let mut buf = Vec::new();
        for round in 0..2000u32 {
            buf.clear();
            // Mostly valid-looking headers with random bytes around them.
            for _ in 0..(round % 64) {
                let x = rng.next_u64();
                buf.push(x as u8);
                if x.is_multiple_of(7) {
                    buf.extend(result(x));
                }
            }
            conn.fragmented = round.is_multiple_of(3);
            let (used, _, _) = on_frames(&mut conn, &buf, 0, true, &mut c, 4096);
            assert!(used <= buf.len());
        }
    }
}
