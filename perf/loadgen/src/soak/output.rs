//! The soak report as `loadgen --soak` prints it: a table for people and one JSON line for
//! scripts (perf/soak.sh keeps both). Formatting only; the verdict comes from
//! [`SoakReport::failures`].

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{Value, json};

use super::report::SoakReport;
use super::rss::RssSample;

impl SoakReport {
    /// The RSS curve as CSV: `t_s,rss_kib`.
    pub fn rss_csv(&self) -> String {
        let mut out = String::from("t_s,rss_kib\n");
        for s in &self.rss {
            let _ = writeln!(out, "{:.3},{}", s.t_s, s.kib);
        }
        out
    }

    /// The report as one JSON object (the RSS curve as `[t_s, kib]` pairs).
    pub fn json(&self) -> Value {
        let actions: serde_json::Map<String, Value> = self
            .actions
            .by_kind()
            .iter()
            .map(|(k, n)| (k.to_string(), json!(n)))
            .collect();
        let codes = |m: &BTreeMap<u16, u64>| -> serde_json::Map<String, Value> {
            m.iter().map(|(k, v)| (k.to_string(), json!(v))).collect()
        };
        let j = &self.rss_judgement;
        let failures = self.failures();
        let mut m = serde_json::Map::new();
        let mut put = |k: &str, v: Value| {
            m.insert(k.to_string(), v);
        };
        put("mode", json!("soak"));
        put("addr", json!(self.addr));
        put("tls", json!(self.tls));
        put("clients", json!(self.clients));
        put("seed", json!(self.seed));
        put("duration_s", json!(round3(self.duration_s)));
        put("warmup_s", json!(self.warmup_s));
        put("actions", json!(actions));
        put("actions_total", json!(self.actions.total()));
        put("connects", json!(self.connects));
        put("connect_failures", json!(self.connect_failures));
        put("connect_errors", json!(self.connect_errors));
        put("results", json!(self.results));
        put(
            "results_per_s",
            json!(rate(self.results, self.duration_s).round()),
        );
        put("replayed", json!(self.replayed));
        put("resumes", json!(self.resumes));
        put("recovered_false", json!(self.not_recovered));
        put("lost", json!(self.lost));
        put("duplicated", json!(self.duplicated));
        put("stray_results", json!(self.stray_results));
        put("bad_messages", json!(self.bad_messages));
        put("replies", json!(self.replies));
        put("reply_p50_ms", json!(self.reply_latency_ms[0]));
        put("reply_p99_ms", json!(self.reply_latency_ms[1]));
        put("reply_max_ms", json!(self.reply_latency_ms[2]));
        put("reply_timeouts", json!(self.reply_timeouts));
        put("bad_replies", json!(self.bad_replies));
        put("abandoned_requests", json!(self.abandoned));
        put("errors", json!(self.errors));
        put("unexpected_errors", json!(self.unexpected_errors));
        put("alerts", json!(self.alerts));
        put("acked_broadcasts", json!(self.acked_broadcasts));
        put("statuses", json!(self.statuses));
        put("adhoc_done", json!(self.adhoc_done));
        put("other_messages", json!(self.other_messages));
        put("close_codes", json!(codes(&self.close_codes)));
        put("unexpected_disconnects", json!(self.unexpected_disconnects));
        put(
            "unexpected_close_codes",
            json!(codes(&self.unexpected_close_codes)),
        );
        put("close_timeouts", json!(self.close_timeouts));
        put("protocol_errors", json!(self.protocol_errors));
        put("rss_pid", json!(self.rss_pid));
        put("rss_every_s", json!(self.rss_every_s));
        put("rss_samples", json!(self.rss.len()));
        put("rss_kib_first", json!(self.rss.first().map(|s| s.kib)));
        put("rss_kib_max", json!(self.rss.iter().map(|s| s.kib).max()));
        put("rss_kib_last", json!(self.rss.last().map(|s| s.kib)));
        put(
            "rss_rule",
            json!(format!(
                "after {} s warm-up: median of the last third <= median of the first third + {} % + {} KiB",
                self.warmup_s, j.growth_pct, j.slack_kib
            )),
        );
        put("rss_early_median_kib", json!(j.early_kib));
        put("rss_late_median_kib", json!(j.late_kib));
        put("rss_early_max_kib", json!(j.early_max_kib));
        put("rss_late_max_kib", json!(j.late_max_kib));
        put("rss_limit_kib", json!(j.limit_kib));
        put("rss_flat", json!(j.flat));
        put(
            "rss_curve",
            json!(
                self.rss
                    .iter()
                    .map(|s| json!([round3(s.t_s), s.kib]))
                    .collect::<Vec<_>>()
            ),
        );
        put("loadgen_cpu_s", json!(round3(self.loadgen_cpu_s)));
        put(
            "verdict",
            json!(if failures.is_empty() { "pass" } else { "fail" }),
        );
        put("failures", json!(failures));
        Value::Object(m)
    }

    /// The report as a human table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let mut row = |k: &str, v: String| {
            let _ = writeln!(out, "{k:<18} {v}");
        };
        row(
            "soak",
            format!(
                "{}://{} {} clients, {:.1} s ({} s warm-up), seed {}",
                if self.tls { "wss" } else { "ws" },
                self.addr,
                self.clients,
                self.duration_s,
                self.warmup_s,
                self.seed
            ),
        );
        let a = self.actions;
        row(
            "actions",
            format!(
                "{} total: disconnect {} (close {}, reset {}), unsubscribe {}, subscribe {}, scan {}, ack {}, ping {}",
                a.total(),
                a.disconnect_close + a.disconnect_reset,
                a.disconnect_close,
                a.disconnect_reset,
                a.unsubscribe,
                a.subscribe,
                a.scan,
                a.ack,
                a.ping
            ),
        );
        row(
            "connections",
            format!(
                "{} handshakes, {} connect failures",
                self.connects, self.connect_failures
            ),
        );
        for (why, n) in &self.connect_errors {
            row("  failure", format!("{n} x {why}"));
        }
        row(
            "results",
            format!(
                "{} ({:.0}/s), {} of them replayed on resume",
                self.results,
                rate(self.results, self.duration_s),
                self.replayed
            ),
        );
        row(
            "resumes",
            format!("{}, recovered:false {}", self.resumes, self.not_recovered),
        );
        row(
            "seq",
            format!(
                "lost {}  duplicated {}  without a subscription {}  unreadable {}",
                self.lost, self.duplicated, self.stray_results, self.bad_messages
            ),
        );
        let replies: Vec<String> = self
            .replies
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        row("replies", replies.join(", "));
        row(
            "  reply ms",
            format!(
                "p50 {:.3}  p99 {:.3}  max {:.3}",
                self.reply_latency_ms[0], self.reply_latency_ms[1], self.reply_latency_ms[2]
            ),
        );
        row(
            "  problems",
            format!(
                "unanswered {}  wrong {}  abandoned at disconnect {}",
                self.reply_timeouts, self.bad_replies, self.abandoned
            ),
        );
        let errors: Vec<String> = self
            .errors
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        row(
            "errors",
            format!(
                "{{{}}}  unexpected {}",
                errors.join(", "),
                self.unexpected_errors
            ),
        );
        if let Some(e) = &self.last_unexpected {
            row("  last", e.clone());
        }
        row(
            "broadcasts",
            format!(
                "alert {}  acked {}  status {}  adhoc done {}",
                self.alerts, self.acked_broadcasts, self.statuses, self.adhoc_done
            ),
        );
        if !self.other_messages.is_empty() {
            let o: Vec<String> = self
                .other_messages
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            row("other messages", o.join(", "));
        }
        let codes = |m: &BTreeMap<u16, u64>| -> String {
            let v: Vec<String> = m.iter().map(|(c, n)| format!("{c}: {n}")).collect();
            format!("{{{}}}", v.join(", "))
        };
        row("close codes", codes(&self.close_codes));
        row(
            "unexpected",
            format!(
                "disconnects {} {}  close timeouts {}  protocol errors {}",
                self.unexpected_disconnects,
                codes(&self.unexpected_close_codes),
                self.close_timeouts,
                self.protocol_errors
            ),
        );
        if let Some(e) = &self.last_protocol_error {
            row("  last", e.clone());
        }
        match self.rss_pid {
            Some(pid) => {
                let j = &self.rss_judgement;
                row(
                    &format!("server {pid} RSS"),
                    format!(
                        "{} samples, one every {} s on average: first {} KiB, max {} KiB, last {} KiB",
                        self.rss.len(),
                        self.rss_every_s,
                        self.rss.first().map_or(0, |s| s.kib),
                        self.rss.iter().map(|s| s.kib).max().unwrap_or(0),
                        self.rss.last().map_or(0, |s| s.kib)
                    ),
                );
                row(
                    "  rule",
                    format!(
                        "after {} s ({} samples): median of the last third {} KiB <= median of the first third {} KiB + {} % + {} KiB = {} KiB: {}",
                        self.warmup_s,
                        j.samples,
                        j.late_kib,
                        j.early_kib,
                        j.growth_pct,
                        j.slack_kib,
                        j.limit_kib,
                        match j.flat {
                            Some(true) => "flat",
                            Some(false) => "GREW",
                            None => "not judged (too few samples)",
                        }
                    ),
                );
                row(
                    "",
                    format!(
                        "(maxima: first third {} KiB, last third {} KiB)",
                        j.early_max_kib, j.late_max_kib
                    ),
                );
                row("  curve", rss_sketch(&self.rss, 12));
            }
            None => row("server RSS", "not sampled (no --rss-pid)".into()),
        }
        row(
            "loadgen",
            format!(
                "CPU {:.1} s, busy {:.0} %",
                self.loadgen_cpu_s,
                if self.duration_s > 0.0 {
                    self.loadgen_cpu_s / self.duration_s * 100.0
                } else {
                    0.0
                }
            ),
        );
        let failures = self.failures();
        if failures.is_empty() {
            row("verdict", "PASS".into());
        } else {
            row("verdict", format!("FAIL: {}", failures.join("; ")));
        }
        out
    }
}

/// Up to `points` samples of the curve, evenly spaced, as `t s: KiB` pairs.
fn rss_sketch(rss: &[RssSample], points: usize) -> String {
    if rss.is_empty() {
        return "-".into();
    }
    let step = rss.len().div_ceil(points).max(1);
    let mut picks: Vec<&RssSample> = rss.iter().step_by(step).collect();
    if let Some(last) = rss.last()
        && picks.last().is_none_or(|p| p.t_s != last.t_s)
    {
        picks.push(last);
    }
    picks
        .iter()
        .map(|s| format!("{:.0}s {}", s.t_s, s.kib))
        .collect::<Vec<_>>()
        .join(", ")
}

fn rate(n: u64, secs: f64) -> f64 {
    if secs > 0.0 { n as f64 / secs } else { 0.0 }
}

fn round3(v: f64) -> f64 {
    (v * 1e3).round() / 1e3
}
