//! Counters and histograms of the edges, rendered in the Prometheus text format.
//!
//! Each edge owns a [`Metrics`] and alone writes it; `/metrics` on any edge adds up every
//! edge's (see `cells` for why that costs the hot path nothing).

mod cells;
mod render;

use std::time::Duration;

pub use cells::{Counter, Histogram, Merged, Tally};
pub use render::render;

use crate::alerts::AlertCounters;
use crate::protocol::ErrorCode;

/// Seconds from 10 µs to 1 s: publish-to-flush spans the fast path and a stalled loop.
const LATENCY_BOUNDS: &[f64] = &[
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0,
];

/// Results per channel drain.
const BATCH_BOUNDS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0];

/// Scan cycle durations, seconds.
const CYCLE_BOUNDS: &[f64] = &[0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0];

/// Everything `/metrics` reports that one edge counts.
#[derive(Debug)]
pub struct Metrics {
    /// Connections accepted.
    pub accepted: Counter,
    /// Connections refused with 503 at the connection limit.
    pub rejected_full: Counter,
    /// `accept` failures (EMFILE and the like).
    pub accept_errors: Counter,
    /// WebSocket handshakes completed.
    pub upgrades: Counter,
    /// WebSocket frames queued for sending.
    pub frames_sent: Counter,
    /// Bytes written to sockets.
    pub bytes_sent: Counter,
    /// `write` calls on sockets.
    pub write_calls: Counter,
    /// Results received from the scanner.
    pub events_published: Counter,
    /// Result frames queued (one per connection per result).
    pub deliveries: Counter,
    /// Results a lagging edge skipped as superseded (PROTOCOL.md, "Overload").
    pub conflated: Counter,
    /// Results replayed from history.
    pub replayed: Counter,
    /// Connections closed with 4008.
    pub slow_consumer_closes: Counter,
    /// Client messages received.
    pub messages_received: Counter,
    /// `error` replies, by code.
    pub errors: [Counter; ErrorCode::ALL.len()],
    /// Close codes the server sent.
    pub closes: Tally,
    /// HTTP responses by status.
    pub http_responses: Tally,
    /// Results per channel drain.
    pub batch_sizes: Histogram,
    /// From the scanner's publish to the end of the flush that carried it.
    pub publish_to_flush: Histogram,
    /// Scan cycle durations, as the scanner reports them.
    pub cycle_seconds: Histogram,
    /// TLS handshakes that failed, by reason (the order of `reactor::transport::FAILURES`).
    pub tls_failures: [Counter; 6],
    /// Gauge: open connections on this edge, as of its last sweep.
    pub connections: Counter,
    /// Gauge: open WebSocket connections, as of the edge's last sweep.
    pub websockets: Counter,
    /// Gauge: bytes waiting in out buffers, as of the edge's last sweep.
    pub pending_bytes: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            accepted: Counter::default(),
            rejected_full: Counter::default(),
            accept_errors: Counter::default(),
            upgrades: Counter::default(),
            frames_sent: Counter::default(),
            bytes_sent: Counter::default(),
            write_calls: Counter::default(),
            events_published: Counter::default(),
            deliveries: Counter::default(),
            conflated: Counter::default(),
            replayed: Counter::default(),
            slow_consumer_closes: Counter::default(),
            messages_received: Counter::default(),
            errors: std::array::from_fn(|_| Counter::default()),
            // Close codes: the protocol's (1000s) and the application's (4000s).
            closes: Tally::new(1000..=4999),
            http_responses: Tally::new(100..=599),
            batch_sizes: Histogram::new(BATCH_BOUNDS),
            publish_to_flush: Histogram::new(LATENCY_BOUNDS),
            cycle_seconds: Histogram::new(CYCLE_BOUNDS),
            tls_failures: std::array::from_fn(|_| Counter::default()),
            connections: Counter::default(),
            websockets: Counter::default(),
            pending_bytes: Counter::default(),
        }
    }
}

/// The bus between processes, as `/metrics` shows it.
#[derive(Debug, Clone, Copy, Default)]
pub struct BusGauges {
    /// No problem now.
    pub up: bool,
    /// How often each problem began (unreachable, no producer).
    pub problems: [u64; 2],
    /// Results the producer dropped while Redis was away.
    pub dropped: u64,
}

/// Gauges of the whole process, read at render time.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauges {
    /// The bus, when there is one between processes.
    pub bus: Option<BusGauges>,
    /// Open connections of every kind.
    pub connections: usize,
    /// Connections holding at least one subscription.
    pub subscribers: usize,
    /// Results in the history ring.
    pub history_len: usize,
    /// Open opportunities.
    pub active: usize,
    /// Symbols the scanner tracks.
    pub symbols: u64,
    /// Symbols waiting in ad-hoc requests.
    pub adhoc_queue: usize,
    /// 1 while the scanner produces results, 0 when stopped.
    pub scanner_running: bool,
    /// What the scanner counted (cycles, updates, evaluations, bad input).
    pub cycles: u64,
    /// Bars or ticks the scanner took in.
    pub updates: u64,
    /// Symbol evaluations.
    pub evaluated: u64,
    /// Malformed input rows skipped.
    pub bad_input: u64,
    /// What the alert engine counted.
    pub alerts: AlertCounters,
    /// Alerts in the history.
    pub alert_history: usize,
    /// Of them, not acknowledged.
    pub alerts_unacked: usize,
    /// The webhook's sent, failed attempts, given up and dropped, when there is one.
    pub webhook: Option<[u64; 4]>,
}

impl Metrics {
    /// Counts an `error` reply.
    pub fn count_error(&self, code: ErrorCode) {
        if let Some(i) = ErrorCode::ALL.iter().position(|c| *c == code) {
            self.errors[i].inc();
        }
    }

    /// Counts a close code sent.
    pub fn count_close(&self, code: u16) {
        self.closes.count(code);
    }

    /// Counts an HTTP response.
    pub fn count_http(&self, status: u16) {
        self.http_responses.count(status);
    }

    /// Records the publish-to-flush latency of one result.
    pub fn observe_latency(&self, latency: Duration) {
        self.publish_to_flush.observe(latency.as_secs_f64());
    }
}
