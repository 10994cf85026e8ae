//! The edge's mirror of the alert history: built from the producer's `Alert` events, so
//! `GET /alerts` is answered without asking anyone, and the counters `/metrics` shows.

use crate::alerts::{Alert, AlertLog, AlertNote, AlertStats, Change};

/// The alerts an edge knows of.
#[derive(Debug)]
pub struct AlertMirror {
    log: AlertLog,
    /// The producer's counters, as last published.
    pub stats: AlertStats,
}

impl AlertMirror {
    /// Holding at most `capacity` alerts, as the producer's history does.
    pub fn new(capacity: usize, loaded: impl IntoIterator<Item = Alert>) -> AlertMirror {
        let mut log = AlertLog::new(capacity);
        for alert in loaded {
            log.push(alert);
        }
        AlertMirror {
            log,
            stats: AlertStats::default(),
        }
    }

    /// Follows one change.
    pub fn apply(&mut self, note: &AlertNote) {
        match note.change {
            Change::Raised { .. } => self.log.push(note.alert.clone()),
            Change::Acked => {
                if let Some(at) = note.alert.acked_at {
                    self.log.set_acked(note.alert.id, at);
                }
            }
        }
    }

    /// The history.
    pub fn log(&self) -> &AlertLog {
        &self.log
    }
}
