//! The bus between processes: Redis Streams, through the `redis` crate's blocking API on
//! bridge threads. Neither the scanner nor the reactor knows it is there: the producer
//! bridge attaches to the producer as one more edge, and the edge bridge feeds the
//! process's edges as their producer, both over the in-process bus.
//!
//! Keys, under `--bus-prefix` (`P`):
//!
//! | key | type | what |
//! |---|---|---|
//! | `P:epoch` | string | the epoch, made once and kept |
//! | `P:results` | stream | every result at id `SEQ-0` (`r`: its bytes), trimmed to the history |
//! | `P:active` | hash | `SYMBOL:scan` → the bytes of its newest `new`/`update`, written with the `XADD` |
//! | `P:events` | stream | statuses, symbols, answers to requests, failures (`k`, `a`, `d`) |
//! | `P:alerts` | stream | alerts raised and acknowledged (`k`, `a`, `d`) |
//! | `P:status`, `P:alert_stats` | string | the newest status and alert counters, for a cut |
//! | `P:symbols` | set | the universe |
//! | `P:commands` | stream | commands from edges, read by the producer's consumer group |
//! | `P:lease` | string | the producer's lease, `SET NX PX`, renewed |
//!
//! `a` on an event is the newest result `seq` when it was published: an edge holds the
//! event until it has delivered that result, so an answer never overtakes the results it
//! answers for, though they travel in different streams.

pub mod codec;
pub mod edge;
pub mod producer;

use std::sync::Arc;
use std::time::Duration;

use redis::{Client, Connection, RedisResult, Value};

use crate::event::ScanEvent;
use crate::history::History;

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest a reply may take (the bridges' blocking reads wait 1 s at most).
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// The names of one deployment's keys.
#[derive(Debug, Clone)]
pub struct Keys {
    /// The epoch.
    pub epoch: String,
    /// The results stream.
    pub results: String,
    /// The active set.
    pub active: String,
    /// Statuses, symbols, answers and failures.
    pub events: String,
    /// Alerts raised and acknowledged.
    pub alerts: String,
    /// The newest status.
    pub status: String,
    /// The newest alert counters.
    pub alert_stats: String,
    /// The universe.
    pub symbols: String,
    /// Commands from edges.
    pub commands: String,
    /// The producer's lease.
    pub lease: String,
}

impl Keys {
    /// The keys under `prefix`.
    pub fn new(prefix: &str) -> Keys {
        let key = |name: &str| format!("{prefix}:{name}");
        Keys {
            epoch: key("epoch"),
            results: key("results"),
            active: key("active"),
            events: key("events"),
            alerts: key("alerts"),
            status: key("status"),
            alert_stats: key("alert_stats"),
            symbols: key("symbols"),
            commands: key("commands"),
            lease: key("lease"),
        }
    }
}

/// Where the bus is and how much it keeps.
#[derive(Debug, Clone)]
pub struct RedisBus {
    /// `redis://HOST:PORT[/DB]` or `redis+unix:///PATH`.
    pub url: String,
    /// The deployment's keys.
    pub keys: Keys,
    /// Results in each edge's ring, read into a cut.
    pub history: usize,
    /// Results kept in the stream (at least `history`); a resume from before an edge's
    /// ring is served from there.
    pub retention: usize,
    /// Alerts kept.
    pub alert_history: usize,
}

impl RedisBus {
    /// A connection, or why not.
    pub fn connect(&self) -> RedisResult<Connection> {
        let client = Client::open(self.url.as_str())?;
        let con = client.get_connection_with_timeout(CONNECT_TIMEOUT)?;
        // A Redis that hangs must not hang a bridge (and with it a shutdown or the
        // lease): longer than any blocking read the bridges make.
        con.set_read_timeout(Some(IO_TIMEOUT))?;
        con.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(con)
    }

    /// A connection, trying again with growing pauses until one works or `give_up`
    /// says stop; `what` names the caller in the log.
    pub fn connect_retrying(
        &self,
        what: &str,
        mut give_up: impl FnMut() -> bool,
    ) -> Option<Connection> {
        let mut pause = Duration::from_millis(50);
        loop {
            match self.connect() {
                Ok(con) => return Some(con),
                Err(e) => {
                    tracing::warn!(%what, error = %e, "cannot reach the Redis bus; retrying");
                }
            }
            if give_up() {
                return None;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(MAX_BACKOFF);
        }
    }
}

/// Adds to `pipe` the reads of where the deployment's results stand: the newest results
/// (as many as the history keeps) and the open opportunities.
fn read_history(pipe: &mut redis::Pipeline, bus: &RedisBus) {
    pipe.cmd("XREVRANGE")
        .arg(&bus.keys.results)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(bus.history)
        .cmd("HGETALL")
        .arg(&bus.keys.active);
}

/// The history of `epoch` that the replies to [`read_history`] hold.
fn history_of(bus: &RedisBus, epoch: String, tail: &Value, active: &Value) -> History {
    let mut tail = decode_results(&codec::entries(tail));
    tail.reverse();
    let head = tail.last().map_or(0, |e| e.seq);
    let active = codec::hash_values(active)
        .iter()
        .filter_map(|b| ScanEvent::read_wire(b).ok().map(Arc::new))
        .collect();
    History::restore(bus.history, epoch, head, tail, active)
}

/// The results of `entries`, each checked; a bad one is logged and left out.
fn decode_results(entries: &[codec::Entry]) -> Vec<Arc<ScanEvent>> {
    entries
        .iter()
        .filter_map(|e| {
            let bytes = e.field("r")?;
            match ScanEvent::read_wire(bytes) {
                Ok(ev) if Some(ev.seq) == e.seq() => Some(Arc::new(ev)),
                Ok(_) => {
                    tracing::warn!(id = %e.id, "a result whose id is not its seq; skipped");
                    None
                }
                Err(err) => {
                    tracing::warn!(id = %e.id, error = %err, "skipped");
                    None
                }
            }
        })
        .collect()
}
