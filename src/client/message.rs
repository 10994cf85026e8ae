//! What the client reads off the wire, typed; and what it tells its caller.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::event::EventKind;

/// One `result` message: a scan result event and its envelope's timestamp.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultMessage {
    /// Sequence number in the server run.
    pub seq: u64,
    /// `new`, `update` or `clear`.
    pub event: EventKind,
    /// Ticker.
    pub symbol: String,
    /// Scan name; a string so that scans added later do not break older clients.
    pub scan: String,
    /// How far past its threshold.
    pub score: f64,
    /// Last price.
    pub price: f64,
    /// Change from the reference price, percent.
    pub change_pct: f64,
    /// Volume of the update.
    pub volume: u64,
    /// Volume over its recent average.
    pub volume_ratio: f64,
    /// RSI, when known.
    #[serde(default)]
    pub rsi: Option<f64>,
    /// The data source's own time of the update, when it has one.
    #[serde(default)]
    pub source_ts: Option<String>,
    /// From an ad-hoc scan request.
    #[serde(default)]
    pub adhoc: bool,
    /// This client's subscriptions that take the result (on the wire: the connection's
    /// subscriptions it matched; none in a snapshot's rows).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subscriptions: Vec<String>,
    /// This client's subscriptions the result leaves: an `update` that dropped out of
    /// their value filters, so their tables drop the row (PROTOCOL.md, "Leaving a filter").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub left: Vec<String>,
    /// When the server produced the result (the envelope's `timestamp`), RFC 3339;
    /// empty in a snapshot's rows. Not part of `data` on the wire.
    #[serde(default, skip_serializing)]
    pub timestamp: String,
}

/// The reply to a `subscribe`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Subscribed {
    /// Subscription name.
    pub subscription: String,
    /// The server run.
    pub epoch: String,
    /// The newest result sequence number when the server subscribed it.
    pub seq: u64,
    /// Nothing after `since` was lost.
    pub recovered: bool,
    /// Results replayed.
    #[serde(default)]
    pub replayed: u64,
}

/// Connection state.
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    /// Opening a connection.
    Connecting,
    /// Connected; subscriptions are (re)sent.
    Connected,
    /// Waiting `delay` before attempt `attempt` (from 1) to connect again.
    Reconnecting {
        /// Attempt number since the last good connection.
        attempt: u32,
        /// The jittered delay before it.
        delay: Duration,
    },
    /// Stopped for good: the caller closed it, or the server said not to come back.
    Closed {
        /// The close code that ended it, when one did.
        code: Option<u16>,
        /// Why, in words.
        reason: String,
    },
}

/// What the client tells its caller, through callbacks and the events channel.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The connection state changed.
    State(State),
    /// A connection ended; `code` 1006 when it ended without a close frame.
    Disconnected {
        /// Close code.
        code: u16,
        /// Reason given or observed.
        reason: String,
    },
    /// A subscription is in place on the server (after every connect).
    Subscribed(Subscribed),
    /// A result, for the subscriptions in its `subscriptions`.
    Result(ResultMessage),
    /// The active opportunities matching a subscription as of `seq`.
    Snapshot {
        /// Subscription name.
        subscription: String,
        /// As of this result.
        seq: u64,
        /// The rows.
        results: Vec<ResultMessage>,
    },
    /// Results may have been lost on a subscription: the server could not resume it
    /// from where it stood (its history is too short, or the server restarted).
    Gap {
        /// Subscription name.
        subscription: String,
        /// The last result delivered before the gap.
        since: u64,
        /// The run it belonged to.
        epoch: String,
        /// The server's run now; differs from `epoch` after a server restart.
        server_epoch: String,
    },
    /// The server removed a subscription.
    Unsubscribed {
        /// Subscription name.
        subscription: String,
    },
    /// A `status` message.
    Status(Value),
    /// An `alert` message.
    Alert(Value),
    /// An `acked` message (any client's acknowledgment).
    Acked(Value),
    /// An answer to a queued request (`scan`, `ack`): the message's type and data.
    Reply {
        /// The request id `scan`/`ack` returned.
        id: u64,
        /// The reply's type (`status`, `acked`, `error`).
        kind: String,
        /// Its data.
        data: Value,
    },
    /// An `error` message. A `rate_limited` refusal of a queued request is not reported:
    /// it is not the request's answer, and the request is sent again after a hold.
    Error {
        /// Error code, as PROTOCOL.md lists them.
        code: String,
        /// Human-readable message.
        message: String,
        /// The request it answers, when it was a queued request.
        id: Option<u64>,
        /// The subscription it is about, when it answers a subscribe.
        subscription: Option<String>,
    },
}

/// A server message, parsed as far as routing needs.
#[derive(Debug, Deserialize)]
pub(crate) struct Envelope {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub timestamp: Option<String>,
    #[serde(default)]
    pub data: Value,
    #[serde(default)]
    pub id: Option<Value>,
}

/// The `error` payload.
#[derive(Debug, Deserialize)]
pub(crate) struct ErrorData {
    pub code: String,
    #[serde(default)]
    pub message: String,
}

/// The `snapshot` payload.
#[derive(Debug, Deserialize)]
pub(crate) struct SnapshotData {
    pub subscription: String,
    pub seq: u64,
    pub results: Vec<ResultMessage>,
}
