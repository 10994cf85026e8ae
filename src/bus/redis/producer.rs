//! The producer's side of the Redis bus.
//!
//! Before the scanner starts, [`start`] takes the lease (a standby waits here while
//! another producer holds it) and reads where the deployment stands: the epoch (made the
//! first time), the results tail and the active set, so the run goes on with the same
//! epoch and the next `seq`. Then two threads: the publisher, attached to the producer
//! like an edge, writes every event to the streams in batches, one `MULTI`/`EXEC` round
//! trip each; the command reader takes the edges' commands from the consumer group and
//! hands them to the producer, acknowledging each once handed over.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ahash::AHashMap;
use crossbeam_channel::{RecvTimeoutError, Sender, TryRecvError};
use redis::{Connection, Value};

use super::codec::{self, Stream};
use super::{Keys, RedisBus, history_of, read_history};
use crate::alerts::Alert;
use crate::bus::health::{BusHealth, BusProblem};
use crate::bus::local::EdgeLink;
use crate::bus::{Command, Event};
use crate::event::{EventKind, ScanEvent};
use crate::history::History;

/// How long the lease lasts unless renewed.
const LEASE: Duration = Duration::from_secs(5);
/// How often it is renewed.
const RENEW: Duration = Duration::from_secs(1);
/// How soon the publisher notices a shutdown.
const STOP_CHECK: Duration = Duration::from_millis(100);
/// Events written in one round trip at most.
const BATCH: usize = 1024;
/// Events held while Redis is away; past it the oldest go (and are counted).
const BACKLOG: usize = 100_000;
/// Results written lately, kept to write again when Redis comes back without them (a
/// restart loses what its append-only file had not synced yet, up to a second).
const RECENT: usize = 65_536;
/// Entries kept in the control-event and command streams.
pub(super) const CONTROL_KEEP: usize = 10_000;
/// The consumer group (and its one consumer) that reads the commands.
const GROUP: &str = "producer";

/// The producer's lease on the deployment.
#[derive(Debug, Clone)]
pub struct Lease {
    key: String,
    holder: String,
}

impl Lease {
    /// Takes the lease, waiting while another producer holds it.
    fn take(con: &mut Connection, keys: &Keys) -> redis::RedisResult<Lease> {
        let lease = Lease {
            key: keys.lease.clone(),
            holder: format!("{}-{}", std::process::id(), rand::random::<u32>()),
        };
        let mut waiting = false;
        loop {
            let taken: Value = redis::cmd("SET")
                .arg(&lease.key)
                .arg(&lease.holder)
                .arg("NX")
                .arg("PX")
                .arg(LEASE.as_millis() as u64)
                .query(con)?;
            if taken != Value::Nil {
                if waiting {
                    tracing::info!("the lease is free: taking over as the producer");
                }
                return Ok(lease);
            }
            if !waiting {
                tracing::info!("another producer holds the lease: standing by");
                waiting = true;
            }
            std::thread::sleep(LEASE / 10);
        }
    }

    /// Hands the lease back, if it is still this producer's.
    fn release(&self, con: &mut Connection) -> redis::RedisResult<()> {
        const RELEASE_IF_MINE: &str = "if redis.call('get', KEYS[1]) == ARGV[1] then \
             return redis.call('del', KEYS[1]) else return 0 end";
        redis::cmd("EVAL")
            .arg(RELEASE_IF_MINE)
            .arg(1)
            .arg(&self.key)
            .arg(&self.holder)
            .exec(con)
    }

    /// Renews the lease (taking it again if Redis restarted without it); false when
    /// another producer has it now.
    fn renew(&self, con: &mut Connection) -> redis::RedisResult<bool> {
        const RENEW_IF_MINE: &str = "local holder = redis.call('get', KEYS[1]) \
             if holder == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) \
             elseif holder == false then \
             redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 \
             else return 0 end";
        let renewed: i64 = redis::cmd("EVAL")
            .arg(RENEW_IF_MINE)
            .arg(1)
            .arg(&self.key)
            .arg(&self.holder)
            .arg(LEASE.as_millis() as u64)
            .query(con)?;
        Ok(renewed == 1)
    }
}

/// Where a producer starts: its lease, and the history it goes on from.
pub struct Start {
    /// The connection it was read over.
    pub con: Connection,
    /// The lease it holds.
    pub lease: Lease,
    /// The epoch, the results tail and the active set.
    pub history: History,
    /// The alert history, oldest first.
    pub alerts: Vec<Alert>,
}

/// Takes the lease and reads where the deployment stands; `epoch` is the one to make if
/// there is none yet.
pub fn start(bus: &RedisBus, epoch: String) -> io::Result<Start> {
    let mut con = bus.connect().map_err(io::Error::other)?;
    let lease = Lease::take(&mut con, &bus.keys).map_err(io::Error::other)?;
    let keys = &bus.keys;
    let mut pipe = redis::pipe();
    pipe.atomic()
        .cmd("SET")
        .arg(&keys.epoch)
        .arg(&epoch)
        .arg("NX")
        .ignore()
        .cmd("GET")
        .arg(&keys.epoch);
    read_history(&mut pipe, bus);
    let (_, epoch, tail, active, alerts): ((), Value, Value, Value, Value) = pipe
        .cmd("XRANGE")
        .arg(&keys.alerts)
        .arg("-")
        .arg("+")
        .query(&mut con)
        .map(|(epoch, tail, active, alerts)| ((), epoch, tail, active, alerts))
        .map_err(io::Error::other)?;
    let epoch = codec::text(&epoch).ok_or_else(|| io::Error::other("no epoch on the bus"))?;
    let history = history_of(bus, epoch, &tail, &active);
    tracing::info!(epoch = %history.epoch(), head = history.head(), "continuing the deployment's results");
    let alerts = codec::alert_history(&codec::entries(&alerts), bus.alert_history);
    Ok(Start {
        con,
        lease,
        history,
        alerts,
    })
}

/// Starts the publisher on `link` (attached to the producer) and the command reader;
/// `symbols`, the universe known before the first result, goes to the bus first.
pub fn spawn(
    bus: RedisBus,
    start: Start,
    link: EdgeLink,
    symbols: Vec<Box<str>>,
    health: Arc<BusHealth>,
) -> io::Result<Bridge> {
    let done = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let finishing = Arc::clone(&stop);
    let commands = link.command_sender();
    let reader_bus = bus.clone();
    let reader_done = Arc::clone(&done);
    std::thread::Builder::new()
        .name("bus-commands".into())
        .spawn(move || read_commands(&reader_bus, &commands, &reader_done))?;
    let thread = std::thread::Builder::new()
        .name("bus-publish".into())
        .spawn(move || {
            Publisher {
                bus,
                con: Some(start.con),
                lease: start.lease,
                head: start.history.head(),
                backlog: VecDeque::from([Event::Symbols(symbols.clone().into())]),
                epoch: start.history.epoch().to_owned(),
                symbols,
                recent: VecDeque::new(),
                health,
            }
            .run(&link, &finishing);
            done.store(true, Ordering::Relaxed);
        })?;
    Ok(Bridge { stop, thread })
}

/// The producer's bridge, running.
pub struct Bridge {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Bridge {
    /// Writes what the producer has sent so far, hands the lease back (a standby takes
    /// over at once) and lets go of the producer, which then ends.
    pub fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
    }
}

struct Publisher {
    bus: RedisBus,
    con: Option<Connection>,
    lease: Lease,
    /// The newest result written: control events carry it.
    head: u64,
    /// Events waiting to be written, oldest first.
    backlog: VecDeque<Event>,
    /// The newest results written, oldest first.
    recent: VecDeque<Arc<ScanEvent>>,
    /// Where the edges of this process read how the bus is doing.
    health: Arc<BusHealth>,
    /// The deployment's epoch and universe, written again to a Redis that lost them.
    epoch: String,
    symbols: Vec<Box<str>>,
}

impl Publisher {
    fn run(&mut self, link: &EdgeLink, stop: &AtomicBool) {
        let mut next_renew = Instant::now() + RENEW;
        let mut open = true;
        while open || !self.backlog.is_empty() {
            if open && stop.load(Ordering::Relaxed) {
                self.finish(link);
                return;
            }
            if open {
                open = self.take(link, next_renew.min(Instant::now() + STOP_CHECK));
            }
            if Instant::now() >= next_renew {
                self.renew();
                next_renew = Instant::now() + RENEW;
            }
            if !self.backlog.is_empty() && !self.write() {
                // Redis is away: hold on, and keep taking events meanwhile.
                std::thread::sleep(Duration::from_millis(100));
                if !open {
                    // The producer is gone and so is Redis: what is left is lost.
                    tracing::warn!(
                        events = self.backlog.len(),
                        "stopping with events unwritten"
                    );
                    return;
                }
            }
        }
    }

    /// The process is shutting down: what the producer sent goes to Redis (a few tries),
    /// then the lease goes back.
    fn finish(&mut self, link: &EdgeLink) {
        while let Ok(ev) = link.events.try_recv() {
            self.hold(ev);
        }
        // A few tries: a shutdown does not wait out a Redis outage.
        for _ in 0..20 {
            if self.backlog.is_empty() || !self.write() {
                break;
            }
        }
        if !self.backlog.is_empty() {
            tracing::warn!(
                events = self.backlog.len(),
                "stopping with events unwritten"
            );
        }
        if let Some(con) = self.con.as_mut() {
            let _ = self.lease.release(con);
        }
    }

    /// Takes what the producer sent, waiting until `until` for the first; false once the
    /// producer has ended.
    fn take(&mut self, link: &EdgeLink, until: Instant) -> bool {
        let wait = until.saturating_duration_since(Instant::now());
        let first = if self.backlog.is_empty() {
            link.events.recv_timeout(wait)
        } else {
            link.events.try_recv().map_err(|e| match e {
                TryRecvError::Empty => RecvTimeoutError::Timeout,
                TryRecvError::Disconnected => RecvTimeoutError::Disconnected,
            })
        };
        match first {
            Ok(ev) => self.hold(ev),
            Err(RecvTimeoutError::Timeout) => return true,
            Err(RecvTimeoutError::Disconnected) => return false,
        }
        for _ in 0..BATCH {
            match link.events.try_recv() {
                Ok(ev) => self.hold(ev),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return false,
            }
        }
        true
    }

    fn hold(&mut self, ev: Event) {
        if let Event::Symbols(names) = &ev {
            self.symbols.extend(names.iter().cloned());
        }
        // The cut is the producer's own state, read from Redis a moment ago.
        if matches!(ev, Event::Cut(_)) {
            return;
        }
        if self.backlog.len() == BACKLOG {
            self.backlog.pop_front();
            self.health.count_dropped();
            let dropped = self.health.dropped();
            if dropped.is_power_of_two() {
                tracing::warn!(dropped, "the bus backlog is full; dropping");
            }
        }
        self.backlog.push_back(ev);
    }

    fn renew(&mut self) {
        let Some(con) = self.con.as_mut() else {
            return;
        };
        match self.lease.renew(con) {
            Ok(true) => {}
            Ok(false) => {
                // Two producers would number results twice: this one stops at once, and
                // a supervisor that restarts it makes it a standby.
                tracing::error!("the lease was lost to another producer; exiting");
                std::process::exit(3);
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot renew the lease");
                self.con = None;
            }
        }
    }

    /// After a reconnection: the results Redis no longer has (it restarted and lost what
    /// it had not synced) go first again. False when Redis could not be asked.
    fn catch_up(&mut self) -> bool {
        let Some(con) = self.con.as_mut() else {
            return false;
        };
        let newest: redis::RedisResult<Value> = redis::cmd("XREVRANGE")
            .arg(&self.bus.keys.results)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query(con);
        let Ok(newest) = newest else {
            return false;
        };
        let kept = codec::entries(&newest)
            .first()
            .and_then(codec::Entry::seq)
            .unwrap_or(0);
        // A Redis that lost everything (no persistence) gets the epoch and universe back.
        let mut restore = redis::pipe();
        restore
            .cmd("SET")
            .arg(&self.bus.keys.epoch)
            .arg(&self.epoch)
            .arg("NX")
            .ignore();
        if !self.symbols.is_empty() {
            let add = restore.cmd("SADD").arg(&self.bus.keys.symbols).ignore();
            for name in &self.symbols {
                add.arg(name.as_ref());
            }
        }
        if restore.exec(con).is_err() {
            return false;
        }
        let lost: Vec<Arc<ScanEvent>> = self
            .recent
            .iter()
            .filter(|r| r.seq > kept)
            .cloned()
            .collect();
        if !lost.is_empty() {
            tracing::warn!(
                from = kept.saturating_add(1),
                results = lost.len(),
                "Redis lost results; writing them again"
            );
        }
        for r in lost.into_iter().rev() {
            self.backlog.push_front(Event::Result(r));
        }
        true
    }

    /// Writes up to a batch from the backlog; false when Redis could not take it.
    fn write(&mut self) -> bool {
        if self.con.is_none() {
            self.con = self.bus.connect().ok();
            // The lease may have run out while Redis was away: this producer goes on
            // only if it still holds it (a standby may have taken over meanwhile).
            if self.con.is_some() {
                self.renew();
            }
            if self.con.is_some() && !self.catch_up() {
                self.con = None;
            }
        }
        let Some(con) = self.con.as_mut() else {
            self.health.problem(BusProblem::Unreachable);
            return false;
        };
        let n = self.backlog.len().min(BATCH);
        let mut pipe = redis::pipe();
        // Per-command errors are expected after a retry (a result written before a lost
        // reply is refused the second time) and leave the rest of the batch done.
        pipe.atomic().ignore_errors();
        let mut head = self.head;
        let mut bytes = Vec::new();
        // The active set's final state per row in this batch: one HSET and one HDEL for
        // the whole batch instead of one per result (the MULTI makes them one change).
        let mut active: AHashMap<String, Option<Vec<u8>>> = AHashMap::new();
        for ev in self.backlog.iter().take(n) {
            add(&mut pipe, &self.bus, ev, &mut head, &mut bytes, &mut active);
        }
        let (mut set, mut del) = (redis::cmd("HSET"), redis::cmd("HDEL"));
        let (mut sets, mut dels) = (0, 0);
        set.arg(&self.bus.keys.active);
        del.arg(&self.bus.keys.active);
        for (field, value) in &active {
            match value {
                Some(v) => {
                    set.arg(field).arg(v.as_slice());
                    sets += 1;
                }
                None => {
                    del.arg(field);
                    dels += 1;
                }
            }
        }
        if sets > 0 {
            pipe.add_command(set);
        }
        if dels > 0 {
            pipe.add_command(del);
        }
        match pipe.query::<Vec<redis::RedisResult<Value>>>(con) {
            Ok(replies) => {
                for e in replies.iter().filter_map(|r| r.as_ref().err()) {
                    if !e.to_string().contains("equal or smaller") {
                        tracing::warn!(error = %e, "a write to the Redis bus was refused");
                    }
                }
                for ev in self.backlog.drain(..n) {
                    if let Event::Result(r) = ev {
                        if self.recent.len() == RECENT {
                            self.recent.pop_front();
                        }
                        self.recent.push_back(r);
                    }
                }
                self.head = head;
                self.health.ok();
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot write to the Redis bus; retrying");
                self.health.problem(BusProblem::Unreachable);
                self.con = None;
                false
            }
        }
    }
}

/// Adds the commands that publish `ev` to `pipe`, and its row's new state to `active`;
/// `head` is the newest result so far.
fn add(
    pipe: &mut redis::Pipeline,
    bus: &RedisBus,
    ev: &Event,
    head: &mut u64,
    buf: &mut Vec<u8>,
    active: &mut AHashMap<String, Option<Vec<u8>>>,
) {
    let keys = &bus.keys;
    if let Event::Result(r) = ev {
        buf.clear();
        r.write_wire(buf);
        pipe.cmd("XADD")
            .arg(&keys.results)
            .arg("MAXLEN")
            .arg("~")
            .arg(bus.retention)
            .arg(format!("{}-0", r.seq))
            .arg("r")
            .arg(buf.as_slice());
        if !r.adhoc {
            let field = format!("{}:{}", r.symbol_key, r.scan.name());
            let value = match r.kind {
                EventKind::New | EventKind::Update => Some(buf.clone()),
                EventKind::Clear => None,
            };
            active.insert(field, value);
        }
        *head = (*head).max(r.seq);
        return;
    }
    let Some((stream, json)) = codec::encode_control(ev) else {
        return;
    };
    match ev {
        Event::Status(_) => {
            pipe.cmd("SET").arg(&keys.status).arg(&json);
        }
        Event::AlertStats(_) => {
            pipe.cmd("SET").arg(&keys.alert_stats).arg(&json);
        }
        Event::Symbols(names) if !names.is_empty() => {
            let cmd = pipe.cmd("SADD").arg(&keys.symbols);
            for name in names.iter() {
                cmd.arg(name.as_ref());
            }
        }
        _ => {}
    }
    let (key, keep) = match stream {
        Stream::Events => (&keys.events, CONTROL_KEEP),
        Stream::Alerts => (&keys.alerts, bus.alert_history.saturating_mul(2)),
    };
    pipe.cmd("XADD")
        .arg(key)
        .arg("MAXLEN")
        .arg("~")
        .arg(keep)
        .arg("*")
        .arg("a")
        .arg(*head)
        .arg("d")
        .arg(json);
}

/// Reads the edges' commands through the consumer group and hands each to the producer:
/// first those taken before a restart and never acknowledged, then new ones.
fn read_commands(bus: &RedisBus, to_producer: &Sender<Command>, done: &AtomicBool) {
    let keys = &bus.keys;
    let mut con: Option<Connection> = None;
    let mut from_pending = true;
    while !done.load(Ordering::Relaxed) {
        let Some(c) = con.as_mut() else {
            con = bus.connect_retrying("commands", || done.load(Ordering::Relaxed));
            if let Some(c) = con.as_mut() {
                // From the start of the stream the first time: commands sent before any
                // producer ran are answered too. An existing group is fine.
                let _: redis::RedisResult<Value> = redis::cmd("XGROUP")
                    .arg("CREATE")
                    .arg(&keys.commands)
                    .arg(GROUP)
                    .arg("0")
                    .arg("MKSTREAM")
                    .query(c);
                from_pending = true;
            }
            continue;
        };
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP").arg(GROUP).arg(GROUP).arg("COUNT").arg(64);
        if !from_pending {
            cmd.arg("BLOCK").arg(1000);
        }
        cmd.arg("STREAMS")
            .arg(&keys.commands)
            .arg(if from_pending { "0" } else { ">" });
        let reply: Value = match cmd.query(c) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read commands from the Redis bus");
                con = None;
                continue;
            }
        };
        let entries: Vec<codec::Entry> = codec::read_reply(&reply)
            .into_iter()
            .flat_map(|(_, entries)| entries)
            .collect();
        if from_pending && entries.is_empty() {
            from_pending = false;
        }
        for entry in entries {
            match entry.field("c").map(codec::decode_command) {
                Some(Ok(command)) => {
                    if to_producer.send(command).is_err() {
                        return; // the producer has ended
                    }
                }
                _ => tracing::warn!(id = %entry.id, "a command that cannot be read; skipped"),
            }
            let acked: redis::RedisResult<i64> = redis::cmd("XACK")
                .arg(&keys.commands)
                .arg(GROUP)
                .arg(&entry.id)
                .query(c);
            if acked.is_err() {
                con = None;
                break;
            }
        }
    }
}
