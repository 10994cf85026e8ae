//! The Prometheus text exposition: every edge's counters added up, beside the gauges of
//! the process.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::{BusGauges, Counter, Gauges, Histogram, Merged, Metrics, Tally};
use crate::protocol::ErrorCode;

/// The Prometheus text exposition of every edge's counters added up, and the process's
/// gauges.
pub fn render(edges: &[&Metrics], g: &Gauges, tls_failures: &[&str]) -> String {
    let total =
        |counter: fn(&Metrics) -> &Counter| edges.iter().map(|m| counter(m).get()).sum::<u64>();
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
            total(|m| &m.websockets),
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
            total(|m| &m.pending_bytes),
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
            total(|m| &m.accepted),
        ),
        (
            "connections_rejected_total",
            "Connections refused at the limit.",
            total(|m| &m.rejected_full),
        ),
        (
            "accept_errors_total",
            "accept() failures.",
            total(|m| &m.accept_errors),
        ),
        (
            "websocket_upgrades_total",
            "WebSocket handshakes completed.",
            total(|m| &m.upgrades),
        ),
        (
            "frames_sent_total",
            "WebSocket frames queued for sending.",
            total(|m| &m.frames_sent),
        ),
        (
            "bytes_sent_total",
            "Bytes written to sockets.",
            total(|m| &m.bytes_sent),
        ),
        (
            "write_calls_total",
            "write() calls on sockets.",
            total(|m| &m.write_calls),
        ),
        (
            "events_published_total",
            "Results received from the scanner.",
            // Every edge receives every result: the furthest one's count.
            edges
                .iter()
                .map(|m| m.events_published.get())
                .max()
                .unwrap_or(0),
        ),
        (
            "deliveries_total",
            "Result frames queued, one per connection per result.",
            total(|m| &m.deliveries),
        ),
        (
            "results_conflated_total",
            "Results a lagging edge skipped as superseded by a later event of their key.",
            total(|m| &m.conflated),
        ),
        (
            "replayed_total",
            "Results replayed from history.",
            total(|m| &m.replayed),
        ),
        (
            "slow_consumer_closes_total",
            "Connections closed for not keeping up.",
            total(|m| &m.slow_consumer_closes),
        ),
        (
            "messages_received_total",
            "Client messages received.",
            total(|m| &m.messages_received),
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
    // How the kernel spread the connections over the edges sharing the port.
    let _ = writeln!(
        out,
        "# HELP scanstream_edge_connections_open Open connections by edge, as of its last sweep.\n\
         # TYPE scanstream_edge_connections_open gauge"
    );
    for (edge, m) in edges.iter().enumerate() {
        let n = m.connections.get();
        let _ = writeln!(
            out,
            "scanstream_edge_connections_open{{edge=\"{edge}\"}} {n}"
        );
    }
    if let Some(bus) = g.bus {
        render_bus(&mut out, &bus);
    }
    let _ = writeln!(
        out,
        "# HELP scanstream_tls_handshake_failures_total TLS handshakes that failed, by reason.\n\
         # TYPE scanstream_tls_handshake_failures_total counter"
    );
    for (i, reason) in tls_failures.iter().enumerate() {
        let n: u64 = edges
            .iter()
            .filter_map(|m| m.tls_failures.get(i))
            .map(Counter::get)
            .sum();
        let _ = writeln!(
            out,
            "scanstream_tls_handshake_failures_total{{reason=\"{reason}\"}} {n}"
        );
    }
    render_alerts(&mut out, g);
    let _ = writeln!(
        out,
        "# HELP scanstream_protocol_errors_total Error replies and closes, by code.\n\
             # TYPE scanstream_protocol_errors_total counter"
    );
    for (i, code) in ErrorCode::ALL.iter().enumerate() {
        let n: u64 = edges.iter().map(|m| m.errors[i].get()).sum();
        let _ = writeln!(
            out,
            "scanstream_protocol_errors_total{{code=\"{}\"}} {n}",
            code.as_str()
        );
    }
    for (code, n) in tallies(edges, |m| &m.closes) {
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
    for (status, n) in tallies(edges, |m| &m.http_responses) {
        let _ = writeln!(
            out,
            "scanstream_http_responses_total{{status=\"{status}\"}} {n}"
        );
    }
    let histograms: [HistogramFamily; 3] = [
        (
            |m| &m.batch_sizes,
            edges,
            "scanstream_broadcast_batch_size",
            "Results fanned out per channel drain.",
        ),
        (
            |m| &m.publish_to_flush,
            edges,
            "scanstream_publish_to_flush_seconds",
            "From the scanner publishing a result to the end of the flush that sent it.",
        ),
        // Every edge sees every cycle: one edge's count is the producer's.
        (
            |m| &m.cycle_seconds,
            &edges[..edges.len().min(1)],
            "scanstream_scanner_cycle_seconds",
            "Work time of each scan cycle.",
        ),
    ];
    for (histogram, from, name, help) in histograms {
        let parts: Vec<&Histogram> = from.iter().map(|m| histogram(m)).collect();
        if let Some(merged) = Histogram::merged(&parts) {
            render_histogram(&mut out, &merged, name, help);
        }
    }
    out
}

fn render_bus(out: &mut String, bus: &BusGauges) {
    metric(
        out,
        "bus_up",
        "gauge",
        "1 while the bus between processes works.",
        u64::from(bus.up),
    );
    let _ = writeln!(
        out,
        "# HELP scanstream_bus_problems_total Times the bus became unreachable or lost its producer.\n\
         # TYPE scanstream_bus_problems_total counter"
    );
    for (name, n) in ["unreachable", "no_producer"].iter().zip(bus.problems) {
        let _ = writeln!(
            out,
            "scanstream_bus_problems_total{{problem=\"{name}\"}} {n}"
        );
    }
    metric(
        out,
        "bus_dropped_total",
        "counter",
        "Events the producer dropped while Redis was away and its backlog was full.",
        bus.dropped,
    );
}

/// A histogram of each edge, the edges to add up, its name and its help.
type HistogramFamily<'a> = (
    fn(&Metrics) -> &Histogram,
    &'a [&'a Metrics],
    &'static str,
    &'static str,
);

/// Every edge's counts of `tally` added up, in code order.
fn tallies(edges: &[&Metrics], tally: fn(&Metrics) -> &Tally) -> BTreeMap<u16, u64> {
    let mut sum = BTreeMap::new();
    for m in edges {
        for (code, n) in tally(m).nonzero() {
            *sum.entry(code).or_default() += n;
        }
    }
    sum
}

fn render_histogram(out: &mut String, h: &Merged, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    for (bound, cumulative) in h.bounds.iter().zip(&h.cumulative) {
        let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", h.count);
    let _ = writeln!(out, "{name}_sum {}", h.sum);
    let _ = writeln!(out, "{name}_count {}", h.count);
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
    fn render_names_every_family_and_adds_up_the_edges() {
        let (a, b) = (Metrics::default(), Metrics::default());
        a.count_error(ErrorCode::BadJson);
        b.count_error(ErrorCode::BadJson);
        a.count_close(4008);
        b.count_http(404);
        a.deliveries.add(3);
        b.deliveries.add(4);
        let text = render(&[&a, &b], &Gauges::default(), &[]);
        assert!(text.contains("scanstream_protocol_errors_total{code=\"bad_json\"} 2"));
        assert!(text.contains("scanstream_protocol_errors_total{code=\"4008\"} 1"));
        assert!(text.contains("scanstream_http_responses_total{status=\"404\"} 1"));
        assert!(text.contains("scanstream_deliveries_total 7\n"));
        assert!(text.contains("scanstream_edge_connections_open{edge=\"1\"} 0\n"));
        assert!(text.contains("# TYPE scanstream_publish_to_flush_seconds histogram"));
    }

    #[test]
    fn results_and_cycles_are_the_producers_not_a_sum_over_edges() {
        let (a, b) = (Metrics::default(), Metrics::default());
        a.events_published.add(5);
        b.events_published.add(4);
        for m in [&a, &b] {
            m.cycle_seconds.observe(0.01);
        }
        let text = render(&[&a, &b], &Gauges::default(), &[]);
        assert!(text.contains("scanstream_events_published_total 5\n"));
        assert!(text.contains("scanstream_scanner_cycle_seconds_count 1\n"));
    }
}
