//! The seam between the producer (scanner, one per deployment) and the edges (reactors
//! that serve sockets): the only two message types that cross it.
//!
//! The producer publishes [`Event`]s; edges send [`Command`]s back. A command that wants
//! an answer carries a [`Tag`] the edge made; the producer hands it back untouched and
//! never looks inside, so it knows nothing of connections or request ids. The bus that
//! carries them is [`local`] (crossbeam channels and each edge's `mio::Waker`), and
//! between processes [`redis`] (Redis Streams, bridged onto the local bus at each end).

pub mod health;
pub mod local;
pub mod redis;

use std::sync::Arc;

use crate::alerts::{Alert, AlertNote, AlertStats};
use crate::event::ScanEvent;
use crate::history::History;
use crate::scanner::ScannerStatus;

/// Producer to edges.
#[derive(Debug, Clone)]
pub enum Event {
    /// The first event a late edge gets: the state as of `history.head()`; every event
    /// after it follows on from there.
    Cut(Box<Cut>),
    /// A published result, encoded once; every edge gets the same `Arc`.
    Result(Arc<ScanEvent>),
    /// Progress or a state change.
    Status(ScannerStatus),
    /// Symbols that joined the universe (edges refuse ad-hoc scans of others).
    Symbols(Arc<[Box<str>]>),
    /// An ad-hoc scan is done; its results were published just before.
    AdhocDone {
        /// The requester's tag, as it came.
        requester: Tag,
        /// Symbols it held.
        symbols: usize,
        /// Results it published.
        results: usize,
    },
    /// An alert raised or acknowledged.
    Alert(Arc<AlertNote>),
    /// The alert engine's counters changed.
    AlertStats(AlertStats),
    /// An acknowledgment is answered: the alert as it stands, or `None` when there is no
    /// such alert. Its `Alert` event, if it changed anything, came just before.
    AckDone {
        /// The requester's tag, as it came.
        requester: Tag,
        /// The alert asked for, as it came.
        alert_id: Box<str>,
        /// The alert's wire form.
        alert: Option<Arc<str>>,
    },
    /// The producer failed with this message and has ended.
    Failed(Arc<str>),
    /// Results older than the edge's ring, as asked for with [`Command::Older`]: as many
    /// of them as the bus still keeps, in order (none when it keeps none).
    Older {
        /// The requester's tag, as it came.
        requester: Tag,
        /// The results, consecutive, oldest first.
        results: Arc<[Arc<ScanEvent>]>,
    },
}

/// What an edge needs to serve from, as one consistent cut at a `seq`.
#[derive(Debug, Clone)]
pub struct Cut {
    /// The history tail, the active set and the run's epoch.
    pub history: History,
    /// The last status.
    pub status: ScannerStatus,
    /// The alert history, oldest first.
    pub alerts: Vec<Alert>,
    /// The alert counters.
    pub alert_stats: AlertStats,
    /// Every symbol the universe holds.
    pub symbols: Vec<Box<str>>,
}

/// Edges to producer.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Resume producing results.
    Start,
    /// Stop producing results (ad-hoc scans are still answered).
    Stop,
    /// Acknowledge an alert.
    Ack {
        /// `a-17`.
        alert_id: String,
        /// Handed back in [`Event::AckDone`].
        requester: Tag,
    },
    /// Send the results `from..=to` that the bus keeps beyond the edge's ring: a resume
    /// from further back than the ring reaches. Answered by the bus bridge of an edge
    /// process, which reads them from the stream; a producer answers with none.
    Older {
        /// First `seq` wanted.
        from: u64,
        /// Last `seq` wanted.
        to: u64,
        /// Handed back in [`Event::Older`].
        requester: Tag,
    },
    /// Scan these symbols now (known ones, upper case).
    Scan {
        /// The symbols.
        symbols: Vec<String>,
        /// Handed back in [`Event::AdhocDone`].
        requester: Tag,
    },
}

/// Who asked, in a form only the asking edge reads. Bytes, so any bus can carry it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag(pub Box<[u8]>);
