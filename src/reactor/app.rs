//! What an edge answers from, apart from its connections: the history ring and active
//! set, the status, the bus to the producer, the ad-hoc queue bound, access rules,
//! alerts, counters and the per-connection limits.
//!
//! Handlers (the WebSocket session, the HTTP API) take `&mut App` beside the one
//! connection they serve; nothing here holds a socket.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde_json::Value;

use super::access::Access;
use super::adhoc::Adhoc;
use super::conns::ConnId;
use super::mirror::AlertMirror;
use super::requester::Requester;
use super::session::{Health, Limits, StatusView};
use super::shared::Shared;
use crate::bus::Command;
use crate::bus::local::{CommandError, EdgeLink};
use crate::history::History;
use crate::metrics::Metrics;

/// The edge's state beside its connections.
pub struct App {
    /// Which edge this is, in requester tags.
    pub edge: usize,
    /// The result history and active set.
    pub history: History,
    /// Current status, as the producer last reported it; [`App::status`] adds the
    /// process's counts.
    pub status: StatusView,
    /// This edge's end of the bus to the producer.
    pub bus: EdgeLink,
    /// Ad-hoc requests: known symbols and the queue bound.
    pub adhoc: Adhoc,
    /// The Host check, the token and the origin allow-list.
    pub access: Access,
    /// The alert history as the producer publishes it, and its counters.
    pub alerts: AlertMirror,
    /// This edge's counters (in `shared` too, for `/metrics`).
    pub metrics: Arc<Metrics>,
    /// What the edges of this process share.
    pub shared: Arc<Shared>,
    /// Per-connection limits.
    pub limits: Limits,
    /// Why the scanner thread ended, once it has.
    pub scanner_failure: Option<String>,
    /// A resume from before the ring asks the bus for what it keeps (an edge process
    /// whose bus keeps more than the ring).
    pub deep_history: bool,
    /// TLS settings, when the port speaks TLS, and the generation they are of.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// See [`Shared::tls_since`](super::shared::Shared::tls_since).
    pub tls_generation: u64,
    /// The body of `GET /scans`, encoded once.
    pub scans: Arc<str>,
    /// The updates this edge sent in place of skipped ones, for replays.
    pub superseded: super::conflate::Superseded,
}

impl App {
    /// The status to show: the producer's, with the subscribers and ad-hoc symbols
    /// waiting counted over every edge of the process.
    pub fn status(&self) -> StatusView {
        let mut status = self.status;
        status.subscribers = self.shared.subscribers.load(Ordering::Relaxed);
        status.scanner.adhoc_queue = self.adhoc.pending();
        if let Some((problem, _)) = self.shared.bus.current() {
            status.health = Health::Degraded;
            status.reason = status.reason.or(Some(problem.reason()));
        }
        status
    }

    /// A connection took its first subscription (`true`) or gave up its last.
    pub fn count_subscriber(&self, subscribed: bool) {
        if subscribed {
            self.shared.subscribers.fetch_add(1, Ordering::Relaxed);
        } else {
            Shared::release(&self.shared.subscribers, 1);
        }
    }

    /// Asks the producer to acknowledge `alert_id` for connection `conn` (request `id`);
    /// the answer comes back as an `AckDone` event.
    pub fn ask_ack(
        &self,
        alert_id: String,
        conn: Option<ConnId>,
        id: Option<Value>,
    ) -> Result<(), CommandError> {
        let requester = Requester {
            edge: self.edge,
            conn,
            id,
        }
        .tag();
        self.bus.command(Command::Ack {
            alert_id,
            requester,
        })
    }
}

/// The connection a WebSocket message came on, as the answers need it.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    /// Which connection, to be answered when an ad-hoc scan is done.
    pub id: ConnId,
    /// It holds a subscription now (the edge's own count catches up after the
    /// messages read in this turn).
    pub counted: bool,
    /// It was counted in `App::status` when the turn began.
    counted_in_app: bool,
}

impl Caller {
    /// Connection `id`, counted in the status's `subscribers` as `counted` says.
    pub fn new(id: ConnId, counted: bool) -> Caller {
        Caller {
            id,
            counted,
            counted_in_app: counted,
        }
    }

    /// The status as this connection should see it, itself counted as it stands now.
    pub fn status(&self, app: &App) -> StatusView {
        let mut status = app.status();
        status.subscribers =
            status.subscribers + usize::from(self.counted) - usize::from(self.counted_in_app);
        status
    }
}
