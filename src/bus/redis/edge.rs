//! The edges' side of the Redis bus: a process of `--role edge` runs no scanner; this
//! bridge is its producer on the in-process bus.
//!
//! It reads one consistent cut (a `MULTI` of the epoch, the results tail, the active set,
//! the status, the alerts and the newest control-event id), hands it to the edges, then
//! follows the three streams with `XREAD BLOCK` from where the cut stands. Results go
//! out in `seq` order; a control event waits until the result it was published after has
//! gone out. A gap in the results (the stream was trimmed past this edge while Redis or
//! the edge was away) starts again from a new cut. Commands from the edges go to the
//! commands stream, their tags wrapped with this process's node id, and only answers
//! carrying that id come back to it.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use redis::{Connection, Value};

use super::codec::{self, Entry};
use super::producer::CONTROL_KEEP;
use super::{RedisBus, decode_results, history_of, read_history};
use crate::alerts::AlertStats;
use crate::bus::health::{BusHealth, BusProblem};
use crate::bus::local::{Disconnected, ProducerLink};
use crate::bus::{Command, Cut, Event, Tag};
use crate::event::ScanEvent;
use crate::scanner::ScannerStatus;

/// Results taken per read at most.
const READ_COUNT: usize = 1024;
/// How long one read waits for something new (an answer to a resume from before the
/// ring waits for it too).
const BLOCK: Duration = Duration::from_millis(100);
/// Results one resume may read from the stream at most (they wait in the connection's
/// memory until replayed).
const MAX_OLDER: u64 = 100_000;
/// How often the producer's lease is looked for.
const PRODUCER_CHECK: Duration = Duration::from_secs(1);

/// Starts the bridge that feeds `link`'s edges from the bus, and the one that sends their
/// commands to it; `node` tells this process's answers from others'. The receiver has a
/// message once the edges have their first cut: serving before it would show clients
/// an empty history in no epoch.
pub fn spawn(
    bus: RedisBus,
    link: ProducerLink,
    node: u64,
    health: Arc<BusHealth>,
) -> io::Result<(JoinHandle<()>, Receiver<()>)> {
    let (ready, cut_sent) = crossbeam_channel::bounded(1);
    let (older_tx, older_rx) = crossbeam_channel::bounded(64);
    let commands = link.commands.clone();
    let writer_bus = bus.clone();
    std::thread::Builder::new()
        .name("bus-commands".into())
        .spawn(move || send_commands(&writer_bus, &commands, node, &older_tx))?;
    let follower = std::thread::Builder::new()
        .name("bus-follow".into())
        .spawn(move || {
            let _ = Follower {
                bus,
                link,
                node,
                con: None,
                ids: None,
                pending: VecDeque::new(),
                events_from: None,
                ready: Some(ready),
                older: older_rx,
                health,
                next_check: Instant::now(),
            }
            .run();
        })?;
    Ok((follower, cut_sent))
}

/// Where the edge stands in each stream.
#[derive(Debug, Clone)]
struct Ids {
    /// The newest result delivered.
    head: u64,
    /// The newest results entry read, good or not: reading goes on after it, so an
    /// entry that cannot be read is not read again and again.
    read: String,
    /// The newest control event and alert read.
    events: String,
    alerts: String,
}

struct Follower {
    bus: RedisBus,
    link: ProducerLink,
    node: u64,
    con: Option<Connection>,
    /// `None` until a cut was delivered (or after a gap).
    ids: Option<Ids>,
    /// Control events read, each with the result it waits for, in publish order.
    pending: VecDeque<(u64, Event)>,
    /// Where the events stream was read up to when a gap called for a new cut.
    events_from: Option<String>,
    /// Told when the first cut has gone to the edges.
    ready: Option<crossbeam_channel::Sender<()>>,
    /// Older results read for resumes, to hand to the edges.
    older: Receiver<Older>,
    /// Where the edges read how the bus is doing.
    health: Arc<BusHealth>,
    /// When to look for the producer's lease next.
    next_check: Instant,
}

impl Follower {
    fn run(&mut self) -> Result<(), Disconnected> {
        loop {
            if self.con.is_none() {
                let health = &self.health;
                self.con = self.bus.connect_retrying("edge", || {
                    health.problem(BusProblem::Unreachable);
                    false
                });
            }
            let Some(con) = self.con.as_mut() else {
                continue;
            };
            let mut answered = false;
            while let Ok((requester, results)) = self.older.try_recv() {
                self.link.send(Event::Older { requester, results })?;
                answered = true;
            }
            if answered {
                self.link.wake()?;
            }
            if Instant::now() >= self.next_check {
                self.next_check = Instant::now() + PRODUCER_CHECK;
                match producer_alive(con, &self.bus) {
                    Ok(true) => self.health.ok(),
                    Ok(false) => self.health.problem(BusProblem::NoProducer),
                    Err(_) => {
                        self.health.problem(BusProblem::Unreachable);
                        self.con = None;
                        continue;
                    }
                }
            }
            let step = match self.ids.clone() {
                None => cut(con, &self.bus).map(|(cut, ids)| {
                    self.ids = ids.map(|mut ids| {
                        // After a gap: the answers published since the last event read
                        // still come (a status twice does no harm; a lost answer would).
                        // The cut holds the alerts, so those read before it go.
                        if let Some(events) = self.events_from.take() {
                            ids.events = events;
                        }
                        self.pending
                            .retain(|(_, ev)| !matches!(ev, Event::Alert(_)));
                        ids
                    });
                    cut
                }),
                Some(ids) => read(con, &self.bus, &ids).map(|reply| {
                    let (events, ids) = self.arrange(reply, ids);
                    self.ids = ids;
                    events
                }),
            };
            match step {
                Ok(events) => {
                    for ev in events {
                        self.link.send(ev)?;
                    }
                    self.link.wake()?;
                    if self.ids.is_some() {
                        if let Some(ready) = self.ready.take() {
                            let _ = ready.send(());
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the Redis bus failed; reconnecting");
                    self.health.problem(BusProblem::Unreachable);
                    self.con = None;
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    /// The events of a read in delivery order, and where the edge then stands (`None`
    /// after a gap: a new cut is due).
    fn arrange(&mut self, reply: Value, mut ids: Ids) -> (Vec<Event>, Option<Ids>) {
        let mut results = Vec::new();
        for (stream, entries) in codec::read_reply(&reply) {
            if stream == self.bus.keys.results {
                if let Some(last) = entries.last() {
                    ids.read = last.id.clone();
                }
                results = decode_results(&entries);
                continue;
            }
            let Some(last) = entries.last() else {
                continue;
            };
            if stream == self.bus.keys.alerts {
                ids.alerts = last.id.clone();
            } else {
                ids.events = last.id.clone();
            }
            for entry in &entries {
                if let Some(held) = self.control(entry) {
                    self.pending.push_back(held);
                }
            }
        }
        // Published in this order: after the same result, an alert before the answer that
        // follows it (an acknowledgment's `acked`, an ad-hoc scan's alerts), each stream
        // in its own order.
        self.pending
            .make_contiguous()
            .sort_by_key(|(after, ev)| (*after, !matches!(ev, Event::Alert(_))));
        let mut out = Vec::with_capacity(results.len() + self.pending.len());
        for ev in results {
            // Seqs come from Redis: no arithmetic on them may overflow.
            if ev.seq != ids.head.saturating_add(1) {
                tracing::warn!(
                    expected = ids.head.saturating_add(1),
                    got = ev.seq,
                    "results were lost; taking a new cut"
                );
                self.events_from = Some(ids.events);
                return (out, None);
            }
            self.release(ev.seq.saturating_sub(1), &mut out);
            ids.head = ev.seq;
            out.push(Event::Result(ev));
        }
        self.release(ids.head, &mut out);
        (out, Some(ids))
    }

    /// Moves the control events due once result `head` is out into `out`.
    fn release(&mut self, head: u64, out: &mut Vec<Event>) {
        while self
            .pending
            .front()
            .is_some_and(|(after, _)| *after <= head)
        {
            if let Some((_, ev)) = self.pending.pop_front() {
                out.push(ev);
            }
        }
    }

    /// A control entry as an event for this process's edges, with the result it waits
    /// for; `None` for a bad entry or another process's answer.
    fn control(&self, entry: &Entry) -> Option<(u64, Event)> {
        let after = std::str::from_utf8(entry.field("a")?).ok()?.parse().ok()?;
        let ev = match codec::decode_control(entry.field("d")?) {
            Ok(ev) => ev,
            Err(e) => {
                tracing::warn!(id = %entry.id, error = %e, "a bad event on the bus; skipped");
                return None;
            }
        };
        let ev = match ev {
            Event::AdhocDone {
                requester,
                symbols,
                results,
            } => Event::AdhocDone {
                requester: codec::unwrap(self.node, &requester)?,
                symbols,
                results,
            },
            Event::AckDone {
                requester,
                alert_id,
                alert,
            } => Event::AckDone {
                requester: codec::unwrap(self.node, &requester)?,
                alert_id,
                alert,
            },
            other => other,
        };
        Some((after, ev))
    }
}

/// Reads one consistent cut: the events that start an edge, and where it then stands
/// (`None` while no producer has run yet).
fn cut(con: &mut Connection, bus: &RedisBus) -> redis::RedisResult<(Vec<Event>, Option<Ids>)> {
    let keys = &bus.keys;
    let mut pipe = redis::pipe();
    pipe.atomic().cmd("GET").arg(&keys.epoch);
    read_history(&mut pipe, bus);
    let (epoch, tail, active, status, stats, symbols, alerts, events): (
        Value,
        Value,
        Value,
        Value,
        Value,
        Value,
        Value,
        Value,
    ) = pipe
        .cmd("GET")
        .arg(&keys.status)
        .cmd("GET")
        .arg(&keys.alert_stats)
        .cmd("SMEMBERS")
        .arg(&keys.symbols)
        .cmd("XRANGE")
        .arg(&keys.alerts)
        .arg("-")
        .arg("+")
        .cmd("XREVRANGE")
        .arg(&keys.events)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query(con)?;
    let Some(epoch) = codec::text(&epoch) else {
        // No producer has run yet: wait for one.
        std::thread::sleep(BLOCK);
        return Ok((Vec::new(), None));
    };
    let history = history_of(bus, epoch, &tail, &active);
    let head = history.head();
    let status = match codec::bytes(&status).map(codec::decode_control) {
        Some(Ok(Event::Status(s))) => s,
        _ => ScannerStatus::initial(),
    };
    let alert_stats = match codec::bytes(&stats).map(codec::decode_control) {
        Some(Ok(Event::AlertStats(s))) => s,
        _ => AlertStats::default(),
    };
    let alert_entries = codec::entries(&alerts);
    let ids = Ids {
        head,
        read: format!("{head}-0"),
        events: codec::entries(&events)
            .first()
            .map_or_else(|| "0-0".to_owned(), |e| e.id.clone()),
        alerts: alert_entries
            .last()
            .map_or_else(|| "0-0".to_owned(), |e| e.id.clone()),
    };
    let cut = Cut {
        history,
        status,
        alerts: codec::alert_history(&alert_entries, bus.alert_history),
        alert_stats,
        symbols: codec::members(&symbols),
    };
    tracing::info!(epoch = %cut.history.epoch(), head, "serving from the bus");
    Ok((vec![Event::Cut(Box::new(cut))], Some(ids)))
}

/// Does a producer hold the lease?
fn producer_alive(con: &mut Connection, bus: &RedisBus) -> redis::RedisResult<bool> {
    let exists: i64 = redis::cmd("EXISTS").arg(&bus.keys.lease).query(con)?;
    Ok(exists == 1)
}

/// Waits for what follows `ids` in the three streams.
fn read(con: &mut Connection, bus: &RedisBus, ids: &Ids) -> redis::RedisResult<Value> {
    let keys = &bus.keys;
    redis::cmd("XREAD")
        .arg("COUNT")
        .arg(READ_COUNT)
        .arg("BLOCK")
        .arg(BLOCK.as_millis() as u64)
        .arg("STREAMS")
        .arg(&keys.results)
        .arg(&keys.events)
        .arg(&keys.alerts)
        .arg(&ids.read)
        .arg(&ids.events)
        .arg(&ids.alerts)
        .query(con)
}

/// An answer to [`Command::Older`], for the follower to hand to the edges.
type Older = (Tag, Arc<[Arc<ScanEvent>]>);

/// The results `from..=to` the stream still keeps, consecutive from `from` (none when it
/// no longer has `from`, or Redis does not answer: the edge then resumes as best it can).
fn read_older(
    bus: &RedisBus,
    con: &mut Option<Connection>,
    from: u64,
    to: u64,
) -> Arc<[Arc<ScanEvent>]> {
    if con.is_none() {
        *con = bus.connect().ok();
    }
    let Some(c) = con.as_mut() else {
        return Arc::from(Vec::new());
    };
    let count = to.saturating_sub(from).saturating_add(1).min(MAX_OLDER);
    let reply: redis::RedisResult<Value> = redis::cmd("XRANGE")
        .arg(&bus.keys.results)
        .arg(format!("{from}-0"))
        .arg(format!("{to}-0"))
        .arg("COUNT")
        .arg(count)
        .query(c);
    let Ok(reply) = reply else {
        *con = None;
        return Arc::from(Vec::new());
    };
    let results = decode_results(&codec::entries(&reply));
    let consecutive = results.iter().zip(from..).all(|(r, seq)| r.seq == seq);
    if !consecutive || results.first().is_none_or(|r| r.seq != from) {
        return Arc::from(Vec::new());
    }
    results.into()
}

/// Sends the edges' commands to the commands stream, in order, waiting out an outage
/// (the edges' own queue bound refuses what does not fit meanwhile).
fn send_commands(bus: &RedisBus, commands: &Receiver<Command>, node: u64, older: &Sender<Older>) {
    let mut con: Option<Connection> = None;
    for command in commands {
        if let Command::Older {
            from,
            to,
            requester,
        } = command
        {
            let results = read_older(bus, &mut con, from, to);
            if older.send((requester, results)).is_err() {
                return; // the edges are gone
            }
            continue;
        }
        let command = match command {
            Command::Ack {
                alert_id,
                requester,
            } => Command::Ack {
                alert_id,
                requester: codec::wrap(node, &requester),
            },
            Command::Scan { symbols, requester } => Command::Scan {
                symbols,
                requester: codec::wrap(node, &requester),
            },
            other => other,
        };
        let Some(json) = codec::encode_command(&command) else {
            continue;
        };
        loop {
            let Some(c) = con.as_mut() else {
                con = bus.connect_retrying("commands", || false);
                continue;
            };
            let sent: redis::RedisResult<Value> = redis::cmd("XADD")
                .arg(&bus.keys.commands)
                .arg("MAXLEN")
                .arg("~")
                .arg(CONTROL_KEEP)
                .arg("*")
                .arg("c")
                .arg(&json)
                .query(c);
            match sent {
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot send a command over the bus");
                    con = None;
                }
            }
        }
    }
}
