//! The in-process bus: a bounded crossbeam channel of events per edge, woken through the
//! edge's `mio::Waker`, and one bounded channel of commands that every edge shares.
//!
//! A result is published once and every edge gets the same `Arc`. A full edge channel
//! holds the producer back (backpressure). A gone edge is forgotten, and the last one
//! going away ends the producer: that is how a process shuts down. An edge may attach
//! to a running producer: it gets a cut first, then everything after it.

use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};
use mio::Waker;

use super::{Command, Event};

/// The edges are gone; the producer ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disconnected;

/// Why a command was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandError {
    /// The producer has this many waiting already.
    Full,
    /// The producer has failed or ended.
    Gone,
}

/// An edge as the producer sees it: where its events go and how to wake it (a bridge
/// thread that blocks on the channel needs no waking).
pub type EdgeEnd = (Sender<Event>, Option<Arc<Waker>>);

/// The producer's end: publishes to every edge, takes their commands and new edges.
#[derive(Debug)]
pub struct ProducerLink {
    edges: Vec<EdgeEnd>,
    /// Commands from every edge.
    pub commands: Receiver<Command>,
    /// Edges attaching to the running producer.
    pub attach: Receiver<EdgeEnd>,
}

impl ProducerLink {
    /// Sends `event` to every edge, waiting while an edge's channel is full. Edges are
    /// woken by [`wake`](ProducerLink::wake), once per batch.
    pub fn send(&mut self, event: Event) -> Result<(), Disconnected> {
        if let [(only, _)] = &self.edges[..] {
            if only.send(event).is_err() {
                self.edges.clear();
            }
        } else {
            // A gone edge is forgotten; the others go on.
            self.edges.retain(|(tx, _)| tx.send(event.clone()).is_ok());
        }
        if self.edges.is_empty() {
            return Err(Disconnected);
        }
        Ok(())
    }

    /// Wakes every edge.
    pub fn wake(&self) -> Result<(), Disconnected> {
        for waker in self.edges.iter().filter_map(|(_, w)| w.as_ref()) {
            // A failed wake means that edge's poll is gone; its channel tells the rest.
            let _ = waker.wake();
        }
        if self.edges.is_empty() {
            return Err(Disconnected);
        }
        Ok(())
    }

    /// Adds an edge that has had its cut.
    pub fn add(&mut self, edge: EdgeEnd) {
        self.edges.push(edge);
    }
}

/// Attaches edges to a running producer; any thread may hold one.
#[derive(Debug, Clone)]
pub struct Attacher {
    attach: Sender<EdgeEnd>,
    commands: Sender<Command>,
    events: usize,
}

impl Attacher {
    /// A new edge woken through `waker` (`None` for a thread that blocks on its events):
    /// its first event is the cut.
    pub fn attach(&self, waker: Option<Arc<Waker>>) -> Result<EdgeLink, Disconnected> {
        let (tx, rx) = bounded(self.events);
        self.attach.send((tx, waker)).map_err(|_| Disconnected)?;
        Ok(EdgeLink {
            events: rx,
            commands: self.commands.clone(),
            failed: false,
        })
    }
}

/// An edge's end: the producer's events, and a way to send it commands.
#[derive(Debug)]
pub struct EdgeLink {
    /// Published events, in order.
    pub events: Receiver<Event>,
    commands: Sender<Command>,
    /// The producer reported a failure: refuse commands now, even before its thread has
    /// ended and dropped its side of the channels.
    failed: bool,
}

impl EdgeLink {
    /// Sends a command without waiting.
    pub fn command(&self, cmd: Command) -> Result<(), CommandError> {
        if self.failed {
            return Err(CommandError::Gone);
        }
        self.commands.try_send(cmd).map_err(|e| match e {
            TrySendError::Full(_) => CommandError::Full,
            TrySendError::Disconnected(_) => CommandError::Gone,
        })
    }

    /// A sender of commands that waits while the producer's queue is full: for a bridge
    /// thread, which may wait, not for an edge.
    pub fn command_sender(&self) -> Sender<Command> {
        self.commands.clone()
    }

    /// The producer has failed: nothing sent to it would be answered.
    pub fn mark_failed(&mut self) {
        self.failed = true;
    }
}

/// A bus for one producer and an edge per waker (`None` for a bridge thread that blocks
/// on its channel): `events` results waiting per edge at most, `commands` commands
/// waiting at most; and a way to attach more edges later.
pub fn bus(
    wakers: &[Option<Arc<Waker>>],
    events: usize,
    commands: usize,
) -> (ProducerLink, Vec<EdgeLink>, Attacher) {
    let (commands_tx, commands_rx) = bounded(commands);
    let (attach_tx, attach_rx) = bounded(16);
    let (edges, links) = wakers
        .iter()
        .map(|waker| {
            let (tx, rx) = bounded(events);
            let link = EdgeLink {
                events: rx,
                commands: commands_tx.clone(),
                failed: false,
            };
            ((tx, waker.clone()), link)
        })
        .unzip();
    let producer = ProducerLink {
        edges,
        commands: commands_rx,
        attach: attach_rx,
    };
    let attacher = Attacher {
        attach: attach_tx,
        commands: commands_tx,
        events,
    };
    (producer, links, attacher)
}
