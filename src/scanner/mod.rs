//! The scanner thread: owns the source, numbers and stamps every result, and hands it
//! to the reactor through a channel plus a `mio::Waker`.
//!
//! It must never touch a socket or block on the reactor: commands arrive on channels,
//! results leave on a bounded channel, and one wake-up is sent per batch.

mod firehose;

use std::io;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded, select, unbounded};
use mio::Waker;
use serde::Serialize;

pub use firehose::Firehose;

use crate::config::SourceSpec;
use crate::event::{ScanEvent, ScanResult};

/// Results waiting for the reactor at most; past it the scanner waits (backpressure).
const EVENT_CHANNEL: usize = 65_536;

/// Results published in one go at most, so a late scanner catches up in slices.
const MAX_BATCH: usize = 4096;

/// Something that yields scan results on a schedule.
pub trait Source: Send {
    /// Pushes every result due by `now` onto `out` (at most `max`), and says when the
    /// next one is due.
    fn poll(&mut self, now: Instant, max: usize, out: &mut Vec<ScanResult>) -> Instant;
    /// Answers an ad-hoc request: results for these symbols now, ignoring pacing.
    fn scan(&mut self, symbols: &[String], out: &mut Vec<ScanResult>);
    /// Where the current cycle stands.
    fn progress(&self) -> Progress;
    /// Restarts the schedule at `now` after a stop, so there is no catch-up burst.
    fn restart(&mut self, now: Instant);
}

/// Cycle progress, as a source reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Progress {
    /// Cycles completed.
    pub cycle: u64,
    /// Symbols evaluated in the current cycle.
    pub scanned: u64,
    /// Symbols in the universe.
    pub total: u64,
    /// Duration of the last complete cycle.
    pub last_cycle_ms: f64,
}

/// Running or stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    /// Producing results.
    Running,
    /// Paused by `POST /stream/stop`.
    Stopped,
}

/// What the scanner is doing right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Inside a cycle.
    Scanning,
    /// Between cycles, or stopped.
    Idle,
    /// Answering an ad-hoc request.
    Adhoc,
    /// Reply to a `scan` request: it waits in the queue.
    Queued,
}

/// The scanner's part of a `status` message (the reactor adds `subscribers`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ScannerStatus {
    /// Running or stopped.
    pub state: RunState,
    /// Cycles completed.
    pub cycle: u64,
    /// Symbols evaluated in this cycle.
    pub scanned: u64,
    /// Symbols in the universe.
    pub total: u64,
    /// What it is doing.
    pub phase: Phase,
    /// Duration of the last cycle.
    pub last_cycle_ms: f64,
    /// Results published this run.
    pub results_total: u64,
    /// Ad-hoc requests waiting.
    pub adhoc_queue: usize,
}

impl ScannerStatus {
    /// The status before the scanner has said anything.
    pub fn initial() -> ScannerStatus {
        ScannerStatus {
            state: RunState::Running,
            cycle: 0,
            scanned: 0,
            total: 0,
            phase: Phase::Idle,
            last_cycle_ms: 0.0,
            results_total: 0,
            adhoc_queue: 0,
        }
    }
}

/// Control commands from the reactor.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Resume producing results.
    Start,
    /// Stop producing results (ad-hoc requests are still answered).
    Stop,
}

/// What the scanner sends the reactor.
#[derive(Debug)]
pub enum Output {
    /// A published result.
    Result(Arc<ScanEvent>),
    /// Progress or a state change.
    Status(ScannerStatus),
}

/// Why an ad-hoc request was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueError {
    /// The queue is at its limit: answer `queue_full`.
    Full,
    /// The scanner is gone.
    Gone,
}

/// The reactor's side of the scanner: its channels and its thread.
#[derive(Debug)]
pub struct ScannerHandle {
    /// Published results and statuses.
    pub events: Receiver<Output>,
    commands: Sender<Command>,
    adhoc: Sender<Vec<String>>,
    thread: Option<JoinHandle<()>>,
}

impl ScannerHandle {
    /// Sends a control command; false when the scanner is gone.
    pub fn command(&self, cmd: Command) -> bool {
        self.commands.send(cmd).is_ok()
    }

    /// Queues an ad-hoc scan; returns the queue length after it.
    pub fn queue_scan(&self, symbols: Vec<String>) -> Result<usize, QueueError> {
        match self.adhoc.try_send(symbols) {
            Ok(()) => Ok(self.adhoc.len()),
            Err(TrySendError::Full(_)) => Err(QueueError::Full),
            Err(TrySendError::Disconnected(_)) => Err(QueueError::Gone),
        }
    }

    /// Stops the thread: closes its command channels and the result channel, then joins.
    pub fn shutdown(mut self) {
        let thread = self.thread.take();
        // Dropping every channel end makes the thread's next send or receive fail.
        drop(self);
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

/// Scanner settings.
#[derive(Debug, Clone)]
pub struct ScannerOptions {
    /// Minimum time between progress statuses.
    pub progress_interval: Duration,
    /// Ad-hoc requests waiting at most.
    pub adhoc_queue: usize,
}

/// Builds the source a spec names.
pub fn source_for(spec: &SourceSpec) -> Box<dyn Source> {
    match spec {
        SourceSpec::Firehose { rate } => Box::new(Firehose::new(*rate, Instant::now())),
    }
}

/// Starts the scanner thread over `source`; it wakes the reactor through `waker`.
pub fn spawn(
    source: Box<dyn Source>,
    waker: Arc<Waker>,
    options: ScannerOptions,
) -> io::Result<ScannerHandle> {
    let (events_tx, events) = bounded(EVENT_CHANNEL);
    let (commands, commands_rx) = unbounded();
    let (adhoc, adhoc_rx) = bounded(options.adhoc_queue.max(1));
    let scanner = Scanner {
        source,
        waker,
        events: events_tx,
        commands: commands_rx,
        adhoc: adhoc_rx,
        progress_interval: options.progress_interval,
        seq: 0,
        state: RunState::Running,
        batch: Vec::new(),
    };
    let thread = std::thread::Builder::new()
        .name("scanner".into())
        .spawn(move || scanner.run())?;
    Ok(ScannerHandle {
        events,
        commands,
        adhoc,
        thread: Some(thread),
    })
}

/// The reactor has gone away; the scanner ends.
struct Disconnected;

struct Scanner {
    source: Box<dyn Source>,
    waker: Arc<Waker>,
    events: Sender<Output>,
    commands: Receiver<Command>,
    adhoc: Receiver<Vec<String>>,
    progress_interval: Duration,
    seq: u64,
    state: RunState,
    batch: Vec<ScanResult>,
}

impl Scanner {
    fn run(mut self) {
        let _ = self.run_loop();
        tracing::debug!("scanner thread ends");
    }

    fn run_loop(&mut self) -> Result<(), Disconnected> {
        let mut next_status = Instant::now();
        loop {
            let now = Instant::now();
            let mut due = now + Duration::from_secs(1);
            if self.state == RunState::Running {
                due = self.source.poll(now, MAX_BATCH, &mut self.batch);
                self.publish()?;
            }
            if now >= next_status && self.state == RunState::Running {
                self.send_status(Phase::Scanning)?;
                next_status = now + self.progress_interval;
            }
            let wait = due.min(next_status).max(now);
            select! {
                recv(self.commands) -> cmd => {
                    let cmd = cmd.map_err(|_| Disconnected)?;
                    self.apply(cmd)?;
                }
                recv(self.adhoc) -> symbols => {
                    let symbols = symbols.map_err(|_| Disconnected)?;
                    // Ad-hoc requests jump the queue: answered before the next paced batch.
                    self.send_status(Phase::Adhoc)?;
                    self.source.scan(&symbols, &mut self.batch);
                    self.publish()?;
                    self.send_status(self.idle_phase())?;
                }
                default(wait - now) => {}
            }
        }
    }

    fn idle_phase(&self) -> Phase {
        match self.state {
            RunState::Running => Phase::Scanning,
            RunState::Stopped => Phase::Idle,
        }
    }

    fn apply(&mut self, cmd: Command) -> Result<(), Disconnected> {
        match cmd {
            Command::Start if self.state == RunState::Stopped => {
                self.state = RunState::Running;
                self.source.restart(Instant::now());
            }
            Command::Stop => self.state = RunState::Stopped,
            Command::Start => {}
        }
        self.send_status(self.idle_phase())
    }

    /// Numbers, stamps and sends every result in the batch, then wakes the reactor once.
    fn publish(&mut self) -> Result<(), Disconnected> {
        if self.batch.is_empty() {
            return Ok(());
        }
        for result in self.batch.drain(..) {
            self.seq += 1;
            let event = ScanEvent::publish(&result, self.seq, SystemTime::now());
            self.events
                .send(Output::Result(Arc::new(event)))
                .map_err(|_| Disconnected)?;
        }
        self.wake()
    }

    fn send_status(&mut self, phase: Phase) -> Result<(), Disconnected> {
        let p = self.source.progress();
        let status = ScannerStatus {
            state: self.state,
            cycle: p.cycle,
            scanned: p.scanned,
            total: p.total,
            phase,
            last_cycle_ms: p.last_cycle_ms,
            results_total: self.seq,
            adhoc_queue: self.adhoc.len(),
        };
        self.events
            .send(Output::Status(status))
            .map_err(|_| Disconnected)?;
        self.wake()
    }

    fn wake(&self) -> Result<(), Disconnected> {
        // A failed wake means the reactor's poll is gone: the server is ending.
        self.waker.wake().map_err(|_| Disconnected)
    }
}
