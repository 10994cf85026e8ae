//! The soak driver: N WebSocket clients on one thread and one mio `Poll`, each a state
//! machine over a real TCP connection that subscribes with empty filters (every result
//! matches, so its `seq` values must be contiguous) and then, at random intervals,
//! disconnects (a clean close or a reset) and resumes with `since` and `epoch`,
//! unsubscribes and later subscribes afresh, asks for ad-hoc scans, acknowledges alerts
//! and pings. Every reply is matched to its request by `id`; every result is checked
//! against the last one its client saw. The server's RSS is sampled along the way.
//!
//! [`run`] returns a [`SoakReport`] with the counts, the RSS curve and the verdict
//! ([`SoakReport::failures`]); `loadgen --soak` prints it as a table and a JSON line.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fmt::Write as _;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Registry, Token};
use serde_json::{Value, json};

use crate::msg::{self, Kind};
use crate::rng::Rng;
use crate::seq::{Seq, Tally};
use crate::stats::Histogram;
use crate::sys;
use crate::ws::{self, Frame, Parsed, WsError};

/// The subscription name every client uses.
const SUBSCRIPTION: &str = "soak";
/// Relative weights of the actions a subscribed client picks from: disconnect,
/// unsubscribe, scan, ack, ping. A disconnect is a clean close or a reset, half each.
const WEIGHTS: [u32; 5] = [30, 15, 20, 15, 20];
/// A failed connect is retried after this long.
const RETRY: Duration = Duration::from_secs(1);
/// Timer resolution of the driver: actions, reconnects and deadlines.
const TICK: Duration = Duration::from_millis(50);
/// Bytes per `read` call.
const READ_CHUNK: usize = 64 * 1024;
/// Reads per connection per turn before the others get theirs.
const READ_BUDGET: usize = 8;
/// Largest frame accepted from the server.
const MAX_FRAME: usize = 4 << 20;
/// Symbols and alert ids remembered for `scan` and `ack` requests.
const SYMBOL_POOL: usize = 1000;
const ALERT_POOL: usize = 256;

/// The RSS rule's allowance by default: after the warm-up, the median of the last third
/// of the samples may exceed the median of the first third by at most this many percent
/// plus this many KiB.
pub const DEFAULT_RSS_GROWTH_PCT: u64 = 10;
pub const DEFAULT_RSS_SLACK_KIB: u64 = 2048;

/// What to run. [`SoakConfig::new`] gives the defaults of `loadgen --soak`.
#[derive(Debug, Clone)]
pub struct SoakConfig {
    pub addr: SocketAddr,
    /// `Host` header value.
    pub host: String,
    /// Request target of the upgrade: path and query.
    pub path: String,
    pub clients: usize,
    /// Length of the whole run, ramp and warm-up included.
    pub duration: Duration,
    /// Seeds every client's choices (actions, intervals, reconnect delays) and masks.
    pub seed: u64,
    /// Time from the start before RSS samples count for the flatness rule. Everything
    /// else counts from the start.
    pub warmup: Duration,
    /// Process whose VmRSS is sampled (the server).
    pub rss_pid: Option<u32>,
    /// Mean time between RSS samples. Each interval is drawn from 0.5 to 1.5 times it, so
    /// the samples do not keep in step with the server's once-a-second bursts (at a
    /// fixed period they would read the same phase of the burst for many samples on end).
    pub rss_every: Duration,
    /// The RSS rule's allowance: see [`judge_rss`].
    pub rss_growth_pct: u64,
    pub rss_slack_kib: u64,
    /// Each client acts once every `act_min..act_max`, uniformly at random.
    pub act_min: Duration,
    pub act_max: Duration,
    /// A client that disconnected reconnects after `reconnect_min..reconnect_max`.
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    /// Connections opened per second at the start.
    pub ramp: f64,
    /// A request whose reply has not come within this long counts as unanswered.
    pub reply_timeout: Duration,
    /// Time from `connect` to the `101` response.
    pub connect_timeout: Duration,
    /// Time the server gets to close the TCP connection after our close frame.
    pub close_timeout: Duration,
    /// Print a progress line to stderr this often.
    pub progress_every: Option<Duration>,
}

impl SoakConfig {
    /// The defaults: 1,000 clients for 30 minutes, 10 of them warm-up, each acting every
    /// 1 to 10 s and reconnecting after 0.1 to 3 s.
    pub fn new(addr: SocketAddr) -> SoakConfig {
        SoakConfig {
            addr,
            host: addr.to_string(),
            path: "/stream".into(),
            clients: 1000,
            duration: Duration::from_secs(1800),
            seed: 1,
            warmup: Duration::from_secs(600),
            rss_pid: None,
            rss_every: Duration::from_secs(1),
            rss_growth_pct: DEFAULT_RSS_GROWTH_PCT,
            rss_slack_kib: DEFAULT_RSS_SLACK_KIB,
            act_min: Duration::from_secs(1),
            act_max: Duration::from_secs(10),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(3),
            ramp: 1000.0,
            reply_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(5),
            progress_every: None,
        }
    }
}

/// Actions taken, by kind.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Actions {
    /// Close frame 1000, wait for the server to close, reconnect and resume.
    pub disconnect_close: u64,
    /// Reset (SO_LINGER 0), reconnect and resume.
    pub disconnect_reset: u64,
    pub unsubscribe: u64,
    /// A fresh subscribe (no `since`) after an unsubscribe.
    pub subscribe: u64,
    pub scan: u64,
    pub ack: u64,
    pub ping: u64,
}

impl Actions {
    /// Every kind with its count, in a fixed order.
    pub fn by_kind(&self) -> [(&'static str, u64); 7] {
        [
            ("disconnect_close", self.disconnect_close),
            ("disconnect_reset", self.disconnect_reset),
            ("unsubscribe", self.unsubscribe),
            ("subscribe", self.subscribe),
            ("scan", self.scan),
            ("ack", self.ack),
            ("ping", self.ping),
        ]
    }

    pub fn total(&self) -> u64 {
        self.by_kind().iter().map(|(_, n)| n).sum()
    }
}

/// One RSS sample: seconds since the start and VmRSS in KiB.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RssSample {
    pub t_s: f64,
    pub kib: u64,
}

/// The RSS rule applied to a curve.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RssJudgement {
    /// Samples taken at or after the warm-up.
    pub samples: usize,
    /// Median of the first third of those, and of the last third.
    pub early_kib: u64,
    pub late_kib: u64,
    /// The allowance, and the limit it gives: `early_kib * (100 + growth_pct) / 100 +
    /// slack_kib`.
    pub growth_pct: u64,
    pub slack_kib: u64,
    pub limit_kib: u64,
    /// Largest sample of the first and of the last third, for the record.
    pub early_max_kib: u64,
    pub late_max_kib: u64,
    /// `None` when there are fewer than 3 samples after the warm-up (not judged).
    pub flat: Option<bool>,
}

/// Applies the RSS rule: the samples at or after `warmup_s` are cut in thirds; RSS is
/// flat when the median of the last third is at most the median of the first third plus
/// `growth_pct` percent plus `slack_kib` (by default [`DEFAULT_RSS_GROWTH_PCT`] and
/// [`DEFAULT_RSS_SLACK_KIB`]).
///
/// Medians, because a sample that lands while the server holds one of the sim's
/// once-a-second bursts of results for 1,000 readers reads up to three times the level
/// between bursts (about one sample in six); a rule on maxima would pass or fail on where
/// those happen to fall. A leak raises the whole
/// curve, and so the median: in a 30-minute soak of 1,000 clients, 1 KiB per reconnect
/// or 1 byte per 10 results adds some 42 or 26 MiB between the two medians, against an
/// allowance of 7 to 15 MiB. The percentage and the constant leave room for the
/// allocator's own slack.
pub fn judge_rss(
    samples: &[RssSample],
    warmup_s: f64,
    growth_pct: u64,
    slack_kib: u64,
) -> RssJudgement {
    let after: Vec<u64> = samples
        .iter()
        .filter(|s| s.t_s >= warmup_s)
        .map(|s| s.kib)
        .collect();
    let third = after.len() / 3;
    if third == 0 {
        return RssJudgement {
            samples: after.len(),
            growth_pct,
            slack_kib,
            ..RssJudgement::default()
        };
    }
    let early = &after[..third];
    let late = &after[after.len() - third..];
    let limit = median(early) * (100 + growth_pct) / 100 + slack_kib;
    RssJudgement {
        samples: after.len(),
        early_kib: median(early),
        late_kib: median(late),
        growth_pct,
        slack_kib,
        limit_kib: limit,
        early_max_kib: early.iter().copied().max().unwrap_or(0),
        late_max_kib: late.iter().copied().max().unwrap_or(0),
        flat: Some(median(late) <= limit),
    }
}

/// The median (the lower middle value of an even count).
fn median(v: &[u64]) -> u64 {
    let mut v = v.to_vec();
    v.sort_unstable();
    v.get(v.len().saturating_sub(1) / 2).copied().unwrap_or(0)
}

/// Everything a soak run measured.
#[derive(Debug, Default)]
pub struct SoakReport {
    pub addr: String,
    pub clients: usize,
    pub seed: u64,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub actions: Actions,
    /// Completed handshakes (first connects and reconnects).
    pub connects: u64,
    /// Failed connects and handshakes, by reason.
    pub connect_failures: u64,
    pub connect_errors: BTreeMap<String, u64>,
    /// Results received, and how many of them were replayed after a resume (the sum of
    /// the `replayed` counts of the `subscribed` replies).
    pub results: u64,
    pub replayed: u64,
    /// `subscribed` replies to a subscribe with `since` and `epoch`.
    pub resumes: u64,
    /// Of those, replies with `recovered: false` or another epoch.
    pub not_recovered: u64,
    /// `seq` values skipped, and results at or below the last `seq` seen.
    pub lost: u64,
    pub duplicated: u64,
    /// Results on a connection that held no subscription.
    pub stray_results: u64,
    /// Results whose `seq` could not be read, and other messages that were not JSON.
    pub bad_messages: u64,
    /// Replies matched to their requests, by reply type.
    pub replies: BTreeMap<String, u64>,
    pub reply_latency_ms: [f64; 3],
    /// Requests unanswered after `reply_timeout` on a connection still open.
    pub reply_timeouts: u64,
    /// Replies of the wrong type or content for their `id`, or with an `id` never sent.
    pub bad_replies: u64,
    /// Requests whose connection ended before their reply (expected around disconnects).
    pub abandoned: u64,
    pub errors: BTreeMap<String, u64>,
    /// Errors other than `queue_full` for a scan.
    pub unexpected_errors: u64,
    pub last_unexpected: Option<String>,
    /// Broadcasts: `alert`, `acked` without an `id`, `status` without one; and `status`
    /// of phase `adhoc` that ended an ad-hoc scan of ours.
    pub alerts: u64,
    pub acked_broadcasts: u64,
    pub statuses: u64,
    pub adhoc_done: u64,
    pub other_messages: BTreeMap<String, u64>,
    /// Close codes the server sent, whether answering our close or not (1006: the
    /// connection ended without a close frame).
    pub close_codes: BTreeMap<u16, u64>,
    /// Connections the server ended without being asked, and their codes.
    pub unexpected_disconnects: u64,
    pub unexpected_close_codes: BTreeMap<u16, u64>,
    /// Clean closes the server did not complete within `close_timeout`.
    pub close_timeouts: u64,
    pub protocol_errors: u64,
    pub last_protocol_error: Option<String>,
    pub rss_pid: Option<u32>,
    pub rss_every_s: f64,
    pub rss: Vec<RssSample>,
    pub rss_judgement: RssJudgement,
    /// The RSS process could not be read any more (it exited).
    pub rss_lost: bool,
    pub loadgen_cpu_s: f64,
}

impl SoakReport {
    /// Why the run failed; empty when it passed. The rules: nothing lost or duplicated,
    /// every resume recovered, no result outside a subscription, no 4008 or 1011 close,
    /// no unexpected disconnect, no connect failure, every request answered correctly
    /// and in time, no unexpected error reply, no protocol error, RSS flat after the
    /// warm-up (when sampled), and some results at all.
    pub fn failures(&self) -> Vec<String> {
        let mut f = Vec::new();
        let mut check = |bad: bool, what: String| {
            if bad {
                f.push(what);
            }
        };
        check(self.results == 0, "no result arrived".into());
        check(self.lost > 0, format!("{} results lost", self.lost));
        check(
            self.duplicated > 0,
            format!("{} results duplicated", self.duplicated),
        );
        check(
            self.not_recovered > 0,
            format!("{} resumes not recovered", self.not_recovered),
        );
        check(
            self.stray_results > 0,
            format!("{} results without a subscription", self.stray_results),
        );
        for code in [4008u16, 1011] {
            let n = self.close_codes.get(&code).copied().unwrap_or(0);
            check(n > 0, format!("{n} closes with {code}"));
        }
        check(
            self.unexpected_disconnects > 0,
            format!("{} unexpected disconnects", self.unexpected_disconnects),
        );
        check(
            self.connect_failures > 0,
            format!("{} connect failures", self.connect_failures),
        );
        check(
            self.reply_timeouts > 0,
            format!("{} requests unanswered", self.reply_timeouts),
        );
        check(
            self.bad_replies > 0,
            format!("{} wrong or unmatched replies", self.bad_replies),
        );
        check(
            self.unexpected_errors > 0,
            format!(
                "{} unexpected error replies (last: {})",
                self.unexpected_errors,
                self.last_unexpected.as_deref().unwrap_or("?")
            ),
        );
        check(
            self.bad_messages > 0,
            format!("{} unreadable messages", self.bad_messages),
        );
        check(
            self.protocol_errors > 0,
            format!(
                "{} protocol errors (last: {})",
                self.protocol_errors,
                self.last_protocol_error.as_deref().unwrap_or("?")
            ),
        );
        check(
            self.close_timeouts > 0,
            format!("{} clean closes not completed", self.close_timeouts),
        );
        check(
            self.rss_lost,
            "the RSS process could not be read (exited?)".into(),
        );
        let j = &self.rss_judgement;
        if self.rss_pid.is_some() {
            match j.flat {
                Some(true) => {}
                Some(false) => f.push(format!(
                    "RSS grew: median of the last third {} KiB > limit {} KiB (first third {} KiB)",
                    j.late_kib, j.limit_kib, j.early_kib
                )),
                None => f.push(format!(
                    "too few RSS samples after the warm-up to judge ({})",
                    j.samples
                )),
            }
        }
        f
    }

    pub fn passed(&self) -> bool {
        self.failures().is_empty()
    }

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
                "ws://{} {} clients, {:.1} s ({} s warm-up), seed {}",
                self.addr, self.clients, self.duration_s, self.warmup_s, self.seed
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

/// Where a client stands on its results: the chain it follows and its run's epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub seq: Seq,
    pub epoch: String,
}

/// The fields of a `subscribed` reply the driver checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribed {
    pub epoch: String,
    pub seq: u64,
    pub recovered: bool,
    pub replayed: u64,
}

impl Subscribed {
    fn from_data(data: &Value) -> Option<Subscribed> {
        Some(Subscribed {
            epoch: data.get("epoch")?.as_str()?.to_string(),
            seq: data.get("seq")?.as_u64()?,
            recovered: data.get("recovered")?.as_bool()?,
            replayed: data.get("replayed")?.as_u64()?,
        })
    }
}

/// The chain after a `subscribed` reply, and whether a resume recovered. A fresh
/// subscribe starts a chain at the reply's `seq`: results after the reply are the ones
/// published after it. A resume goes on from the client's last `seq` when the server
/// says it recovered and the epoch is the same; otherwise the next result starts anew.
pub fn after_subscribed(chain: Option<Chain>, resumed: bool, reply: &Subscribed) -> (Chain, bool) {
    match chain {
        Some(c) if resumed => {
            if reply.recovered && reply.epoch == c.epoch {
                (c, true)
            } else {
                let fresh = Chain {
                    seq: Seq::default(),
                    epoch: reply.epoch.clone(),
                };
                (fresh, false)
            }
        }
        _ => (
            Chain {
                seq: Seq::after(reply.seq),
                epoch: reply.epoch.clone(),
            },
            true,
        ),
    }
}

/// Requests awaiting their reply.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Request {
    Subscribe { resume: bool },
    Unsubscribe,
    Scan,
    Ack(Box<str>),
    Ping,
}

struct Pending {
    id: u64,
    req: Request,
    sent: Instant,
}

/// The subscription as the client knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sub {
    Off,
    Subscribing,
    On,
    Unsubscribing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No socket; (re)connect at this instant.
    Waiting(Instant),
    /// `connect` issued at this instant.
    Connecting(Instant),
    /// Upgrade request sent; the connect was issued at this instant.
    Handshaking(Instant),
    Open,
    /// Our close frame is out; the server must close by this instant.
    Closing(Instant),
}

/// Why a connection ended.
#[derive(Debug)]
enum End {
    CloseFrame(Option<u16>),
    /// EOF or a socket error.
    Abrupt,
    Protocol(WsError),
}

struct Conn {
    sock: TcpStream,
    partial: Vec<u8>,
    out: Vec<u8>,
    accept: String,
    /// The server's close frame came (while closing): only its EOF is awaited.
    server_closed: bool,
}

impl Conn {
    fn flush(&mut self) -> io::Result<()> {
        ws::flush(&mut self.sock, &mut self.out)
    }
}

struct Client {
    index: usize,
    /// The client's choices: actions, intervals, symbols, alert ids.
    rng: Rng,
    /// Masks and handshake nonces, apart, so that how many frames a client sends does
    /// not change its choices.
    masks: Rng,
    conn: Option<Conn>,
    phase: Phase,
    sub: Sub,
    chain: Option<Chain>,
    pending: Vec<Pending>,
    next_id: u64,
    next_action: Instant,
}

/// Counters, and the symbols and alert ids seen, shared by all clients.
#[derive(Default)]
struct Shared {
    r: SoakReport,
    reply_hist: Histogram,
    /// `seq` values lost and duplicated, over every client.
    seq: Tally,
    symbols: Vec<Box<str>>,
    symbol_set: HashSet<Box<str>>,
    alert_ids: VecDeque<Box<str>>,
}

impl Shared {
    fn unexpected(&mut self, what: String) {
        self.r.unexpected_errors += 1;
        self.r.last_unexpected = Some(what);
    }

    fn reply(&mut self, ty: &str, sent: Instant, now: Instant) {
        *self.r.replies.entry(ty.to_string()).or_default() += 1;
        self.reply_hist
            .record(now.saturating_duration_since(sent).as_nanos() as u64);
    }

    fn learn_symbol(&mut self, payload: &[u8]) {
        const KEY: &[u8] = b"\"symbol\":\"";
        let Some(at) = msg::find(payload, KEY) else {
            return;
        };
        let rest = &payload[at + KEY.len()..];
        let Some(end) = rest.iter().position(|&b| b == b'"') else {
            return;
        };
        let Ok(sym) = std::str::from_utf8(&rest[..end]) else {
            return;
        };
        if !sym.is_empty() && !self.symbol_set.contains(sym) {
            self.symbol_set.insert(sym.into());
            self.symbols.push(sym.into());
        }
    }
}

impl Client {
    fn new(index: usize, seed: u64, start: Instant) -> Client {
        let mut rng = Rng::new(seed ^ (index as u64 + 1).wrapping_mul(0xD6E8_FEB8_6659_FD93));
        let masks = Rng::new(rng.next_u64());
        Client {
            index,
            rng,
            masks,
            conn: None,
            phase: Phase::Waiting(start),
            sub: Sub::Off,
            chain: None,
            pending: Vec::new(),
            next_id: 0,
            next_action: start,
        }
    }

    fn mask(&mut self) -> [u8; 4] {
        self.masks.mask()
    }

    /// Queues a request (a text message with a fresh `id`) and remembers it.
    fn request(&mut self, ty: &str, data: Option<Value>, req: Request, now: Instant) {
        self.next_id += 1;
        let id = self.next_id;
        let mut m = json!({"type": ty, "id": format!("c{}-{}", self.index, id)});
        if let Some(d) = data {
            m["data"] = d;
        }
        let text = m.to_string();
        let mask = self.mask();
        if let Some(conn) = self.conn.as_mut() {
            ws::write_frame(&mut conn.out, ws::OP_TEXT, text.as_bytes(), mask);
            self.pending.push(Pending { id, req, sent: now });
        }
    }

    fn subscribe(&mut self, now: Instant) {
        let mut data = json!({"subscription": SUBSCRIPTION, "filters": {}});
        let resume = match self
            .chain
            .as_ref()
            .and_then(|c| Some((c.seq.last()?, &c.epoch)))
        {
            Some((last, epoch)) => {
                data["since"] = json!(last);
                data["epoch"] = json!(epoch);
                true
            }
            _ => {
                self.chain = None;
                false
            }
        };
        self.sub = Sub::Subscribing;
        self.request("subscribe", Some(data), Request::Subscribe { resume }, now);
    }

    /// Takes the pending request with this `id` (`c<index>-<n>`), if it is ours.
    fn take_pending(&mut self, id: &str) -> Option<Pending> {
        let n: u64 = id
            .strip_prefix('c')?
            .split_once('-')
            .filter(|(c, _)| c.parse() == Ok(self.index))?
            .1
            .parse()
            .ok()?;
        let i = self.pending.iter().position(|p| p.id == n)?;
        Some(self.pending.swap_remove(i))
    }

    fn on_result(&mut self, seq: u64, sh: &mut Shared) {
        sh.r.results += 1;
        match (self.sub, self.chain.as_mut()) {
            (Sub::On | Sub::Unsubscribing, Some(chain)) => sh.seq.add(chain.seq.observe(seq)),
            _ => sh.r.stray_results += 1,
        }
    }

    /// A text message other than a result.
    fn on_message(&mut self, payload: &[u8], sh: &mut Shared, now: Instant, cfg: &SoakConfig) {
        let Ok(v) = serde_json::from_slice::<Value>(payload) else {
            sh.r.bad_messages += 1;
            return;
        };
        let ty = v.get("type").and_then(Value::as_str).unwrap_or("");
        let data = v.get("data").unwrap_or(&Value::Null);
        let id = v.get("id").and_then(Value::as_str);
        let pending = match id {
            Some(id) => match self.take_pending(id) {
                Some(p) => Some(p),
                // The `adhoc` status that ends one of our scans carries its id too.
                None if ty == "status" && data["phase"] == "adhoc" => None,
                None => {
                    sh.r.bad_replies += 1;
                    return;
                }
            },
            None => None,
        };
        match (ty, pending) {
            ("error", p) => {
                let code = data["code"].as_str().unwrap_or("?").to_string();
                *sh.r.errors.entry(code.clone()).or_default() += 1;
                let expected =
                    matches!(&p, Some(p) if p.req == Request::Scan && code == "queue_full");
                if !expected {
                    let what = match &p {
                        Some(p) => format!("{code} for {:?}: {}", p.req, data["message"]),
                        None => format!("{code}: {}", data["message"]),
                    };
                    sh.unexpected(what);
                }
                if let Some(Pending {
                    req: Request::Subscribe { .. } | Request::Unsubscribe,
                    ..
                }) = p
                {
                    // The subscription is in an unknown state: start over on a new
                    // connection, resuming where the chain stands.
                    self.sub = Sub::Off;
                }
            }
            (
                "subscribed",
                Some(
                    p @ Pending {
                        req: Request::Subscribe { resume },
                        ..
                    },
                ),
            ) => {
                sh.reply("subscribed", p.sent, now);
                let Some(reply) = Subscribed::from_data(data) else {
                    sh.r.bad_replies += 1;
                    return;
                };
                let (chain, recovered) = after_subscribed(self.chain.take(), resume, &reply);
                if resume {
                    sh.r.resumes += 1;
                    sh.r.replayed += reply.replayed;
                    if !recovered {
                        sh.r.not_recovered += 1;
                    }
                }
                self.chain = Some(chain);
                self.sub = Sub::On;
                if self.next_action <= now {
                    self.next_action = now + self.rng.between(cfg.act_min, cfg.act_max);
                }
            }
            (
                "unsubscribed",
                Some(
                    p @ Pending {
                        req: Request::Unsubscribe,
                        ..
                    },
                ),
            ) => {
                sh.reply("unsubscribed", p.sent, now);
                self.sub = Sub::Off;
                self.chain = None;
            }
            (
                "pong",
                Some(
                    p @ Pending {
                        req: Request::Ping, ..
                    },
                ),
            ) => sh.reply("pong", p.sent, now),
            (
                "status",
                Some(
                    p @ Pending {
                        req: Request::Scan, ..
                    },
                ),
            ) => {
                if data["phase"] == "queued" {
                    sh.reply("status queued", p.sent, now);
                } else {
                    sh.r.bad_replies += 1;
                }
            }
            (
                "acked",
                Some(
                    p @ Pending {
                        req: Request::Ack(_),
                        ..
                    },
                ),
            ) => {
                let Request::Ack(want) = &p.req else { return };
                if data["alert_id"].as_str() == Some(want) {
                    sh.reply("acked", p.sent, now);
                } else {
                    sh.r.bad_replies += 1;
                }
            }
            (_, Some(_)) => sh.r.bad_replies += 1,
            ("status", None) if id.is_some() => sh.r.adhoc_done += 1,
            ("status", None) => sh.r.statuses += 1,
            ("acked", None) => sh.r.acked_broadcasts += 1,
            ("alert", None) => {
                sh.r.alerts += 1;
                if let Some(a) = data["alert_id"].as_str() {
                    if sh.alert_ids.len() == ALERT_POOL {
                        sh.alert_ids.pop_front();
                    }
                    sh.alert_ids.push_back(a.into());
                }
            }
            (other, None) => {
                *sh.r.other_messages.entry(other.to_string()).or_default() += 1;
            }
        }
    }

    /// Handles every whole frame at the start of `buf`: returns the bytes used and the
    /// end of the connection if a frame ended it.
    fn on_frames(
        &mut self,
        buf: &[u8],
        sh: &mut Shared,
        now: Instant,
        cfg: &SoakConfig,
    ) -> (usize, Option<End>) {
        let mut pos = 0;
        loop {
            let (frame, used) = match ws::parse(&buf[pos..], MAX_FRAME) {
                Ok(Parsed::Frame(f, used)) => (f, used),
                Ok(Parsed::Incomplete { .. }) => return (pos, None),
                Err(e) => return (pos, Some(End::Protocol(e))),
            };
            pos += used;
            match frame {
                Frame::Text { fin: true, payload } => match msg::classify(payload) {
                    Kind::Result { seq, .. } => {
                        if sh.symbols.len() < SYMBOL_POOL
                            && (sh.symbols.len() < 32 || sh.r.results.is_multiple_of(64))
                        {
                            sh.learn_symbol(payload);
                        }
                        self.on_result(seq, sh);
                    }
                    Kind::BadResult => sh.r.bad_messages += 1,
                    Kind::Other(_) | Kind::Untyped => self.on_message(payload, sh, now, cfg),
                },
                Frame::Text { .. } | Frame::Binary { .. } | Frame::Continuation { .. } => {
                    let why = "a fragmented or binary message (the server sends neither)";
                    return (pos, Some(End::Protocol(WsError::Protocol(why))));
                }
                Frame::Ping(p) => {
                    let mask = self.mask();
                    if let Some(conn) = self.conn.as_mut() {
                        ws::write_frame(&mut conn.out, ws::OP_PONG, p, mask);
                    }
                }
                Frame::Pong(_) => {}
                Frame::Close(code) => return (pos, Some(End::CloseFrame(code))),
            }
        }
    }

    /// Drops the socket (with a reset when asked) and waits to reconnect.
    fn drop_conn(
        &mut self,
        reg: &Registry,
        reset: bool,
        sh: &mut Shared,
        cfg: &SoakConfig,
        now: Instant,
    ) {
        if let Some(mut conn) = self.conn.take() {
            let _ = reg.deregister(&mut conn.sock);
            if reset {
                sys::set_linger_zero(&conn.sock);
            }
        }
        sh.r.abandoned += self.pending.len() as u64;
        self.pending.clear();
        // The server forgets the subscription with the connection; the chain stays, so
        // the next connection resumes from it.
        self.sub = Sub::Off;
        self.phase = Phase::Waiting(now + self.rng.between(cfg.reconnect_min, cfg.reconnect_max));
    }

    fn connect_failed(&mut self, reg: &Registry, why: String, sh: &mut Shared, now: Instant) {
        sh.r.connect_failures += 1;
        *sh.r.connect_errors.entry(why).or_default() += 1;
        if let Some(mut conn) = self.conn.take() {
            let _ = reg.deregister(&mut conn.sock);
            sys::set_linger_zero(&conn.sock);
        }
        self.phase = Phase::Waiting(now + RETRY);
    }

    /// An open or closing connection ended.
    fn ended(&mut self, reg: &Registry, end: End, sh: &mut Shared, cfg: &SoakConfig, now: Instant) {
        let closing = matches!(self.phase, Phase::Closing(_));
        match end {
            End::CloseFrame(code) if closing => {
                // Our close is answered: wait for the server's EOF, so the server,
                // closing first, keeps the TIME_WAIT.
                *sh.r.close_codes.entry(code.unwrap_or(1005)).or_default() += 1;
                if let Some(conn) = self.conn.as_mut() {
                    conn.server_closed = true;
                    conn.partial.clear();
                }
            }
            End::Abrupt if closing => self.drop_conn(reg, false, sh, cfg, now),
            End::CloseFrame(code) => {
                let code = code.unwrap_or(1005);
                *sh.r.close_codes.entry(code).or_default() += 1;
                *sh.r.unexpected_close_codes.entry(code).or_default() += 1;
                sh.r.unexpected_disconnects += 1;
                let mask = self.mask();
                if let Some(conn) = self.conn.as_mut() {
                    ws::write_close(&mut conn.out, if code == 1005 { 1000 } else { code }, mask);
                    let _ = conn.flush();
                }
                self.drop_conn(reg, false, sh, cfg, now);
            }
            End::Abrupt => {
                *sh.r.close_codes.entry(1006).or_default() += 1;
                *sh.r.unexpected_close_codes.entry(1006).or_default() += 1;
                sh.r.unexpected_disconnects += 1;
                self.drop_conn(reg, true, sh, cfg, now);
            }
            End::Protocol(e) => {
                sh.r.protocol_errors += 1;
                sh.r.last_protocol_error = Some(e.to_string());
                let mask = self.mask();
                if let Some(conn) = self.conn.as_mut() {
                    ws::write_close(&mut conn.out, e.close_code(), mask);
                    let _ = conn.flush();
                }
                self.drop_conn(reg, true, sh, cfg, now);
            }
        }
    }

    /// Opens the connection.
    fn connect(&mut self, reg: &Registry, cfg: &SoakConfig, sh: &mut Shared, now: Instant) {
        let mut sock = match TcpStream::connect(cfg.addr) {
            Ok(s) => s,
            Err(e) => return self.connect_failed(reg, format!("connect: {e}"), sh, now),
        };
        if let Err(e) = reg.register(
            &mut sock,
            Token(self.index),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            return self.connect_failed(reg, format!("register: {e}"), sh, now);
        }
        self.conn = Some(Conn {
            sock,
            partial: Vec::new(),
            out: Vec::new(),
            accept: String::new(),
            server_closed: false,
        });
        self.phase = Phase::Connecting(now);
    }

    /// The socket became writable while connecting: send the upgrade request.
    fn on_connected(&mut self, reg: &Registry, cfg: &SoakConfig, sh: &mut Shared, now: Instant) {
        let Phase::Connecting(since) = self.phase else {
            return;
        };
        let nonce = self.masks.nonce();
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let err = match conn.sock.take_error() {
            Ok(Some(e)) | Err(e) => Some(e),
            Ok(None) => match conn.sock.peer_addr() {
                Ok(_) => None,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => Some(e),
            },
        };
        if let Some(e) = err {
            return self.connect_failed(reg, format!("connect: {e}"), sh, now);
        }
        let key = ws::client_key(nonce);
        conn.accept = ws::accept_key(key.as_bytes());
        let req = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n",
            cfg.path, cfg.host
        );
        conn.out.extend_from_slice(req.as_bytes());
        self.phase = Phase::Handshaking(since);
        if let Err(e) = conn.flush() {
            self.connect_failed(reg, format!("handshake: {e}"), sh, now);
        }
    }

    /// Reads the `101` response; once it is whole, subscribes (resuming when the client
    /// has a chain) and handles frames that came with it. True when open.
    fn read_handshake(&mut self, reg: &Registry, sh: &mut Shared, now: Instant) -> bool {
        let Some(conn) = self.conn.as_mut() else {
            return false;
        };
        let failure = match ws::read_handshake(&mut conn.sock, &mut conn.partial, &conn.accept) {
            Ok(false) => return false,
            Ok(true) => None,
            Err(why) => Some(why),
        };
        if let Some(why) = failure {
            self.connect_failed(reg, format!("handshake: {why}"), sh, now);
            return false;
        }
        sh.r.connects += 1;
        self.phase = Phase::Open;
        self.subscribe(now);
        true
    }

    /// The client's timer: reconnects, deadlines, unanswered requests and actions.
    fn tick(&mut self, reg: &Registry, cfg: &SoakConfig, sh: &mut Shared, now: Instant) {
        match self.phase {
            Phase::Waiting(at) if now >= at => self.connect(reg, cfg, sh, now),
            Phase::Waiting(_) => {}
            Phase::Connecting(since) | Phase::Handshaking(since)
                if now.saturating_duration_since(since) > cfg.connect_timeout =>
            {
                let what = match self.phase {
                    Phase::Connecting(_) => "connect timed out",
                    _ => "handshake timed out",
                };
                self.connect_failed(reg, what.into(), sh, now);
            }
            Phase::Connecting(_) | Phase::Handshaking(_) => {}
            Phase::Closing(deadline) if now >= deadline => {
                sh.r.close_timeouts += 1;
                self.drop_conn(reg, true, sh, cfg, now);
            }
            Phase::Closing(_) => {}
            Phase::Open => {
                let before = self.pending.len();
                self.pending
                    .retain(|p| now.saturating_duration_since(p.sent) <= cfg.reply_timeout);
                sh.r.reply_timeouts += (before - self.pending.len()) as u64;
                if now >= self.next_action {
                    self.act(reg, cfg, sh, now);
                }
            }
        }
    }

    /// One random action, when the client is in a state to take one.
    fn act(&mut self, reg: &Registry, cfg: &SoakConfig, sh: &mut Shared, now: Instant) {
        match self.sub {
            Sub::Off => {
                sh.r.actions.subscribe += 1;
                self.subscribe(now);
            }
            Sub::On => {
                let total: u32 = WEIGHTS.iter().sum();
                let mut pick = self.rng.below(u64::from(total)) as u32;
                let mut kind = 0;
                while pick >= WEIGHTS[kind] {
                    pick -= WEIGHTS[kind];
                    kind += 1;
                }
                // Nothing to scan or acknowledge yet: a ping instead.
                if (kind == 2 && sh.symbols.is_empty()) || (kind == 3 && sh.alert_ids.is_empty()) {
                    kind = 4;
                }
                match kind {
                    0 => return self.disconnect(reg, cfg, sh, now),
                    1 => {
                        sh.r.actions.unsubscribe += 1;
                        self.sub = Sub::Unsubscribing;
                        let data = json!({"subscription": SUBSCRIPTION});
                        self.request("unsubscribe", Some(data), Request::Unsubscribe, now);
                    }
                    2 => {
                        sh.r.actions.scan += 1;
                        let n = 1 + self.rng.below(3) as usize;
                        let symbols: Vec<&str> = (0..n)
                            .map(|_| &*sh.symbols[self.rng.below(sh.symbols.len() as u64) as usize])
                            .collect();
                        let data = json!({ "symbols": symbols });
                        self.request("scan", Some(data), Request::Scan, now);
                    }
                    3 => {
                        sh.r.actions.ack += 1;
                        let a = sh.alert_ids[self.rng.below(sh.alert_ids.len() as u64) as usize]
                            .clone();
                        let data = json!({ "alert_id": &*a });
                        self.request("ack", Some(data), Request::Ack(a), now);
                    }
                    _ => {
                        sh.r.actions.ping += 1;
                        self.request("ping", None, Request::Ping, now);
                    }
                }
            }
            // A reply is awaited: act at the next tick after it.
            Sub::Subscribing | Sub::Unsubscribing => return,
        }
        self.next_action = now + self.rng.between(cfg.act_min, cfg.act_max);
        self.flush_or_end(reg, cfg, sh, now);
    }

    fn disconnect(&mut self, reg: &Registry, cfg: &SoakConfig, sh: &mut Shared, now: Instant) {
        self.next_action = now + self.rng.between(cfg.act_min, cfg.act_max);
        if self.rng.below(2) == 0 {
            sh.r.actions.disconnect_close += 1;
            let mask = self.mask();
            if let Some(conn) = self.conn.as_mut() {
                ws::write_close(&mut conn.out, 1000, mask);
            }
            self.phase = Phase::Closing(now + cfg.close_timeout);
            self.flush_or_end(reg, cfg, sh, now);
        } else {
            sh.r.actions.disconnect_reset += 1;
            // What the client has not read is gone with the socket: the resume replays it.
            self.drop_conn(reg, true, sh, cfg, now);
        }
    }

    fn flush_or_end(&mut self, reg: &Registry, cfg: &SoakConfig, sh: &mut Shared, now: Instant) {
        if let Some(conn) = self.conn.as_mut()
            && conn.flush().is_err()
        {
            self.ended(reg, End::Abrupt, sh, cfg, now);
        }
    }
}

/// Runs the soak: ramps the clients up, lets them act at random until `duration` has
/// passed since the start, samples RSS, then closes every connection and reports.
pub fn run(cfg: SoakConfig) -> io::Result<SoakReport> {
    if cfg.act_min.is_zero() || cfg.act_max < cfg.act_min {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "act_min must be above 0 and at most act_max",
        ));
    }
    if cfg.reconnect_max < cfg.reconnect_min || cfg.rss_every.is_zero() || cfg.ramp <= 0.0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "reconnect_min must be at most reconnect_max; rss_every and ramp above 0",
        ));
    }
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let start = Instant::now();
    let end = start + cfg.duration;
    let cpu0 = sys::thread_cpu_ns();
    let mut clients: Vec<Client> = (0..cfg.clients)
        .map(|i| {
            let at = start + Duration::from_secs_f64(i as f64 / cfg.ramp);
            let mut c = Client::new(i, cfg.seed, start);
            c.phase = Phase::Waiting(at);
            c.next_action = at + c.rng.between(cfg.act_min, cfg.act_max);
            c
        })
        .collect();
    let mut sh = Shared::default();
    let mut rbuf = vec![0u8; READ_CHUNK];
    let mut ready: Vec<usize> = Vec::new();
    let mut next_tick = start;
    let mut next_rss = start;
    let mut rss_rng = Rng::new(!cfg.seed);
    let mut next_progress = cfg.progress_every.map(|p| start + p);
    loop {
        let now = Instant::now();
        if now >= next_rss {
            if let Some(pid) = cfg.rss_pid {
                match sys::rss_kib(pid) {
                    Some(kib) => sh.r.rss.push(RssSample {
                        t_s: now.duration_since(start).as_secs_f64(),
                        kib,
                    }),
                    None => sh.r.rss_lost = true,
                }
            }
            next_rss = now + cfg.rss_every.mul_f64(0.5 + rss_rng.unit());
        }
        if now >= end {
            break;
        }
        if now >= next_tick {
            next_tick = now + TICK;
            let reg = poll.registry();
            for c in clients.iter_mut() {
                c.tick(reg, &cfg, &mut sh, now);
            }
        }
        if let (Some(at), Some(every)) = (next_progress, cfg.progress_every)
            && now >= at
        {
            next_progress = Some(at + every);
            let open = clients.iter().filter(|c| c.phase == Phase::Open).count();
            let r = &sh.r;
            eprintln!(
                "soak: {:>5.0} s  open {open}/{}  actions {}  results {}  resumes {}  lost {}  duplicated {}  failures {}  rss {} KiB",
                now.duration_since(start).as_secs_f64(),
                cfg.clients,
                r.actions.total(),
                r.results,
                r.resumes,
                sh.seq.lost,
                sh.seq.duplicated,
                r.connect_failures + r.unexpected_disconnects + r.reply_timeouts + r.not_recovered,
                r.rss.last().map_or(0, |s| s.kib)
            );
        }
        let deadline = next_tick.min(next_rss).min(end);
        let timeout = if ready.is_empty() {
            deadline.saturating_duration_since(Instant::now())
        } else {
            Duration::ZERO
        };
        if let Err(e) = poll.poll(&mut events, Some(timeout))
            && e.kind() != io::ErrorKind::Interrupted
        {
            return Err(e);
        }
        let now = Instant::now();
        let reg = poll.registry();
        for ev in events.iter() {
            let i = ev.token().0;
            let Some(c) = clients.get_mut(i) else {
                continue;
            };
            let readable = ev.is_readable() || ev.is_read_closed() || ev.is_error();
            match c.phase {
                Phase::Connecting(_) => {
                    c.on_connected(reg, &cfg, &mut sh, now);
                    // The response may already be there; it raises its own edge anyway.
                }
                Phase::Handshaking(_) => {
                    if ev.is_writable() {
                        c.flush_or_end(reg, &cfg, &mut sh, now);
                    }
                    if readable && c.read_handshake(reg, &mut sh, now) {
                        // Frames that came with the 101, then the rest of the socket.
                        let early = c
                            .conn
                            .as_mut()
                            .map(|conn| std::mem::take(&mut conn.partial));
                        if let Some(early) = early {
                            let (used, end) = c.on_frames(&early, &mut sh, now, &cfg);
                            if let Some(conn) = c.conn.as_mut() {
                                conn.partial.extend_from_slice(&early[used..]);
                            }
                            if let Some(end) = end {
                                c.ended(reg, end, &mut sh, &cfg, now);
                                continue;
                            }
                        }
                        c.flush_or_end(reg, &cfg, &mut sh, now);
                        if read_frames(c, reg, &mut rbuf, &mut sh, &cfg, now) {
                            ready.push(i);
                        }
                    }
                }
                Phase::Open | Phase::Closing(_) => {
                    if ev.is_writable() {
                        c.flush_or_end(reg, &cfg, &mut sh, now);
                    }
                    if readable && read_frames(c, reg, &mut rbuf, &mut sh, &cfg, now) {
                        ready.push(i);
                    }
                }
                Phase::Waiting(_) => {}
            }
        }
        for i in std::mem::take(&mut ready) {
            let c = &mut clients[i];
            if matches!(c.phase, Phase::Open | Phase::Closing(_))
                && read_frames(c, reg, &mut rbuf, &mut sh, &cfg, now)
            {
                ready.push(i);
            }
        }
    }
    // Close what is open, politely, without waiting for the answers.
    let reg = poll.registry();
    for c in clients.iter_mut() {
        let mask = c.mask();
        if let Some(mut conn) = c.conn.take() {
            if c.phase == Phase::Open {
                ws::write_close(&mut conn.out, 1000, mask);
                let _ = conn.flush();
            }
            let _ = reg.deregister(&mut conn.sock);
        }
    }
    let mut r = std::mem::take(&mut sh.r);
    r.lost = sh.seq.lost;
    r.duplicated = sh.seq.duplicated;
    r.addr = cfg.addr.to_string();
    r.clients = cfg.clients;
    r.seed = cfg.seed;
    r.duration_s = start.elapsed().as_secs_f64();
    r.warmup_s = cfg.warmup.as_secs_f64();
    let h = &sh.reply_hist;
    let ms = |ns: u64| (ns as f64 / 1e3).round() / 1e3;
    r.reply_latency_ms = [ms(h.quantile(0.5)), ms(h.quantile(0.99)), ms(h.max())];
    r.rss_pid = cfg.rss_pid;
    r.rss_every_s = cfg.rss_every.as_secs_f64();
    r.rss_judgement = judge_rss(&r.rss, r.warmup_s, cfg.rss_growth_pct, cfg.rss_slack_kib);
    r.loadgen_cpu_s = sys::thread_cpu_ns().saturating_sub(cpu0) as f64 / 1e9;
    Ok(r)
}

/// Reads an open or closing connection until `WouldBlock` or its budget; true when cut
/// short (the caller reads it again before polling).
fn read_frames(
    c: &mut Client,
    reg: &Registry,
    rbuf: &mut Vec<u8>,
    sh: &mut Shared,
    cfg: &SoakConfig,
    now: Instant,
) -> bool {
    for _ in 0..READ_BUDGET {
        let Some(conn) = c.conn.as_mut() else {
            return false;
        };
        let k = conn.partial.len();
        if rbuf.len() < k + READ_CHUNK {
            rbuf.resize(k + READ_CHUNK, 0);
        }
        rbuf[..k].copy_from_slice(&conn.partial);
        conn.partial.clear();
        let n = match conn.sock.read(&mut rbuf[k..]) {
            Ok(0) => {
                c.ended(reg, End::Abrupt, sh, cfg, now);
                return false;
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                conn.partial.extend_from_slice(&rbuf[..k]);
                c.flush_or_end(reg, cfg, sh, now);
                return false;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                conn.partial.extend_from_slice(&rbuf[..k]);
                continue;
            }
            Err(_) => {
                c.ended(reg, End::Abrupt, sh, cfg, now);
                return false;
            }
        };
        if conn.server_closed {
            // After the server's close frame only its EOF matters.
            continue;
        }
        let filled = k + n;
        let (used, end) = c.on_frames(&rbuf[..filled], sh, now, cfg);
        if let Some(conn) = c.conn.as_mut() {
            conn.partial.extend_from_slice(&rbuf[used..filled]);
        }
        if let Some(end) = end {
            c.ended(reg, end, sh, cfg, now);
            if c.conn.as_ref().is_none_or(|conn| !conn.server_closed) {
                return false;
            }
        }
    }
    c.flush_or_end(reg, cfg, sh, now);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seq::Outcome;

    fn reply(epoch: &str, seq: u64, recovered: bool) -> Subscribed {
        Subscribed {
            epoch: epoch.into(),
            seq,
            recovered,
            replayed: 0,
        }
    }

    #[test]
    fn a_fresh_subscribe_starts_at_the_replys_seq() {
        let (chain, ok) = after_subscribed(None, false, &reply("e1", 500, true));
        assert!(ok);
        assert_eq!(chain.seq.last(), Some(500));
        // Results at or below the reply's seq would be duplicates; 501 is next.
        let mut seq = chain.seq;
        assert_eq!(seq.observe(500), Outcome::Duplicate);
        assert_eq!(seq.observe(501), Outcome::InOrder);
        // An unsubscribe forgets the chain, so a later fresh subscribe starts again,
        // whatever came before.
        let old = Chain {
            seq: Seq::after(10),
            epoch: "e1".into(),
        };
        let (chain, ok) = after_subscribed(Some(old), false, &reply("e1", 900, true));
        assert!(ok);
        assert_eq!(chain.seq.last(), Some(900));
    }

    #[test]
    fn a_resume_goes_on_from_the_last_seq_seen() {
        let old = Chain {
            seq: Seq::after(1234),
            epoch: "e1".into(),
        };
        // The server's newest seq is far ahead; the replay starts at 1235.
        let (chain, ok) = after_subscribed(Some(old.clone()), true, &reply("e1", 2000, true));
        assert!(ok);
        let mut seq = chain.seq;
        assert_eq!(seq.observe(1235), Outcome::InOrder);
        // A replay that starts one late is a loss; one early, a duplicate.
        let (chain, _) = after_subscribed(Some(old.clone()), true, &reply("e1", 2000, true));
        let mut seq = chain.seq;
        assert_eq!(seq.observe(1236), Outcome::Gap(1));
        let (chain, _) = after_subscribed(Some(old.clone()), true, &reply("e1", 2000, true));
        let mut seq = chain.seq;
        assert_eq!(seq.observe(1234), Outcome::Duplicate);
        // Not recovered, or another run: counted, and the next result starts anew.
        let (chain, ok) = after_subscribed(Some(old.clone()), true, &reply("e1", 2000, false));
        assert!(!ok);
        assert_eq!(chain.seq.last(), None);
        let (chain, ok) = after_subscribed(Some(old), true, &reply("e2", 5, true));
        assert!(!ok);
        assert_eq!(chain.epoch, "e2");
    }

    fn curve(kib: &[u64]) -> Vec<RssSample> {
        kib.iter()
            .enumerate()
            .map(|(i, &k)| RssSample {
                t_s: i as f64,
                kib: k,
            })
            .collect()
    }

    #[test]
    fn rss_rule_compares_medians_of_thirds_after_the_warm_up() {
        // Growth during the warm-up (the first 3 samples) does not count; nor do single
        // spikes, in either third.
        let flat = curve(&[
            1000, 20_000, 40_000, 50_000, 95_000, 50_500, 50_000, 52_000, 51_000, 50_800, 80_000,
            51_500,
        ]);
        let j = judge_rss(&flat, 3.0, 10, 2048);
        assert_eq!(j.samples, 9);
        assert_eq!((j.early_kib, j.late_kib), (50_500, 51_500));
        assert_eq!((j.early_max_kib, j.late_max_kib), (95_000, 80_000));
        assert_eq!(j.limit_kib, 50_500 * 11 / 10 + 2048);
        assert_eq!(j.flat, Some(true));
        // Steady growth past 10 % + 2 MiB fails.
        let leak: Vec<u64> = (0..30).map(|i| 50_000 + i * 400).collect();
        let j = judge_rss(&curve(&leak), 0.0, 10, 2048);
        assert_eq!((j.early_kib, j.late_kib), (51_600, 59_600));
        assert_eq!(j.flat, Some(false), "{j:?}");
        // A looser allowance lets it through: 51,600 + 20 % + 0 = 61,920.
        let j = judge_rss(&curve(&leak), 0.0, 20, 0);
        assert_eq!((j.limit_kib, j.flat), (61_920, Some(true)));
        // Exactly at the limit passes; one KiB over fails.
        let mut edge = vec![10_000; 9];
        edge[6..].copy_from_slice(&[13_048, 13_048, 13_048]);
        assert_eq!(judge_rss(&curve(&edge), 0.0, 10, 2048).flat, Some(true));
        edge[7] = 13_049;
        edge[8] = 13_049;
        assert_eq!(judge_rss(&curve(&edge), 0.0, 10, 2048).flat, Some(false));
        // Fewer than three samples after the warm-up: not judged.
        assert_eq!(judge_rss(&curve(&[1, 2, 3, 4]), 2.0, 10, 2048).flat, None);
        assert_eq!(median(&[3, 1, 2]), 2);
        assert_eq!(median(&[4, 1, 3, 2]), 2);
        assert_eq!(median(&[]), 0);
    }

    #[test]
    fn failures_name_each_broken_rule() {
        let mut r = SoakReport {
            results: 10,
            ..SoakReport::default()
        };
        assert!(r.passed(), "{:?}", r.failures());
        r.duplicated = 2;
        r.close_codes.insert(4008, 1);
        r.rss_pid = Some(1);
        let f = r.failures();
        assert_eq!(f.len(), 3, "{f:?}");
        assert!(f[0].contains("2 results duplicated"));
        assert!(f[1].contains("4008"));
        assert!(f[2].contains("too few RSS samples"));
        assert_eq!(r.json()["verdict"], "fail");
    }

    /// A client fed frames as the server would send them, without a socket.
    fn fed(client: &mut Client, sh: &mut Shared, msgs: &[String]) {
        let cfg = SoakConfig::new(SocketAddr::from(([127, 0, 0, 1], 9)));
        let mut buf = Vec::new();
        for m in msgs {
            ws::write_server_header(&mut buf, ws::OP_TEXT, m.len());
            buf.extend_from_slice(m.as_bytes());
        }
        let (used, end) = client.on_frames(&buf, sh, Instant::now(), &cfg);
        assert_eq!(used, buf.len());
        assert!(end.is_none());
    }

    fn result(seq: u64) -> String {
        format!(
            r#"{{"type":"result","timestamp":"2026-11-28T06:23:33.842294182Z","data":{{"seq":{seq},"symbol":"AB{}"}}}}"#,
            seq % 3
        )
    }

    #[test]
    fn replies_are_matched_by_id_and_results_checked_in_between() {
        let now = Instant::now();
        let mut c = Client::new(7, 1, now);
        let mut sh = Shared::default();
        c.sub = Sub::Subscribing;
        c.pending.push(Pending {
            id: 1,
            req: Request::Subscribe { resume: false },
            sent: now,
        });
        c.pending.push(Pending {
            id: 2,
            req: Request::Ack("a-5".into()),
            sent: now,
        });
        let ts = "2026-11-28T06:23:33.842294182Z";
        fed(
            &mut c,
            &mut sh,
            &[
                // A result before any subscription: stray.
                result(40),
                format!(
                    r#"{{"type":"subscribed","timestamp":"{ts}","data":{{"subscription":"soak","epoch":"e1","seq":41,"recovered":true,"replayed":0}},"id":"c7-1"}}"#
                ),
                result(42),
                result(43),
                result(45),
                result(44),
                format!(
                    r#"{{"type":"alert","timestamp":"{ts}","data":{{"alert_id":"a-9","rule":"r"}}}}"#
                ),
                format!(
                    r#"{{"type":"acked","timestamp":"{ts}","data":{{"alert_id":"a-5"}},"id":"c7-2"}}"#
                ),
                format!(r#"{{"type":"acked","timestamp":"{ts}","data":{{"alert_id":"a-5"}}}}"#),
                // Someone else's id, and an id of ours never sent.
                format!(r#"{{"type":"pong","timestamp":"{ts}","id":"c8-1"}}"#),
                format!(r#"{{"type":"pong","timestamp":"{ts}","id":"c7-9"}}"#),
            ],
        );
        let r = &sh.r;
        assert_eq!(r.stray_results, 1);
        assert_eq!(r.results, 5);
        assert_eq!(sh.seq.lost, 1);
        assert_eq!(sh.seq.duplicated, 1);
        assert_eq!(r.replies.get("subscribed"), Some(&1));
        assert_eq!(r.replies.get("acked"), Some(&1));
        assert_eq!(r.acked_broadcasts, 1);
        assert_eq!(r.alerts, 1);
        assert_eq!(r.bad_replies, 2);
        assert_eq!(sh.alert_ids.front().map(|a| &**a), Some("a-9"));
        assert!(!sh.symbols.is_empty());
        assert!(c.pending.is_empty());
        assert_eq!(c.sub, Sub::On);
        assert_eq!(c.chain.as_ref().map(|ch| ch.seq.last()), Some(Some(45)));
    }

    #[test]
    fn unsubscribed_ends_the_chain_and_a_scan_may_be_refused_as_full() {
        let now = Instant::now();
        let mut c = Client::new(3, 1, now);
        let mut sh = Shared::default();
        c.sub = Sub::Unsubscribing;
        c.chain = Some(Chain {
            seq: Seq::after(10),
            epoch: "e1".into(),
        });
        for (id, req) in [
            (1, Request::Unsubscribe),
            (2, Request::Scan),
            (3, Request::Scan),
        ] {
            c.pending.push(Pending { id, req, sent: now });
        }
        let ts = "2026-11-28T06:23:33.842294182Z";
        fed(
            &mut c,
            &mut sh,
            &[
                result(11),
                format!(
                    r#"{{"type":"unsubscribed","timestamp":"{ts}","data":{{"subscription":"soak"}},"id":"c3-1"}}"#
                ),
                format!(
                    r#"{{"type":"status","timestamp":"{ts}","data":{{"phase":"queued"}},"id":"c3-2"}}"#
                ),
                format!(
                    r#"{{"type":"error","timestamp":"{ts}","data":{{"code":"queue_full","message":"m"}},"id":"c3-3"}}"#
                ),
                format!(
                    r#"{{"type":"status","timestamp":"{ts}","data":{{"phase":"adhoc"}},"id":"c3-2"}}"#
                ),
                // Nothing may arrive once unsubscribed.
                result(12),
            ],
        );
        let r = &sh.r;
        assert_eq!((r.results, r.stray_results, sh.seq.lost), (2, 1, 0));
        assert_eq!(r.replies.get("status queued"), Some(&1));
        assert_eq!(r.errors.get("queue_full"), Some(&1));
        assert_eq!(r.unexpected_errors, 0);
        assert_eq!(r.adhoc_done, 1);
        assert_eq!(c.sub, Sub::Off);
        assert!(c.chain.is_none());
    }
}
