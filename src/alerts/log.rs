//! The alert history: the newest alerts, oldest first, with acknowledgment and the
//! queries `GET /alerts` makes. The producer keeps the authoritative one; each edge keeps
//! a mirror of it.

use std::collections::VecDeque;
use std::time::SystemTime;

use super::{Alert, Severity};

/// What `GET /alerts` asks for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Query {
    /// Only unacknowledged alerts.
    pub unacked: bool,
    /// Only this symbol (case-insensitive).
    pub symbol: Option<String>,
    /// Only this severity.
    pub severity: Option<Severity>,
    /// At most this many.
    pub limit: usize,
}

/// The outcome of an acknowledgment.
#[derive(Debug, Clone, PartialEq)]
pub enum Acked {
    /// Acknowledged now.
    Now(Alert),
    /// It already was; acknowledging again changes nothing.
    Already(Alert),
    /// No such alert (never raised, or aged out of the history).
    NotFound,
}

/// The newest alerts, oldest first, ids ascending.
#[derive(Debug, Clone)]
pub struct AlertLog {
    alerts: VecDeque<Alert>,
    capacity: usize,
}

impl AlertLog {
    /// An empty log holding at most `capacity` alerts.
    pub fn new(capacity: usize) -> AlertLog {
        AlertLog {
            alerts: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// Appends, dropping the oldest past the capacity.
    pub fn push(&mut self, alert: Alert) {
        if self.alerts.len() == self.capacity {
            self.alerts.pop_front();
        }
        self.alerts.push_back(alert);
    }

    fn find(&mut self, id: u64) -> Option<&mut Alert> {
        // Ids ascend through the log.
        let i = self.alerts.binary_search_by_key(&id, |a| a.id).ok()?;
        self.alerts.get_mut(i)
    }

    /// Acknowledges alert `id` at `at`, once.
    pub fn ack(&mut self, id: u64, at: SystemTime) -> Acked {
        match self.find(id) {
            None => Acked::NotFound,
            Some(a) if a.acked_at.is_some() => Acked::Already(a.clone()),
            Some(a) => {
                a.acked_at = Some(at);
                Acked::Now(a.clone())
            }
        }
    }

    /// Records that alert `id` was acknowledged at `at` (a mirror following the producer).
    pub fn set_acked(&mut self, id: u64, at: SystemTime) {
        if let Some(a) = self.find(id) {
            a.acked_at = Some(at);
        }
    }

    /// Alerts matching `q`, newest first.
    pub fn query(&self, q: &Query) -> Vec<&Alert> {
        self.alerts
            .iter()
            .rev()
            .filter(|a| !q.unacked || a.acked_at.is_none())
            .filter(|a| {
                q.symbol
                    .as_ref()
                    .is_none_or(|s| a.symbol.eq_ignore_ascii_case(s))
            })
            .filter(|a| q.severity.is_none_or(|s| a.severity == s))
            .take(q.limit)
            .collect()
    }

    /// Alerts held.
    pub fn len(&self) -> usize {
        self.alerts.len()
    }

    /// None held.
    pub fn is_empty(&self) -> bool {
        self.alerts.is_empty()
    }

    /// Unacknowledged alerts held.
    pub fn unacked(&self) -> usize {
        self.alerts.iter().filter(|a| a.acked_at.is_none()).count()
    }

    /// Every alert, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Alert> {
        self.alerts.iter()
    }

    /// The highest id held.
    pub fn last_id(&self) -> Option<u64> {
        self.alerts.back().map(|a| a.id)
    }
}
