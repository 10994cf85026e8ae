//! What a soak run does: the number of clients, how long, how often they act and
//! reconnect, the deadlines, and the RSS rule's allowance. Plain settings with the
//! defaults of `loadgen --soak`; nothing here runs.

use std::net::SocketAddr;
use std::time::Duration;

use crate::tls::Tls;

/// The RSS rule's allowance by default: after the warm-up, the median of the last third
/// of the samples may exceed the median of the first third by at most this many percent
/// plus this many KiB.
pub const DEFAULT_RSS_GROWTH_PCT: u64 = 10;
pub const DEFAULT_RSS_SLACK_KIB: u64 = 2048;

/// What to run. [`SoakConfig::new`] gives the defaults of `loadgen --soak`.
#[derive(Debug, Clone)]
pub struct SoakConfig {
    pub addr: SocketAddr,
    /// TLS settings for `wss://`; `None` speaks plain `ws://`.
    pub tls: Option<Tls>,
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
    /// The RSS rule's allowance: see [`judge_rss`](super::judge_rss).
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
            tls: None,
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
