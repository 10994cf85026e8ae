//! Ad-hoc scan requests on the reactor's side: the symbols the scanner knows, and the
//! bound on symbols waiting.
//!
//! Both the WebSocket `scan` message and `POST /scan` come through here, so both see the
//! same checks: every symbol must be known (the error names the others, nothing is
//! queued), and the symbols waiting stay within `adhoc_queue`.

use ahash::AHashSet;
use serde_json::Value;

use super::conns::ConnId;
use super::requester::Requester;
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

/// The universe as the scanner announced it, and the queue's fill from this edge.
#[derive(Debug)]
pub struct Adhoc {
    edge: usize,
    universe: AHashSet<Box<str>>,
    pending: usize,
    cap: usize,
}

impl Adhoc {
    /// No symbols known yet; at most `cap` symbols waiting from edge `edge`.
    pub fn new(edge: usize, cap: usize) -> Adhoc {
        Adhoc {
            edge,
            universe: AHashSet::new(),
            pending: 0,
            cap,
        }
    }

    /// Symbols that joined the universe.
    pub fn learn(&mut self, names: &[Box<str>]) {
        self.universe.extend(names.iter().cloned());
    }

    /// Symbols waiting in the queue.
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// The scanner is gone: nothing queued will be answered.
    pub fn clear(&mut self) {
        self.pending = 0;
    }

    /// A request of `symbols` symbols is done: whom to answer, when this edge asked.
    pub fn done(&mut self, tag: &Tag, symbols: usize) -> Option<Requester> {
        let requester = Requester::read(tag, self.edge)?;
        self.pending = self.pending.saturating_sub(symbols);
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
        if self.pending + n > self.cap {
            return Err(Refusal::Full(format!(
                "the ad-hoc queue holds {} of {} symbols; {n} more do not fit",
                self.pending, self.cap
            )));
        }
        let requester = Requester {
            edge: self.edge,
            conn,
            id,
        }
        .tag();
        match bus.command(Command::Scan { symbols, requester }) {
            Ok(()) => {
                self.pending += n;
                Ok(self.pending)
            }
            Err(CommandError::Full) => Err(Refusal::Full("the ad-hoc queue is full".into())),
            Err(CommandError::Gone) => Err(Refusal::Gone),
        }
    }
}
