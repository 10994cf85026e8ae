//! Counters and histograms of the reactor, rendered in the Prometheus text format.
//!
//! Owned by the reactor thread alone, so plain integers: no atomics on the hot path.

use std::fmt::Write;
use std::time::Duration;

use ahash::AHashMap;

use crate::alerts::AlertCounters;
use crate::protocol::ErrorCode;

/// A fixed-bucket histogram.
#[derive(Debug, Clone)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    /// A histogram with these upper bounds (ascending); `+Inf` is implied.
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    /// Records one observation.
    pub fn observe(&mut self, value: f64) {
        if let Some(i) = self.bounds.iter().position(|&b| value <= b) {
            self.counts[i] += 1;
        }
        self.sum += value;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            cumulative += count;
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum {}", self.sum);
        let _ = writeln!(out, "{name}_count {}", self.count);
    }
}

/// Seconds from 10 µs to 1 s: publish-to-flush spans the fast path and a stalled loop.
const LATENCY_BOUNDS: &[f64] = &[
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0,
];

/// Results per channel drain.
const BATCH_BOUNDS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0];

/// Scan cycle durations, seconds.
const CYCLE_BOUNDS: &[f64] = &[0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0];

/// Everything `/metrics` reports that the reactor counts.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Connections accepted.
    pub accepted: u64,
    /// Connections refused with 503 at the connection limit.
    pub rejected_full: u64,
    /// `accept` failures (EMFILE and the like).
    pub accept_errors: u64,
    /// WebSocket handshakes completed.
    pub upgrades: u64,
    /// WebSocket frames queued for sending.
    pub frames_sent: u64,
    /// Bytes written to sockets.
    pub bytes_sent: u64,
    /// `write` calls on sockets.
    pub write_calls: u64,
    /// Results received from the scanner.
    pub events_published: u64,
    /// Result frames queued (one per connection per result).
    pub deliveries: u64,
    /// Results replayed from history.
    pub replayed: u64,
    /// Connections closed with 4008.
    pub slow_consumer_closes: u64,
    /// Client messages received.
    pub messages_received: u64,
    /// `error` replies, by code.
    pub errors: [u64; ErrorCode::ALL.len()],
    /// Close codes the server sent.
    pub closes: AHashMap<u16, u64>,
    /// HTTP responses by status.
    pub http_responses: AHashMap<u16, u64>,
    /// Results per channel drain.
    pub batch_sizes: Histogram,
    /// From the scanner's publish to the end of the flush that carried it.
    pub publish_to_flush: Histogram,
    /// Scan cycle durations, as the scanner reports them.
    pub cycle_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            accepted: 0,
            rejected_full: 0,
            accept_errors: 0,
            upgrades: 0,
            frames_sent: 0,
            bytes_sent: 0,
            write_calls: 0,
            events_published: 0,
            deliveries: 0,
            replayed: 0,
            slow_consumer_closes: 0,
            messages_received: 0,
            errors: [0; ErrorCode::ALL.len()],
            closes: AHashMap::new(),
            http_responses: AHashMap::new(),
            batch_sizes: Histogram::new(BATCH_BOUNDS),
            publish_to_flush: Histogram::new(LATENCY_BOUNDS),
            cycle_seconds: Histogram::new(CYCLE_BOUNDS),
        }
    }
}

/// Gauges read at render time.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauges {
    /// Open connections of every kind.
    pub connections: usize,
    /// Open WebSocket connections.
    pub websockets: usize,
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
    /// Bytes waiting in out buffers.
    pub pending_bytes: usize,
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
    pub fn count_error(&mut self, code: ErrorCode) {
        if let Some(i) = ErrorCode::ALL.iter().position(|c| *c == code) {
            self.errors[i] += 1;
        }
    }

    /// Counts a close code sent.
    pub fn count_close(&mut self, code: u16) {
        *self.closes.entry(code).or_default() += 1;
    }

    /// Counts an HTTP response.
    pub fn count_http(&mut self, status: u16) {
        *self.http_responses.entry(status).or_default() += 1;
    }

    /// Records the publish-to-flush latency of one result.
    pub fn observe_latency(&mut self, latency: Duration) {
        self.publish_to_flush.observe(latency.as_secs_f64());
    }

    /// The Prometheus text exposition.
    pub fn render(&self, g: &Gauges) -> String {
        let mut out = String::with_capacity(4096);
        let gauges = [
            (
                "connections_open",
                "Open connections.",
                g.connections as u64,
            ),
            (
                "websocket_connections_open",
                "Open WebSocket connections.",
                g.websockets as u64,
            ),
            (
                "subscribers",
                "Connections with at least one subscription.",
                g.subscribers as u64,
            ),
            (
                "history_results",
                "Results retained for resume.",
                g.history_len as u64,
            ),
            (
                "active_opportunities",
                "Opportunities open now.",
                g.active as u64,
            ),
            (
                "out_buffer_bytes",
                "Bytes waiting in out buffers.",
                g.pending_bytes as u64,
            ),
            ("scanner_symbols", "Symbols the scanner tracks.", g.symbols),
            (
                "adhoc_queue_symbols",
                "Symbols waiting in ad-hoc scan requests.",
                g.adhoc_queue as u64,
            ),
            (
                "scanner_running",
                "1 while the scanner produces results.",
                u64::from(g.scanner_running),
            ),
        ];
        for (name, help, value) in gauges {
            metric(&mut out, name, "gauge", help, value);
        }
        let counters = [
            (
                "connections_accepted_total",
                "Connections accepted.",
                self.accepted,
            ),
            (
                "connections_rejected_total",
                "Connections refused at the limit.",
                self.rejected_full,
            ),
            (
                "accept_errors_total",
                "accept() failures.",
                self.accept_errors,
            ),
            (
                "websocket_upgrades_total",
                "WebSocket handshakes completed.",
                self.upgrades,
            ),
            (
                "frames_sent_total",
                "WebSocket frames queued for sending.",
                self.frames_sent,
            ),
            (
                "bytes_sent_total",
                "Bytes written to sockets.",
                self.bytes_sent,
            ),
            (
                "write_calls_total",
                "write() calls on sockets.",
                self.write_calls,
            ),
            (
                "events_published_total",
                "Results received from the scanner.",
                self.events_published,
            ),
            (
                "deliveries_total",
                "Result frames queued, one per connection per result.",
                self.deliveries,
            ),
            (
                "replayed_total",
                "Results replayed from history.",
                self.replayed,
            ),
            (
                "slow_consumer_closes_total",
                "Connections closed for not keeping up.",
                self.slow_consumer_closes,
            ),
            (
                "messages_received_total",
                "Client messages received.",
                self.messages_received,
            ),
            ("scanner_cycles_total", "Scan cycles completed.", g.cycles),
            (
                "scanner_updates_total",
                "Bars or ticks taken in.",
                g.updates,
            ),
            (
                "scanner_evaluations_total",
                "Symbol evaluations.",
                g.evaluated,
            ),
            (
                "bad_input_total",
                "Malformed data rows or lines skipped.",
                g.bad_input,
            ),
        ];
        for (name, help, value) in counters {
            metric(&mut out, name, "counter", help, value);
        }
        render_alerts(&mut out, g);
        let _ = writeln!(
            out,
            "# HELP scanstream_protocol_errors_total Error replies and closes, by code.\n\
             # TYPE scanstream_protocol_errors_total counter"
        );
        for (code, n) in ErrorCode::ALL.iter().zip(self.errors) {
            let _ = writeln!(
                out,
                "scanstream_protocol_errors_total{{code=\"{}\"}} {n}",
                code.as_str()
            );
        }
        let mut closes: Vec<_> = self.closes.iter().collect();
        closes.sort();
        for (code, n) in closes {
            let _ = writeln!(
                out,
                "scanstream_protocol_errors_total{{code=\"{code}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP scanstream_http_responses_total HTTP responses, by status.\n\
             # TYPE scanstream_http_responses_total counter"
        );
        let mut statuses: Vec<_> = self.http_responses.iter().collect();
        statuses.sort();
        for (status, n) in statuses {
            let _ = writeln!(
                out,
                "scanstream_http_responses_total{{status=\"{status}\"}} {n}"
            );
        }
        self.batch_sizes.render(
            &mut out,
            "scanstream_broadcast_batch_size",
            "Results fanned out per channel drain.",
        );
        self.publish_to_flush.render(
            &mut out,
            "scanstream_publish_to_flush_seconds",
            "From the scanner publishing a result to the end of the flush that sent it.",
        );
        self.cycle_seconds.render(
            &mut out,
            "scanstream_scanner_cycle_seconds",
            "Work time of each scan cycle.",
        );
        out
    }
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP scanstream_{name} {help}\n# TYPE scanstream_{name} {kind}\nscanstream_{name} {value}"
    );
}

fn render_alerts(out: &mut String, g: &Gauges) {
    let _ = writeln!(
        out,
        "# HELP scanstream_alerts_total Alerts raised, by severity.\n\
         # TYPE scanstream_alerts_total counter"
    );
    for (severity, n) in ["info", "warning", "critical"].iter().zip(g.alerts.raised) {
        let _ = writeln!(
            out,
            "scanstream_alerts_total{{severity=\"{severity}\"}} {n}"
        );
    }
    let gauges = [
        (
            "alert_history",
            "Alerts in the history.",
            g.alert_history as u64,
        ),
        (
            "alerts_unacked",
            "Alerts not acknowledged.",
            g.alerts_unacked as u64,
        ),
    ];
    for (name, help, value) in gauges {
        metric(out, name, "gauge", help, value);
    }
    let counters = [
        (
            "alerts_throttled_total",
            "Alerts a rule's throttle held back.",
            g.alerts.throttled,
        ),
        (
            "alerts_acked_total",
            "Acknowledgments that changed an alert.",
            g.alerts.acked,
        ),
        (
            "alert_journal_errors_total",
            "Alert journal writes that failed.",
            g.alerts.journal_errors,
        ),
    ];
    for (name, help, value) in counters {
        metric(out, name, "counter", help, value);
    }
    if let Some([sent, failed, gave_up, dropped]) = g.webhook {
        let webhook = [
            ("webhook_sent_total", "Alerts the webhook delivered.", sent),
            (
                "webhook_failed_attempts_total",
                "Webhook attempts that failed (error, timeout, non-2xx).",
                failed,
            ),
            (
                "webhook_gave_up_total",
                "Alerts the webhook gave up on after every retry.",
                gave_up,
            ),
            (
                "webhook_dropped_total",
                "Alerts dropped because the webhook queue was full.",
                dropped,
            ),
        ];
        for (name, help, value) in webhook {
            metric(out, name, "counter", help, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let mut h = Histogram::new(&[1.0, 2.0]);
        for v in [0.5, 1.5, 1.7, 9.0] {
            h.observe(v);
        }
        let mut out = String::new();
        h.render(&mut out, "x", "help");
        assert!(out.contains("x_bucket{le=\"1\"} 1\n"));
        assert!(out.contains("x_bucket{le=\"2\"} 3\n"));
        assert!(out.contains("x_bucket{le=\"+Inf\"} 4\n"));
        assert!(out.contains("x_count 4\n"));
    }

    #[test]
    fn render_names_every_family() {
        let mut m = Metrics::default();
        m.count_error(ErrorCode::BadJson);
        m.count_close(4008);
        m.count_http(404);
        let text = m.render(&Gauges::default());
        assert!(text.contains("scanstream_protocol_errors_total{code=\"bad_json\"} 1"));
        assert!(text.contains("scanstream_protocol_errors_total{code=\"4008\"} 1"));
        assert!(text.contains("scanstream_http_responses_total{status=\"404\"} 1"));
        assert!(text.contains("# TYPE scanstream_publish_to_flush_seconds histogram"));
    }
}
