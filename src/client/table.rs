//! A subscription's live table: the open opportunities by (symbol, scan), kept from a
//! `snapshot` plus `new`/`update`/`clear`/`left`, readable from any thread.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::message::ResultMessage;
use crate::event::EventKind;

/// The active opportunities of one subscription, by (symbol, scan): kept from `snapshot`
/// plus `new`/`update`/`clear`.
#[derive(Debug, Clone, Default)]
pub struct Table {
    rows: HashMap<(String, String), ResultMessage>,
    /// The result the table is current to.
    pub seq: u64,
}

impl Table {
    /// The rows, in no particular order.
    pub fn rows(&self) -> impl Iterator<Item = &ResultMessage> {
        self.rows.values()
    }

    /// How many rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// No rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The row for `symbol` and `scan`.
    pub fn get(&self, symbol: &str, scan: &str) -> Option<&ResultMessage> {
        self.rows.get(&(symbol.to_owned(), scan.to_owned()))
    }

    pub(super) fn reset(&mut self, seq: u64, results: &[ResultMessage]) {
        self.rows = results
            .iter()
            .map(|r| ((r.symbol.clone(), r.scan.clone()), r.clone()))
            .collect();
        self.seq = seq;
    }

    /// `r` leaves this table's filters: its row goes.
    pub(super) fn leave(&mut self, r: &ResultMessage) {
        self.seq = r.seq;
        self.rows.remove(&(r.symbol.clone(), r.scan.clone()));
    }

    pub(super) fn apply(&mut self, r: &ResultMessage) {
        self.seq = r.seq;
        // An ad-hoc result answers a request: the server keeps it out of the open set (and
        // so out of snapshots), and no `clear` will ever end it.
        if r.adhoc {
            return;
        }
        let key = (r.symbol.clone(), r.scan.clone());
        match r.event {
            EventKind::New | EventKind::Update => {
                self.rows.insert(key, r.clone());
            }
            EventKind::Clear => {
                self.rows.remove(&key);
            }
        }
    }
}

/// A shared handle on a subscription's live table, readable from any thread.
#[derive(Debug, Clone, Default)]
pub struct TableHandle(Arc<Mutex<Table>>);

impl TableHandle {
    /// Locks the table for reading.
    pub fn lock(&self) -> MutexGuard<'_, Table> {
        // A callback that panicked mid-update leaves a table still worth reading.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}
