//! The scanner thread, the producer: owns the source, numbers and stamps every result,
//! and publishes it on the bus to every edge.
//!
//! It must never touch a socket or know an edge's types: commands arrive on the bus,
//! events leave on it (bounded), one wake-up per batch, and a requester's tag comes back
//! as it went.

mod dedup;
mod firehose;
pub mod indicators;
mod jsonl;
pub mod market;
mod prior;
mod replay;
mod scans;
pub mod scanset;
mod sim;
mod spec;
pub mod ta;

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, Select, TryRecvError, never};
use serde::{Deserialize, Serialize};

pub use dedup::{Dedup, Materiality, SymbolConds};
pub use firehose::Firehose;
pub use jsonl::{JsonlFeed, parse_line};
pub use market::{Feed, MarketScanner, ScanSettings, Universe};
pub use replay::CsvReplay;
pub use scans::{MARKET_SCANS, Thresholds, evaluate};
pub use scanset::{Definition, DefinitionError, ScanSet, SymbolScans};
pub use sim::{Sim, SimOptions, ticker};
pub use spec::{SourceSpec, Speed};

use crate::alerts::{Acked, AlertStats, Alerts};
use crate::bus::local::{Disconnected, EdgeEnd, ProducerLink};
use crate::bus::{Command, Cut, Event, Tag};
use crate::event::{ScanEvent, ScanResult};
use crate::history::History;
use prior::Priors;

/// Events waiting for an edge at most; past it the scanner waits (backpressure).
/// The channel's slots are allocated and touched up front (about 90 bytes each), so this
/// is resident memory from the start: 8,192 is 0.7 MiB, several milliseconds of results
/// at the highest rates an edge delivers.
pub const EVENT_CHANNEL: usize = 8_192;

/// Start and stop commands waiting at most, beside the ad-hoc scans (which the edges
/// bound by symbols); past it the HTTP call is refused.
pub const CONTROL_COMMANDS: usize = 16;

/// How often the webhook's counters are looked at while nothing else happens.
const WEBHOOK_STATS_INTERVAL: Duration = Duration::from_millis(250);

/// Results published in one go at most, so a late scanner catches up in slices.
const MAX_BATCH: usize = 4096;

/// Something that yields scan results on a schedule: the market scanner over a feed,
/// or the firehose.
pub trait Source: Send {
    /// Pushes every result due by `now` onto `out` (at most `max`), and says when to
    /// call again.
    fn poll(&mut self, now: Instant, max: usize, out: &mut Vec<ScanResult>) -> Instant;
    /// Called instead of `poll` while stopped: take in data without producing results.
    fn idle(&mut self, now: Instant) -> Instant {
        now + Duration::from_secs(1)
    }
    /// Answers an ad-hoc request: results for these symbols now, ignoring pacing and
    /// dedup. Unknown symbols are skipped (the reactor refuses them before queueing).
    fn scan(&mut self, symbols: &[String], out: &mut Vec<ScanResult>);
    /// Where the current cycle stands.
    fn progress(&self) -> Progress;
    /// Restarts the schedule at `now` after a stop, so there is no catch-up burst.
    fn restart(&mut self, now: Instant);
    /// Appends the symbols that appeared since the last call (upper case).
    fn new_symbols(&mut self, _out: &mut Vec<Box<str>>) {}
    /// Takes the conditions `open` (results of an earlier run, kept on a bus) as open
    /// already, so they go on with `update` or `clear`, not a second `new`.
    fn restore(&mut self, _open: &[&ScanEvent]) {}
    /// A channel that has a message whenever data is waiting; taken once, at start.
    fn doorbell(&mut self) -> Option<Receiver<()>> {
        None
    }
}

/// Counts malformed input and logs it without flooding the log: the first 20 reports,
/// then those whose count is a power of two.
#[derive(Debug, Clone)]
pub(crate) struct BadInput {
    source: &'static str,
    count: Arc<AtomicU64>,
}

impl BadInput {
    pub(crate) fn new(source: &'static str) -> BadInput {
        BadInput {
            source,
            count: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Counts one bad row and maybe logs `what` (which names the file and line).
    pub(crate) fn report(&self, what: std::fmt::Arguments<'_>) {
        let n = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        if n <= 20 || n.is_power_of_two() {
            tracing::warn!(
                source = self.source,
                bad_total = n,
                "skipped bad input: {what}"
            );
        }
    }

    pub(crate) fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// Running totals a source keeps, for /metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Bars or ticks taken in.
    pub updates: u64,
    /// Symbol evaluations.
    pub evaluated: u64,
    /// Malformed input rows skipped.
    pub bad_input: u64,
}

/// Cycle progress, as a source reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Progress {
    /// Cycles completed.
    pub cycle: u64,
    /// Symbols visited in the current cycle (all of them once it is over).
    pub scanned: u64,
    /// Symbols in the universe.
    pub total: u64,
    /// Duration of the last complete cycle.
    pub last_cycle_ms: f64,
    /// A cycle is under way.
    pub scanning: bool,
    /// Running totals.
    pub counters: Counters,
}

/// Running or stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    /// Producing results.
    Running,
    /// Paused by `POST /stream/stop`.
    Stopped,
}

/// What the scanner is doing right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Inside a cycle.
    Scanning,
    /// Between cycles, or stopped.
    Idle,
    /// Answering an ad-hoc request.
    Adhoc,
}

/// The scanner's part of a `status` message (the reactor adds `subscribers`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ScannerStatus {
    /// Running or stopped.
    pub state: RunState,
    /// Cycles completed.
    pub cycle: u64,
    /// Symbols visited in this cycle (all of them once it is over).
    pub scanned: u64,
    /// Symbols in the universe.
    pub total: u64,
    /// What it is doing (edges show it as the status's `phase`).
    #[serde(skip)]
    pub phase: Phase,
    /// Duration of the last cycle.
    pub last_cycle_ms: f64,
    /// Results published this run.
    pub results_total: u64,
    /// Symbols in ad-hoc requests waiting.
    pub adhoc_queue: usize,
    /// Running totals, for /metrics only.
    #[serde(skip)]
    pub counters: Counters,
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
            counters: Counters::default(),
        }
    }
}

/// The scanner thread, to join once the edges have let go of the bus.
#[derive(Debug)]
pub struct ProducerThread(JoinHandle<()>);

impl ProducerThread {
    /// Waits for the thread, which ends when the edges' ends of the bus are dropped.
    pub fn join(self) {
        let _ = self.0.join();
    }
}

/// Scanner settings.
#[derive(Debug, Clone)]
pub struct ScannerOptions {
    /// Minimum time between progress statuses.
    pub progress_interval: Duration,
    /// The history kept for edges that attach later: results, and this run's epoch.
    pub history: History,
    /// The symbols known before the thread starts.
    pub symbols: Vec<Box<str>>,
}

/// Builds the source a spec names, scanning as `settings` say.
pub fn source_for(spec: &SourceSpec, settings: &SourceSettings) -> io::Result<Box<dyn Source>> {
    let now = Instant::now();
    let scan = settings.scan.clone();
    // The config compiled every definition when it loaded; this only says so again.
    let bad = |e: scanset::DefinitionError| io::Error::new(io::ErrorKind::InvalidInput, e);
    Ok(match spec {
        SourceSpec::Firehose { rate } => Box::new(Firehose::new(*rate, now)),
        SourceSpec::Sim => {
            Box::new(MarketScanner::try_new(Sim::new(settings.sim, now), scan, now).map_err(bad)?)
        }
        SourceSpec::Csv { path } => {
            let feed = CsvReplay::open(path, settings.replay_speed, now)?;
            Box::new(MarketScanner::try_new(feed, scan, now).map_err(bad)?)
        }
        SourceSpec::Jsonl { path } => {
            let feed = JsonlFeed::open(path, settings.jsonl_follow)?;
            Box::new(MarketScanner::try_new(feed, scan, now).map_err(bad)?)
        }
    })
}

/// What building a source needs beyond its spec.
#[derive(Debug, Clone)]
pub struct SourceSettings {
    /// Indicators, thresholds, dedup and pacing.
    pub scan: ScanSettings,
    /// The simulator.
    pub sim: SimOptions,
    /// CSV replay speed.
    pub replay_speed: Speed,
    /// Keep reading a JSONL file as it grows.
    pub jsonl_follow: bool,
}

/// Starts the scanner thread over `source`, running `alerts` on what it publishes, and
/// publishing on `bus`.
pub fn spawn(
    mut source: Box<dyn Source>,
    alerts: Alerts,
    bus: ProducerLink,
    options: ScannerOptions,
) -> io::Result<ProducerThread> {
    let doorbell = source.doorbell();
    // An earlier run's open conditions (a bus keeps them): go on from them.
    let open: Vec<&ScanEvent> = options.history.active().map(|e| &**e).collect();
    source.restore(&open);
    let mut priors = Priors::default();
    for ev in &open {
        priors.seed(ev);
    }
    let seq = options.history.head();
    let scanner = Scanner {
        source,
        alerts,
        alert_stats: AlertStats::default(),
        history: options.history,
        universe: options.symbols,
        last_status: ScannerStatus::initial(),
        bus,
        doorbell,
        throttle: StatusThrottle::new(options.progress_interval),
        seq,
        priors,
        state: RunState::Running,
        batch: Vec::new(),
        names: Vec::new(),
    };
    let thread = std::thread::Builder::new()
        .name("scanner".into())
        .spawn(move || scanner.run())?;
    Ok(ProducerThread(thread))
}

/// Decides when a progress status is due: at the end of every cycle, and during a cycle
/// at most once per interval. Between cycles it says nothing.
#[derive(Debug, Clone)]
pub struct StatusThrottle {
    interval: Duration,
    next: Option<Instant>,
    last_cycle: u64,
}

impl StatusThrottle {
    /// A throttle that allows one mid-cycle status per `interval`.
    pub fn new(interval: Duration) -> StatusThrottle {
        StatusThrottle {
            interval,
            next: None,
            last_cycle: 0,
        }
    }

    /// The phase to report now, if a status is due.
    pub fn check(&mut self, now: Instant, p: &Progress) -> Option<Phase> {
        if p.cycle != self.last_cycle {
            self.last_cycle = p.cycle;
            self.next = Some(now + self.interval);
            return Some(if p.scanning {
                Phase::Scanning
            } else {
                Phase::Idle
            });
        }
        if !p.scanning {
            return None;
        }
        match self.next {
            Some(next) if now < next => None,
            _ => {
                self.next = Some(now + self.interval);
                Some(Phase::Scanning)
            }
        }
    }

    /// When `check` may next say something, during a cycle.
    pub fn next_due(&self, p: &Progress) -> Option<Instant> {
        if p.scanning { self.next } else { None }
    }
}

struct Scanner {
    source: Box<dyn Source>,
    /// Rules, throttles, the authoritative history, the journal and the webhook.
    alerts: Alerts,
    /// The counters the edges were last sent.
    alert_stats: AlertStats,
    /// What a late edge gets in its cut: the results, the symbols and the last status.
    history: History,
    universe: Vec<Box<str>>,
    last_status: ScannerStatus,
    bus: ProducerLink,
    doorbell: Option<Receiver<()>>,
    throttle: StatusThrottle,
    seq: u64,
    /// What each `update` replaces, for subscriptions it leaves.
    priors: Priors,
    state: RunState,
    batch: Vec<ScanResult>,
    names: Vec<Box<str>>,
}

impl Scanner {
    fn run(mut self) {
        // A panic in a source or a scan must not pass silently: the reactor goes on
        // serving history and reports the scanner as failed.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run_loop()));
        match outcome {
            Ok(_) => tracing::debug!("scanner thread ends"),
            Err(payload) => {
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic without a message".to_owned());
                tracing::error!(%message, "the scanner thread panicked");
                let _ = self.send(Event::Failed(message.into()));
                let _ = self.wake();
            }
        }
    }

    fn run_loop(&mut self) -> Result<(), Disconnected> {
        let mut doorbell = self.doorbell.take().unwrap_or_else(never);
        let mut attach_rx = self.bus.attach.clone();
        loop {
            // Commands first, in order: an ad-hoc scan is served before the next slice of a
            // cycle.
            loop {
                match self.bus.commands.try_recv() {
                    Ok(cmd) => self.apply(cmd)?,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return Err(Disconnected),
                }
            }
            let now = Instant::now();
            let due = match self.state {
                RunState::Running => {
                    let due = self.source.poll(now, MAX_BATCH, &mut self.batch);
                    self.publish()?;
                    due
                }
                RunState::Stopped => self.source.idle(now),
            };
            self.announce()?;
            // The webhook's worker counts on its own thread: pass its counters on.
            self.send_alert_stats()?;
            let progress = self.source.progress();
            if self.state == RunState::Running {
                if let Some(phase) = self.throttle.check(now, &progress) {
                    self.send_status(phase)?;
                }
            }
            // A stopped scanner sends no progress, so only a running one wakes for it.
            let progress_due = match self.state {
                RunState::Running => self.throttle.next_due(&progress),
                RunState::Stopped => None,
            };
            let mut wake = progress_due.map_or(due, |t| t.min(due));
            if self.alerts.webhook_stats().is_some() {
                wake = wake.min(now + WEBHOOK_STATS_INTERVAL);
            }
            let mut select = Select::new();
            // Commands are taken at the top of the loop; this only wakes for them.
            select.recv(&self.bus.commands);
            let attach = select.recv(&attach_rx);
            let bell = select.recv(&doorbell);
            let Ok(op) = select.ready_timeout(wake.saturating_duration_since(now)) else {
                continue;
            };
            if op == attach {
                match attach_rx.try_recv() {
                    Ok(edge) => self.attach(edge),
                    // Nothing can attach any more; a disconnected channel is always ready.
                    Err(TryRecvError::Disconnected) => attach_rx = never(),
                    Err(TryRecvError::Empty) => {}
                }
            } else if op == bell {
                // Drain the ring: the data itself is read by the next poll.
                loop {
                    match doorbell.try_recv() {
                        Ok(()) => {}
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Disconnected) => {
                            // The feed ended; a disconnected channel is always ready.
                            doorbell = never();
                            break;
                        }
                    }
                }
            }
        }
    }

    /// A late edge: its cut first, as of the newest result, then everything after it.
    fn attach(&mut self, (tx, waker): EdgeEnd) {
        let cut = Cut {
            history: self.history.clone(),
            status: self.last_status,
            alerts: self.alerts.log().iter().cloned().collect(),
            alert_stats: self.alert_stats,
            symbols: self.universe.clone(),
        };
        if tx.send(Event::Cut(Box::new(cut))).is_ok() {
            if let Some(waker) = &waker {
                let _ = waker.wake();
            }
            self.bus.add((tx, waker));
        }
    }

    fn serve_adhoc(&mut self, symbols: &[String], requester: Tag) -> Result<(), Disconnected> {
        self.send_status(Phase::Adhoc)?;
        self.source.scan(symbols, &mut self.batch);
        let results = self.batch.len();
        self.publish()?;
        self.send(Event::AdhocDone {
            requester,
            symbols: symbols.len(),
            results,
        })?;
        self.wake()
    }

    fn announce(&mut self) -> Result<(), Disconnected> {
        self.source.new_symbols(&mut self.names);
        if self.names.is_empty() {
            return Ok(());
        }
        let names = std::mem::take(&mut self.names);
        self.universe.extend(names.iter().cloned());
        self.send(Event::Symbols(names.into()))?;
        self.wake()
    }

    fn idle_phase(&self) -> Phase {
        match self.state {
            RunState::Running if self.source.progress().scanning => Phase::Scanning,
            _ => Phase::Idle,
        }
    }

    fn apply(&mut self, cmd: Command) -> Result<(), Disconnected> {
        match cmd {
            Command::Start if self.state == RunState::Stopped => {
                self.state = RunState::Running;
                self.source.restart(Instant::now());
            }
            Command::Stop => self.state = RunState::Stopped,
            // The producer keeps no more than the edges' rings: nothing older to give.
            Command::Older { requester, .. } => {
                self.send(Event::Older {
                    requester,
                    results: Arc::from(Vec::new()),
                })?;
                return self.wake();
            }
            Command::Start => {}
            Command::Scan { symbols, requester } => {
                return self.serve_adhoc(&symbols, requester);
            }
            Command::Ack {
                alert_id,
                requester,
            } => {
                let alert = match self.alerts.ack(&alert_id, SystemTime::now()) {
                    Acked::Now(alert) | Acked::Already(alert) => Some(alert.to_json().into()),
                    Acked::NotFound => None,
                };
                self.send_notes()?;
                self.send_alert_stats()?;
                self.send(Event::AckDone {
                    requester,
                    alert_id: alert_id.into(),
                    alert,
                })?;
                return self.wake();
            }
        }
        self.send_status(self.idle_phase())
    }

    /// Numbers, stamps and sends every result in the batch, then wakes the reactor once.
    fn publish(&mut self) -> Result<(), Disconnected> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let mut batch = std::mem::take(&mut self.batch);
        for result in batch.drain(..) {
            let result = result.rounded();
            self.seq += 1;
            let prior = self.priors.observe(&result);
            let event = ScanEvent::publish(&result, self.seq, SystemTime::now()).with_prior(prior);
            let frame = result.rule_frame.as_ref();
            let raised = self.alerts.on_result(&event, frame, event.published);
            let event = Arc::new(event);
            self.history.push(Arc::clone(&event));
            self.bus.send(Event::Result(event))?;
            if raised > 0 {
                // An alert follows the result that raised it.
                self.send_notes()?;
            }
        }
        self.batch = batch;
        self.send_alert_stats()?;
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
            // Edges bound the ad-hoc queue in symbols, and fill this in.
            adhoc_queue: 0,
            counters: p.counters,
        };
        self.last_status = status;
        self.send(Event::Status(status))?;
        self.wake()
    }

    /// Publishes what the alert engine has for the edges.
    fn send_notes(&mut self) -> Result<(), Disconnected> {
        for note in self.alerts.take_notes() {
            self.send(Event::Alert(Arc::new(note)))?;
        }
        Ok(())
    }

    /// Publishes the alert counters when they changed, and compacts the journal when it
    /// has grown (appends come with raised or acknowledged alerts).
    fn send_alert_stats(&mut self) -> Result<(), Disconnected> {
        let stats = self.alerts.stats();
        if stats == self.alert_stats {
            return Ok(());
        }
        let before = self.alert_stats.counters;
        if stats.counters.raised != before.raised || stats.counters.acked != before.acked {
            self.alerts.maintain();
        }
        self.alert_stats = self.alerts.stats();
        self.send(Event::AlertStats(self.alert_stats))
    }

    fn send(&mut self, event: Event) -> Result<(), Disconnected> {
        self.bus.send(event)
    }

    fn wake(&self) -> Result<(), Disconnected> {
        self.bus.wake()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::local::{EdgeLink, bus};
    use crossbeam_channel::bounded;
    use mio::Waker;

    /// A source that counts how often the thread calls it, to catch a spinning loop.
    struct Counting {
        calls: Arc<AtomicU64>,
        bell: Option<Receiver<()>>,
        scanning: bool,
    }

    impl Source for Counting {
        fn poll(&mut self, now: Instant, _: usize, _: &mut Vec<ScanResult>) -> Instant {
            self.calls.fetch_add(1, Ordering::Relaxed);
            now + Duration::from_secs(3600)
        }
        fn idle(&mut self, now: Instant) -> Instant {
            self.calls.fetch_add(1, Ordering::Relaxed);
            now + Duration::from_secs(3600)
        }
        fn scan(&mut self, _: &[String], _: &mut Vec<ScanResult>) {}
        fn progress(&self) -> Progress {
            Progress {
                scanning: self.scanning,
                ..Progress::default()
            }
        }
        fn restart(&mut self, _: Instant) {}
        fn doorbell(&mut self) -> Option<Receiver<()>> {
            self.bell.take()
        }
    }

    /// Runs a counting source on a real scanner thread; returns its calls after `setup`
    /// and a quiet 300 ms. A loop that waits as it should makes a handful, a spinning
    /// one hundreds of thousands.
    fn calls_while_quiet(source: Counting, setup: impl FnOnce(&EdgeLink)) -> u64 {
        let calls = Arc::clone(&source.calls);
        let poll = mio::Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), mio::Token(0)).unwrap());
        let options = ScannerOptions {
            progress_interval: Duration::from_millis(250),
            history: History::new(16, "test".into()),
            symbols: Vec::new(),
        };
        let (producer, mut edges, _) = bus(&[Some(waker)], 64, 16);
        let alerts = Alerts::start(&crate::Config::default().alert_settings(), None).unwrap();
        let thread = spawn(Box::new(source), alerts, producer, options).unwrap();
        let edge = edges.pop().unwrap();
        setup(&edge);
        std::thread::sleep(Duration::from_millis(100));
        let before = calls.load(Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(300));
        let quiet = calls.load(Ordering::Relaxed) - before;
        drop(edge);
        thread.join();
        quiet
    }

    #[test]
    fn a_feed_that_ended_does_not_make_the_thread_spin() {
        let (bell_tx, bell) = bounded(1);
        drop(bell_tx);
        let source = Counting {
            calls: Arc::default(),
            bell: Some(bell),
            scanning: false,
        };
        let calls = calls_while_quiet(source, |_| {});
        assert!(calls <= 5, "{calls} polls in 300 ms of nothing");
    }

    #[test]
    fn stopped_mid_cycle_the_thread_waits() {
        let source = Counting {
            calls: Arc::default(),
            bell: None,
            scanning: true,
        };
        let calls = calls_while_quiet(source, |h| assert_eq!(h.command(Command::Stop), Ok(())));
        assert!(calls <= 5, "{calls} idle calls in 300 ms while stopped");
    }

    fn progress(cycle: u64, scanning: bool) -> Progress {
        Progress {
            cycle,
            scanning,
            ..Progress::default()
        }
    }

    #[test]
    fn progress_is_throttled_during_a_cycle_and_always_sent_at_its_end() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut t = StatusThrottle::new(Duration::from_millis(250));
        // Between cycles: nothing.
        assert_eq!(t.check(ms(0), &progress(0, false)), None);
        // A cycle starts: one status, then nothing until the interval has passed.
        assert_eq!(t.check(ms(1), &progress(0, true)), Some(Phase::Scanning));
        assert_eq!(t.check(ms(100), &progress(0, true)), None);
        assert_eq!(t.check(ms(250), &progress(0, true)), None);
        assert_eq!(t.next_due(&progress(0, true)), Some(ms(251)));
        assert_eq!(t.check(ms(251), &progress(0, true)), Some(Phase::Scanning));
        // The cycle ends 10 ms later: reported at once, whatever the interval says.
        assert_eq!(t.check(ms(261), &progress(1, false)), Some(Phase::Idle));
        assert_eq!(t.check(ms(262), &progress(1, false)), None);
        assert_eq!(t.next_due(&progress(1, false)), None);
        // Statuses over a long cycle, checked every millisecond: one per 250 ms.
        let sent = (300..2300)
            .filter(|&n| t.check(ms(n), &progress(1, true)).is_some())
            .count();
        assert_eq!(sent, 8);
    }
}
