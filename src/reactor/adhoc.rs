//! Ad-hoc scan requests on the reactor's side: the symbols the scanner knows, and the
//! bound on symbols waiting.
//!
//! Both the WebSocket `scan` message and `POST /scan` come through here, so both see the
//! same checks: every symbol must be known (the error names the others, nothing is
//! queued), and the symbols waiting stay within `adhoc_queue`, counted over every edge of
//! the process.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use ahash::AHashSet;
use serde_json::Value;

use super::conns::ConnId;
use super::requester::Requester;
use super::shared::Shared;
use crate::bus::local::{CommandError, EdgeLink};
use crate::bus::{Command, Tag};
use crate::protocol::ErrorCode;

/// Names listed in an unknown-symbols error at most.
const NAMED: usize = 10;

/// Why a request was not queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// These symbols are not in the universe.
    Unknown(String),
    /// Past the queue bound for now; the message says how far.
    Full(String),
    /// More symbols than the queue holds at all: it can never fit.
    TooLarge(String),
    /// The scanner thread is gone.
    Gone,
}

impl Refusal {
    /// The error code and message, the same over WebSocket and HTTP.
    pub fn code(&self) -> (ErrorCode, &str) {
        match self {
            Refusal::Unknown(msg) => (ErrorCode::NotFound, msg),
            Refusal::Full(msg) => (ErrorCode::QueueFull, msg),
            Refusal::TooLarge(msg) => (ErrorCode::LimitExceeded, msg),
            Refusal::Gone => (ErrorCode::Unavailable, "the scanner is not running"),
        }
    }
}

/// The universe as the scanner announced it, and the queue's fill.
#[derive(Debug)]
pub struct Adhoc {
    edge: usize,
    universe: AHashSet<Box<str>>,
    /// Where the symbols waiting from every edge are counted.
    shared: Arc<Shared>,
    cap: usize,
}

impl Adhoc {
    /// No symbols known yet; at most `cap` symbols waiting from the edges of `shared`,
    /// this one `edge`.
    pub fn new(edge: usize, shared: Arc<Shared>, cap: usize) -> Adhoc {
        Adhoc {
            edge,
            universe: AHashSet::new(),
            shared,
            cap,
        }
    }

    /// Symbols that joined the universe.
    pub fn learn(&mut self, names: &[Box<str>]) {
        self.universe.extend(names.iter().cloned());
    }

    /// Symbols waiting in the queue.
    pub fn pending(&self) -> usize {
        self.shared.adhoc_pending.load(Ordering::Relaxed)
    }

    /// The scanner is gone: nothing queued will be answered.
    pub fn clear(&mut self) {
        self.shared.adhoc_pending.store(0, Ordering::Relaxed);
    }

    /// A request of `symbols` symbols is done: whom to answer, when this edge asked.
    /// Every edge sees every answer; the asking edge alone releases its symbols.
    pub fn done(&mut self, tag: &Tag, symbols: usize) -> Option<Requester> {
        let requester = Requester::read(tag, self.edge)?;
        Shared::release(&self.shared.adhoc_pending, symbols);
        Some(requester)
    }

    /// Checks and queues a request from `conn` (`None` for HTTP); returns the symbols
    /// waiting after it.
    pub fn request(
        &mut self,
        bus: &EdgeLink,
        symbols: Vec<String>,
        conn: Option<ConnId>,
        id: Option<Value>,
    ) -> Result<usize, Refusal> {
        let symbols: Vec<String> = symbols.into_iter().map(|s| s.to_uppercase()).collect();
        let unknown: Vec<&str> = symbols
            .iter()
            .filter(|s| !self.universe.contains(s.as_str()))
            .map(String::as_str)
            .collect();
        if !unknown.is_empty() {
            let mut msg = format!(
                "unknown symbols: {}",
                unknown[..unknown.len().min(NAMED)].join(", ")
            );
            if unknown.len() > NAMED {
                msg += &format!(" and {} more", unknown.len() - NAMED);
            }
            return Err(Refusal::Unknown(msg));
        }
        let n = symbols.len();
        if n > self.cap {
            return Err(Refusal::TooLarge(format!(
                "{n} symbols; an ad-hoc request holds at most {}",
                self.cap
            )));
        }
        let pending = &self.shared.adhoc_pending;
        let before = Shared::reserve(pending, n, self.cap).map_err(|held| {
            Refusal::Full(format!(
                "the ad-hoc queue holds {held} of {} symbols; {n} more do not fit",
                self.cap
            ))
        })?;
        let requester = Requester {
            edge: self.edge,
            conn,
            id,
        }
        .tag();
        let sent = bus.command(Command::Scan { symbols, requester });
        if sent.is_err() {
            Shared::release(pending, n);
        }
        match sent {
            Ok(()) => Ok(before + n),
            Err(CommandError::Full) => Err(Refusal::Full("the ad-hoc queue is full".into())),
            Err(CommandError::Gone) => Err(Refusal::Gone),
        }
    }
}
