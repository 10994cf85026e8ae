//! The benchmark's report as `loadgen` prints it: a table for people, one JSON line for
//! perf/run.sh and perf/report.py (which read its keys, so they must not change), and the
//! self-test's verdict line. Formatting only: the figures come from [`Report`].

use std::fmt::Write as _;

use serde_json::{Map, Value, json};

use super::check::TableCheckReport;
use super::report::{LatencySummary, Report};

impl Report {
    /// The JSON line `loadgen` prints last, which perf/run.sh saves and perf/report.py
    /// reads: every figure of the run against `url`.
    pub fn json_line(&self, url: &str, selftest: bool) -> String {
        let r = self;
        let mut m = Map::new();
        let mut put = |k: &str, v: Value| {
            m.insert(k.to_string(), v);
        };
        put("url", json!(url));
        put("selftest", json!(selftest));
        let churn = r.churn.as_ref();
        put(
            "mode",
            json!(match (selftest, churn.is_some()) {
                (true, _) => "selftest",
                (false, true) => "churn",
                (false, false) => "steady",
            }),
        );
        put("clients", json!(r.clients));
        put("connected", json!(r.connected));
        put("connect_failures", json!(r.connect_failures));
        put("connect_errors", json!(r.connect_errors));
        put("ramp_s", json!(round3(r.ramp_s)));
        put("warmup_s", json!(r.warmup_s));
        put("duration_s", json!(round3(r.duration_s)));
        put("messages", json!(r.messages));
        put("msgs_per_s", json!(rate(r.messages, r.duration_s).round()));
        put("bytes", json!(r.bytes));
        put("bytes_per_s", json!(rate(r.bytes, r.duration_s).round()));
        put("latency_samples", json!(r.latency.count));
        put("p50_ms", json!(ms(r.latency.p50_ns)));
        put("p90_ms", json!(ms(r.latency.p90_ns)));
        put("p99_ms", json!(ms(r.latency.p99_ns)));
        put("p999_ms", json!(ms(r.latency.p999_ns)));
        put("max_ms", json!(ms(r.latency.max_ns)));
        put("min_ms", json!(ms(r.latency.min_ns)));
        put("negative_latency", json!(r.negative_latency));
        // Connections live a fraction of a second in churn mode: no per-client fairness.
        let steady = churn.is_none();
        put("min_per_client", json!(steady.then_some(r.min_per_client)));
        put("max_per_client", json!(steady.then_some(r.max_per_client)));
        put(
            "fairness_clients",
            json!(steady.then_some(r.fairness_clients)),
        );
        put("lost", json!(r.lost));
        put("gaps", json!(r.gaps));
        put("duplicated", json!(r.duplicated));
        put("out_of_order", json!(r.out_of_order));
        put("bad_results", json!(r.bad_results));
        put("other_messages", json!(r.other_messages));
        put("disconnects", json!(r.disconnects));
        let codes: Map<String, Value> = r
            .close_codes
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        put("close_codes", Value::Object(codes));
        put("protocol_errors", json!(r.protocol_errors));
        let s = r.server.as_ref();
        put("server_pid", json!(s.map(|s| s.pid)));
        let cpu_ns = s.and_then(|s| s.cpu_ns);
        put(
            "server_cpu_s",
            json!(cpu_ns.map(|n| round6(n as f64 / 1e9))),
        );
        put("server_cpu_source", json!(s.map(|s| s.cpu_source)));
        let per = |n: u64, d: u64| (n as f64 / d as f64 * 10.0).round() / 10.0;
        // Under churn the server's CPU goes mostly to connections, so per result it would
        // mislead: it is given per cycle instead.
        put(
            "server_cpu_ns_per_msg",
            json!(
                cpu_ns
                    .filter(|_| r.messages > 0 && steady)
                    .map(|n| per(n, r.messages))
            ),
        );
        put(
            "server_rss_kib_start",
            json!(s.and_then(|s| s.rss_kib_start)),
        );
        put("server_rss_kib_max", json!(s.and_then(|s| s.rss_kib_max)));
        put("server_rss_kib_end", json!(s.and_then(|s| s.rss_kib_end)));
        put(
            "loadgen_cpu_s",
            json!(round6(r.loadgen_cpu_ns as f64 / 1e9)),
        );
        put("loadgen_busy_pct", json!((busy(r) * 1000.0).round() / 10.0));
        put("msgs_per_s_by_second", json!(r.intervals));
        table_check_json(r.table_check.as_ref(), &mut put);
        if let Some(c) = churn {
            put("cycles", json!(c.cycles));
            put("cycles_per_s", json!(rate(c.cycles, r.duration_s).round()));
            put("cycles_total", json!(c.cycles_total));
            put("errors", json!(c.errors.values().sum::<u64>()));
            put("errors_in_window", json!(c.errors_in_window));
            put("churn_errors", json!(c.errors));
            let l = &c.cycle_latency;
            put("cycle_p50_ms", json!(ms(l.p50_ns)));
            put("cycle_p99_ms", json!(ms(l.p99_ns)));
            put("cycle_p999_ms", json!(ms(l.p999_ns)));
            put("cycle_max_ms", json!(ms(l.max_ns)));
            put(
                "server_cpu_ns_per_cycle",
                json!(cpu_ns.filter(|_| c.cycles > 0).map(|n| per(n, c.cycles))),
            );
            put("cycles_per_s_by_second", json!(c.cycles_by_second));
        }
        Value::Object(m).to_string()
    }

    /// The table `loadgen` prints for people before the JSON line.
    pub fn table(&self, url: &str) -> String {
        let r = self;
        let mut out = String::new();
        let _ = writeln!(out, "loadgen {url}");
        if r.churn.is_some() {
            row(
                &mut out,
                "clients",
                format!(
                    "{} churn slots started in {:.2} s; {} handshakes, {} connect or handshake failures (whole run)",
                    r.clients,
                    r.ramp_s,
                    group(r.connected),
                    r.connect_failures
                ),
            );
        } else {
            row(
                &mut out,
                "clients",
                format!(
                    "{} requested, {} connected in {:.2} s, {} failed",
                    r.clients, r.connected, r.ramp_s, r.connect_failures
                ),
            );
        }
        for (why, n) in &r.connect_errors {
            row(&mut out, "  failure", format!("{n} x {why}"));
        }
        row(
            &mut out,
            "window",
            format!("{:.3} s after {:.1} s warm-up", r.duration_s, r.warmup_s),
        );
        row(
            &mut out,
            "results",
            format!(
                "{} ({} msg/s, {:.2} MB/s on the wire)",
                group(r.messages),
                group(rate(r.messages, r.duration_s).round() as u64),
                rate(r.bytes, r.duration_s) / 1e6
            ),
        );
        row(&mut out, "latency ms", latency_line(&r.latency));
        if r.negative_latency > 0 {
            row(
                &mut out,
                "  clock",
                format!("{} results stamped after they arrived", r.negative_latency),
            );
        }
        if let Some(c) = &r.churn {
            row(
                &mut out,
                "churn cycles",
                format!(
                    "{} in the window ({} cycles/s), {} in the whole run",
                    group(c.cycles),
                    group(rate(c.cycles, r.duration_s).round() as u64),
                    group(c.cycles_total)
                ),
            );
            row(
                &mut out,
                "cycle ms",
                format!("connect to subscribed: {}", latency_line(&c.cycle_latency)),
            );
            let total: u64 = c.errors.values().sum();
            row(
                &mut out,
                "churn errors",
                format!(
                    "{total} in the whole run, {} in the window",
                    c.errors_in_window
                ),
            );
            for (why, n) in &c.errors {
                row(&mut out, "  error", format!("{n} x {why}"));
            }
            if !c.cycles_by_second.is_empty() {
                let iv: Vec<String> = c.cycles_by_second.iter().map(|&n| group(n)).collect();
                row(&mut out, "cycles by second", iv.join(" "));
            }
        } else {
            row(
                &mut out,
                "per client",
                format!(
                    "fewest {}  most {}  (of {} open at the window's start)",
                    group(r.min_per_client),
                    group(r.max_per_client),
                    r.fairness_clients
                ),
            );
        }
        row(
            &mut out,
            "seq",
            format!(
                "gaps {} ({} values skipped: lost, or conflated)  duplicated {} ({} out of order)  unreadable results {}",
                r.gaps, r.lost, r.duplicated, r.out_of_order, r.bad_results
            ),
        );
        if let Some(t) = &r.table_check {
            row(&mut out, "table check", table_check_line(t));
        }
        let codes: Vec<String> = r
            .close_codes
            .iter()
            .map(|(c, n)| format!("{c}: {n}"))
            .collect();
        row(
            &mut out,
            "disconnects",
            format!(
                "{}  close codes {{{}}}  protocol errors {}",
                r.disconnects,
                codes.join(", "),
                r.protocol_errors
            ),
        );
        if let Some(e) = &r.last_protocol_error {
            row(&mut out, "  last error", e.clone());
        }
        if !r.other_messages.is_empty() {
            let o: Vec<String> = r
                .other_messages
                .iter()
                .map(|(t, n)| format!("{t}: {n}"))
                .collect();
            row(&mut out, "other messages", o.join(", "));
        }
        if let Some(s) = &r.server {
            let kib = |v: Option<u64>| v.map_or("?".to_string(), group);
            let cpu = match s.cpu_ns {
                Some(ns) if r.churn.as_ref().is_some_and(|c| c.cycles > 0) => format!(
                    "{:.3} s ({}), {:.1} ns per churn cycle",
                    ns as f64 / 1e9,
                    s.cpu_source,
                    ns as f64 / r.churn.as_ref().map_or(1, |c| c.cycles) as f64
                ),
                Some(ns) if r.messages > 0 && r.churn.is_none() => format!(
                    "{:.3} s ({}), {:.1} ns per delivered message",
                    ns as f64 / 1e9,
                    s.cpu_source,
                    ns as f64 / r.messages as f64
                ),
                Some(ns) => format!("{:.3} s ({})", ns as f64 / 1e9, s.cpu_source),
                None => "unreadable".to_string(),
            };
            row(&mut out, &format!("server {}", s.pid), format!("CPU {cpu}"));
            row(
                &mut out,
                "",
                format!(
                    "RSS KiB start {}  max {}  end {}",
                    kib(s.rss_kib_start),
                    kib(s.rss_kib_max),
                    kib(s.rss_kib_end)
                ),
            );
        }
        let b = busy(r);
        row(
            &mut out,
            "loadgen",
            format!(
                "CPU {:.3} s, busy {:.0} % of the window",
                r.loadgen_cpu_ns as f64 / 1e9,
                b * 100.0
            ),
        );
        if b > 0.9 {
            let _ = writeln!(
                out,
                "WARNING: the load generator was busy {:.0} % of the window; the figures may show its limit, not the server's",
                b * 100.0
            );
        }
        if !r.intervals.is_empty() {
            let iv: Vec<String> = r.intervals.iter().map(|&n| group(n)).collect();
            row(&mut out, "msg/s by second", iv.join(" "));
        }
        out
    }

    /// The self-test's verdict line: results per second against `target`, with the
    /// receiver thread's share of the window and its results per CPU-second.
    pub fn selftest_line(&self, target: f64) -> String {
        let rate = rate(self.messages, self.duration_s);
        let busy = busy(self);
        let per_cpu_s = if self.loadgen_cpu_ns > 0 {
            self.messages as f64 / (self.loadgen_cpu_ns as f64 / 1e9)
        } else {
            0.0
        };
        format!(
            "self-test: {} msg/s over {:.1} s with the receiver thread busy {:.0} % of the window \
             ({} msg per receiver CPU-second): {} the {} msg/s mark",
            group(rate as u64),
            self.duration_s,
            busy * 100.0,
            group(per_cpu_s as u64),
            if rate >= target { "meets" } else { "BELOW" },
            group(target as u64)
        )
    }
}

/// The table check's JSON fields: `table_check` is its verdict, or `off` (and the
/// counts `null`) without `--check-table`.
fn table_check_json(t: Option<&TableCheckReport>, put: &mut impl FnMut(&str, Value)) {
    put("table_check", json!(t.map_or("off", |t| t.verdict())));
    let n = |f: fn(&TableCheckReport) -> u64| json!(t.map(f));
    put("tables_sampled", n(|t| t.sampled));
    put("tables_checked", n(|t| t.checked));
    put("tables_equal", n(|t| t.equal));
    put("tables_different", n(|t| t.different));
    put("tables_unsupported", n(|t| t.unsupported));
    put("tables_unanswered", n(|t| t.unanswered));
    put("tables_errors", n(|t| t.errors));
    put("table_rows", n(|t| t.rows));
    put(
        "table_check_example",
        json!(t.and_then(|t| t.example.clone())),
    );
}

fn table_check_line(t: &TableCheckReport) -> String {
    format!(
        "{}: {} of {} tables checked, {} equal to a fresh snapshot ({} rows), {} different, \
         {} unsupported, {} unanswered, {} errors",
        t.verdict(),
        t.checked,
        t.sampled,
        t.equal,
        group(t.rows),
        t.different,
        t.unsupported,
        t.unanswered,
        t.errors
    )
}

/// One row of the table: the key padded to 16 columns, then the value.
fn row(out: &mut String, k: &str, v: String) {
    let _ = writeln!(out, "{k:<16} {v}");
}

fn rate(n: u64, secs: f64) -> f64 {
    if secs > 0.0 { n as f64 / secs } else { 0.0 }
}

/// Share of the window the load generator's thread was on a CPU.
fn busy(r: &Report) -> f64 {
    if r.duration_s > 0.0 {
        r.loadgen_cpu_ns as f64 / 1e9 / r.duration_s
    } else {
        0.0
    }
}

fn ms(ns: u64) -> f64 {
    (ns as f64 / 1000.0).round() / 1000.0
}

fn round3(v: f64) -> f64 {
    (v * 1e3).round() / 1e3
}

fn round6(v: f64) -> f64 {
    (v * 1e6).round() / 1e6
}

/// 1234567 as "1,234,567".
fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

fn latency_line(l: &LatencySummary) -> String {
    format!(
        "p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  ({} samples)",
        ms(l.p50_ns),
        ms(l.p90_ns),
        ms(l.p99_ns),
        ms(l.p999_ns),
        ms(l.max_ns),
        group(l.count)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grouping() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1000), "1,000");
        assert_eq!(group(1234567), "1,234,567");
    }
}
