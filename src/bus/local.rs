//! The in-process bus: a bounded crossbeam channel of events per edge, woken through the
//! edge's `mio::Waker`, and one bounded channel of commands that every edge shares.
//!
//! A result is published once and every edge gets the same `Arc`. A full edge channel
//! holds the producer back (backpressure), and a gone edge ends it: the edges going away
//! is how a process shuts down.

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

/// The producer's end: publishes to every edge, takes their commands.
#[derive(Debug)]
pub struct ProducerLink {
    edges: Vec<(Sender<Event>, Arc<Waker>)>,
    /// Commands from every edge.
    pub commands: Receiver<Command>,
}

impl ProducerLink {
    /// Sends `event` to every edge, waiting while an edge's channel is full. Edges are
    /// woken by [`wake`](ProducerLink::wake), once per batch.
    pub fn send(&self, event: Event) -> Result<(), Disconnected> {
        if let [(only, _)] = &self.edges[..] {
            return only.send(event).map_err(|_| Disconnected);
        }
        for (tx, _) in &self.edges {
            tx.send(event.clone()).map_err(|_| Disconnected)?;
        }
        Ok(())
    }

    /// Wakes every edge.
    pub fn wake(&self) -> Result<(), Disconnected> {
        for (_, waker) in &self.edges {
            // A failed wake means the edge's poll is gone: the process is ending.
            waker.wake().map_err(|_| Disconnected)?;
        }
        Ok(())
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

    /// The producer has failed: nothing sent to it would be answered.
    pub fn mark_failed(&mut self) {
        self.failed = true;
    }
}

/// A bus for one producer and an edge per waker: `events` results waiting per edge at
/// most, `commands` commands waiting at most.
pub fn bus(wakers: &[Arc<Waker>], events: usize, commands: usize) -> (ProducerLink, Vec<EdgeLink>) {
    let (commands_tx, commands_rx) = bounded(commands);
    let (edges, links) = wakers
        .iter()
        .map(|waker| {
            let (tx, rx) = bounded(events);
            let link = EdgeLink {
                events: rx,
                commands: commands_tx.clone(),
                failed: false,
            };
            ((tx, Arc::clone(waker)), link)
        })
        .unzip();
    let producer = ProducerLink {
        edges,
        commands: commands_rx,
    };
    (producer, links)
}
