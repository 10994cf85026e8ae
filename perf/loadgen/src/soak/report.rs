//! What a soak run measured, and the verdict on it: [`SoakReport::failures`] names every
//! rule the run broke. The figures are filled in by the clients as they go; the table and
//! the JSON line are in `output`.

use std::collections::BTreeMap;

use super::rss::{RssJudgement, RssSample};

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

/// Everything a soak run measured.
#[derive(Debug, Default)]
pub struct SoakReport {
    pub addr: String,
    /// The clients spoke TLS (`wss://`).
    pub tls: bool,
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
