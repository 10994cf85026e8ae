//! What a benchmark run measured, as the engine hands it over for the table and the JSON
//! line: plain figures, no formatting and no I/O.

use std::collections::BTreeMap;

use super::check::TableCheckReport;
use crate::stats::Histogram;

/// Churn figures for the report.
#[derive(Debug, Default)]
pub struct ChurnReport {
    /// Cycles whose `subscribed` arrived in the window.
    pub cycles: u64,
    /// The same over the whole run.
    pub cycles_total: u64,
    /// Failed cycles by reason, whole run.
    pub errors: BTreeMap<String, u64>,
    /// Failed cycles in the window.
    pub errors_in_window: u64,
    /// `connect` to `subscribed` of the window's cycles.
    pub cycle_latency: LatencySummary,
    /// Cycles in each whole second of the window.
    pub cycles_by_second: Vec<u64>,
}

/// Everything measured, ready for the table and the JSON line.
#[derive(Debug, Default)]
pub struct Report {
    pub clients: usize,
    pub connected: u64,
    pub connect_failures: u64,
    pub connect_errors: BTreeMap<String, u64>,
    pub ramp_s: f64,
    pub warmup_s: f64,
    pub duration_s: f64,
    /// Results received in the window.
    pub messages: u64,
    /// Wire bytes read in the window (frame headers included).
    pub bytes: u64,
    pub latency: LatencySummary,
    /// Results whose timestamp was after the receive time (clock trouble), counted as 0.
    pub negative_latency: u64,
    pub min_per_client: u64,
    pub max_per_client: u64,
    /// Connections counted for fairness: open when the window started.
    pub fairness_clients: u64,
    /// `seq` values skipped, summed over all gaps (lost, or conflated by the server).
    pub lost: u64,
    /// Jumps in `seq`, however many values each skipped.
    pub gaps: u64,
    /// Values at or below the last one: repeated or out of order.
    pub duplicated: u64,
    /// Those of `duplicated` below the last one.
    pub out_of_order: u64,
    pub bad_results: u64,
    /// Non-result messages by `type`, whole run.
    pub other_messages: BTreeMap<String, u64>,
    pub disconnects: u64,
    pub close_codes: BTreeMap<u16, u64>,
    pub protocol_errors: u64,
    pub last_protocol_error: Option<String>,
    /// Results per second in each whole second of the window.
    pub intervals: Vec<u64>,
    pub server: Option<ServerUsage>,
    pub loadgen_cpu_ns: u64,
    pub churn: Option<ChurnReport>,
    /// `--check-table`: the tables compared with fresh snapshots.
    pub table_check: Option<TableCheckReport>,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct LatencySummary {
    pub count: u64,
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    pub max_ns: u64,
    pub min_ns: u64,
}

#[derive(Debug, Default, Clone)]
pub struct ServerUsage {
    pub pid: u32,
    pub cpu_ns: Option<u64>,
    pub cpu_source: &'static str,
    pub rss_kib_start: Option<u64>,
    pub rss_kib_max: Option<u64>,
    pub rss_kib_end: Option<u64>,
}

/// The percentiles of a histogram.
pub(super) fn summary(h: &Histogram) -> LatencySummary {
    LatencySummary {
        count: h.count(),
        p50_ns: h.quantile(0.5),
        p90_ns: h.quantile(0.9),
        p99_ns: h.quantile(0.99),
        p999_ns: h.quantile(0.999),
        max_ns: h.max(),
        min_ns: h.min(),
    }
}
