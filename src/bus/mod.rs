//! The seam between the producer (scanner, one per deployment) and the edges (reactors
//! that serve sockets): the only two message types that cross it.
//!
//! The producer publishes [`Event`]s; edges send [`Command`]s back. A command that wants
//! an answer carries a [`Tag`] the edge made; the producer hands it back untouched and
//! never looks inside, so it knows nothing of connections or request ids. The bus that
//! carries them is [`local`] (crossbeam channels and each edge's `mio::Waker`).

pub mod local;

use std::sync::Arc;

use crate::event::ScanEvent;
use crate::scanner::ScannerStatus;

/// Producer to edges.
#[derive(Debug, Clone)]
pub enum Event {
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
    /// The producer failed with this message and has ended.
    Failed(Arc<str>),
}

/// Edges to producer.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Resume producing results.
    Start,
    /// Stop producing results (ad-hoc scans are still answered).
    Stop,
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
