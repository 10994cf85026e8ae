//! Settings: defaults, overridden by the TOML config file, overridden by flags.
//!
//! Every setting is declared once in `settings!`, which derives the resolved
//! [`Config`], the optional [`Overrides`] that both clap and the TOML file fill, and the
//! merge between them. Nothing here opens sockets or starts threads.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::alerts::{AlertSettings, WebhookSettings};
pub use crate::dur::Dur;
use crate::scanner::indicators::{IndicatorParams, Reference};
pub use crate::scanner::{
    Materiality, ScanSettings, SimOptions, SourceSettings, SourceSpec, Speed, Thresholds,
};

mod scans;
mod values;

pub use scans::ScanSpec;
pub use values::{AllowedHost, BusSpec, Origin, Role, Token};

/// A config file's parts: its settings, its `[[rules]]` when it has that key (`rules =
/// []` turns alerts off), and its `[[scans]]`.
#[derive(Debug, Default)]
pub struct FileParts {
    /// The settings it sets.
    pub settings: Overrides,
    /// Its alert rules, when it has the key.
    pub rules: Option<Vec<crate::alerts::RuleSpec>>,
    /// Its scans.
    pub scans: Vec<ScanSpec>,
}

/// The longest duration any setting takes.
const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

/// Declares every setting once: name, type, default and the help text.
macro_rules! settings {
    ($( $(#[doc = $doc:literal])* $(#[arg($($arg:tt)*)])? $name:ident : $ty:ty = $default:expr ; )*) => {
        /// Every setting, resolved.
        #[derive(Debug, Clone)]
        pub struct Config {
            $( $(#[doc = $doc])* pub $name: $ty, )*
            /// Alert rules: the config file's `[[rules]]`, or the defaults when it has none.
            pub rules: Vec<crate::alerts::RuleSpec>,
            /// Scans beside the built-in ones: the config file's `[[scans]]`.
            pub scans: Vec<ScanSpec>,
        }

        /// Settings as given on the command line or in the config file; `None` is unset.
        #[derive(Debug, Clone, Default, clap::Args, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct Overrides {
            $( $(#[doc = $doc])* #[arg(long $(, $($arg)*)?)] pub $name: Option<$ty>, )*
        }

        /// The config file: every setting, and the alert rules.
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct FileSettings {
            $( #[serde(default)] $name: Option<$ty>, )*
            #[serde(default)]
            rules: Option<Vec<crate::alerts::RuleSpec>>,
            #[serde(default)]
            scans: Vec<ScanSpec>,
        }

        impl FileSettings {
            fn split(self) -> FileParts {
                FileParts {
                    settings: Overrides { $( $name: self.$name, )* },
                    rules: self.rules,
                    scans: self.scans,
                }
            }
        }

        impl Overrides {
            /// `self` where set, else `other`.
            fn or(self, other: Overrides) -> Overrides {
                Overrides { $( $name: self.$name.or(other.$name), )* }
            }

            fn resolve(self) -> Config {
                Config {
                    $( $name: self.$name.unwrap_or_else(|| $default), )*
                    rules: crate::alerts::default_rules(),
                    scans: Vec::new(),
                }
            }
        }
    };
}

settings! {
    /// Address to listen on [default: 127.0.0.1:8080]
    listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 8080));
    /// Market data: sim, csv:PATH (file or directory), jsonl:PATH, jsonl:- (stdin), or firehose:RATE (benchmarks) [default: sim]
    source: SourceSpec = SourceSpec::Sim;
    /// Log filter, as RUST_LOG takes it (RUST_LOG wins when set) [default: info]
    log: String = "info".to_owned();
    /// Edges: event loops on threads of their own, sharing the port (SO_REUSEPORT); 0 is one per core [default: 1]
    threads: usize = 1;
    /// Between producer and edges: redis://HOST:PORT[/DB] or redis+unix:///PATH for Redis Streams, or local [default: local]
    bus: BusSpec = BusSpec::Local;
    /// Results the Redis bus keeps for resumes, beyond each edge's --history-size ring; 0 is the same as --history-size [default: 0]
    bus_history: usize = 0;
    /// Namespace of this deployment's keys on a Redis bus [default: scanstream]
    bus_prefix: String = "scanstream".to_owned();
    /// all (scanner and edges), producer (scanner, alerts and HTTP) or edge (serves from the bus) [default: all]
    role: Role = Role::All;
    /// Open connections at most, over every edge; past it new ones get HTTP 503 [default: 10000]
    max_connections: usize = 10_000;
    /// Bytes of an HTTP request head at most (431 past it) [default: 16384]
    max_head_bytes: usize = 16 * 1024;
    /// Bytes of an HTTP request body at most (413 past it) [default: 65536]
    max_body_bytes: usize = 64 * 1024;
    /// Time to send a complete request, and to send the next one on a kept-alive connection [default: 10s]
    head_timeout: Dur = Dur(Duration::from_secs(10));
    /// Bytes of the per-connection WebSocket read buffer; it grows for a larger message [default: 1024]
    ws_read_buffer: usize = 1024;
    /// Bytes of an inbound WebSocket message at most (close 1009 past it) [default: 65536]
    max_message_bytes: usize = 64 * 1024;
    /// Unsent bytes per connection at most; past it: slow_consumer, close 4008 [default: 1048576]
    out_buffer_cap: usize = 1024 * 1024;
    /// An edge whose results wait longer than this skips the superseded ones (conflation); 0 never skips [default: 100ms]
    max_lag: Dur = Dur(Duration::from_millis(100));
    /// WebSocket ping interval [default: 25s]
    ping_interval: Dur = Dur(Duration::from_secs(25));
    /// Close a WebSocket that sent nothing for this long [default: 60s]
    idle_timeout: Dur = Dur(Duration::from_secs(60));
    /// Time a closing connection gets to take its last bytes [default: 5s]
    close_timeout: Dur = Dur(Duration::from_secs(5));
    /// Time shutdown waits for close frames to flush [default: 3s]
    shutdown_timeout: Dur = Dur(Duration::from_secs(3));
    /// Period of the timer sweep over connections [default: 250ms]
    sweep_interval: Dur = Dur(Duration::from_millis(250));
    /// Results kept for resume [default: 100000]
    history_size: usize = 100_000;
    /// Subscriptions per connection at most, 1 to 64 [default: 64]
    max_subscriptions: usize = 64;
    /// Symbols per filter or scan request at most [default: 1024]
    max_filter_symbols: usize = 1024;
    /// Client messages per second per connection [default: 50]
    message_rate: u32 = 50;
    /// Client message burst per connection [default: 100]
    message_burst: u32 = 100;
    /// Scanner progress statuses at most this often [default: 250ms]
    progress_interval: Dur = Dur(Duration::from_millis(250));
    /// Symbols in ad-hoc scan requests waiting at most (queue_full past it) [default: 1000]
    adhoc_queue: usize = 1000;
    /// A scan cycle starts this often [default: 1s]
    scan_interval: Dur = Dur(Duration::from_secs(1));
    /// A symbol is evaluated at most this often, and only with new data [default: 1s]
    min_scan_interval: Dur = Dur(Duration::from_secs(1));
    /// Symbols the scanner tracks at most; bars for more are refused and counted [default: 100000]
    max_symbols: usize = 100_000;
    /// Simulator: symbols in the market [default: 500]
    sim_symbols: usize = 500;
    /// Simulator: updates per second over the whole market [default: 1000]
    sim_rate: f64 = 1000.0;
    /// Simulator: seed; the same seed gives the same market [default: 1]
    sim_seed: u64 = 1;
    /// Simulator: bars of history per symbol before live updates [default: 60]
    sim_warmup: usize = 60;
    /// CSV replay speed: bars per second over all symbols, or max [default: 1000]
    replay_speed: Speed = Speed::PerSecond(1000.0);
    /// Keep reading a jsonl:PATH file as it grows [default: true]
    jsonl_follow: bool = true;
    /// RSI period [default: 14]
    rsi_period: usize = 14;
    /// Fast SMA window, in bars [default: 20]
    sma_fast: usize = 20;
    /// Slow SMA window, in bars [default: 50]
    sma_slow: usize = 50;
    /// Bars in the prior high and low of new_high and new_low [default: 20]
    range_bars: usize = 20;
    /// Bars in the volume average [default: 20]
    volume_bars: usize = 20;
    /// price_change fires at this absolute change, percent [default: 3]
    price_change_pct: f64 = 3.0;
    /// volume_spike fires at this volume over its average [default: 3]
    volume_spike_ratio: f64 = 3.0;
    /// rsi_overbought fires at or above this RSI [default: 70]
    rsi_overbought: f64 = 70.0;
    /// rsi_oversold fires at or below this RSI [default: 30]
    rsi_oversold: f64 = 30.0;
    /// SMA crosses stay open for this many bars [default: 5]
    cross_bars: u64 = 5;
    /// An open condition is updated when its score moves into another band this wide (0: never) [default: 0.5]
    update_score_step: f64 = 0.5;
    /// An open condition is updated when its price moves into another band this many percent wide (0: never) [default: 1]
    update_price_pct: f64 = 1.0;
    /// Alerts kept in the history [default: 10000]
    alert_history: usize = 10_000;
    /// At most one alert per rule and symbol this often, unless a rule sets its own [default: 30s]
    alert_throttle: Dur = Dur(Duration::from_secs(30));
    /// Directory for the alert journal, which keeps alerts and acknowledgments across restarts [default: none, in memory only]
    data_dir: Option<PathBuf> = None;
    /// The alert journal is compacted when it grows past this many bytes [default: 8388608]
    journal_max_bytes: u64 = 8 * 1024 * 1024;
    /// URL (http://) the `webhook` alert handler posts to [default: none]
    webhook_url: Option<String> = None;
    /// Token every POST, /alerts and /stream need (`Authorization: Bearer`, or `?token=` on /stream) [default: none, open]
    #[arg(env = "SCANSTREAM_TOKEN", hide_env_values = true)]
    token: Option<Token> = None;
    /// PEM certificate chain: the port then speaks TLS only (https://, wss://); needs --tls-key
    tls_cert: Option<PathBuf> = None;
    /// PEM private key of --tls-cert
    tls_key: Option<PathBuf> = None;
    /// Origins a WebSocket upgrade may come from, e.g. https://desk.example.com (repeat the flag or separate with commas) [default: any]
    #[arg(value_delimiter = ',')]
    allow_origin: Vec<Origin> = Vec::new();
    /// Host names requests may give beside loopback ones, e.g. scanner.example.com or .example.com (repeat the flag or separate with commas); on a non-loopback address, giving any turns the Host check on [default: loopback names only on a loopback address, any elsewhere]
    #[arg(value_delimiter = ',')]
    allow_host: Vec<AllowedHost> = Vec::new();
    /// Time limit of each webhook attempt [default: 3s]
    webhook_timeout: Dur = Dur(Duration::from_secs(3));
    /// Webhook attempts after a failed one, each after twice the delay of the last (from 0.5 s) [default: 3]
    webhook_retries: u32 = 3;
}

impl Default for Config {
    fn default() -> Self {
        Overrides::default().resolve()
    }
}

/// What can be wrong with the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read; check the path.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or names an unknown setting; the message has the line.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's message, with line and column.
        message: String,
    },
    /// A value is out of its range.
    #[error("setting `{name}`: {message}")]
    Invalid {
        /// The setting.
        name: &'static str,
        /// What is allowed.
        message: String,
    },
    /// A scan does not compile: the message names it, the field and the column.
    #[error("{0}")]
    Scan(String),
}

impl Config {
    /// Merges `flags` over the file at `path` (if any) over the defaults, and checks ranges.
    pub fn load(path: Option<&Path>, flags: Overrides) -> Result<Config, ConfigError> {
        let parts = match path {
            None => FileParts::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                Config::parse_file_parts(&text).map_err(|message| ConfigError::Parse {
                    path: path.to_owned(),
                    message,
                })?
            }
        };
        let parts = FileParts {
            settings: flags.or(parts.settings),
            ..parts
        };
        Config::assemble(parts).map_err(|e| match (e, path) {
            // A scan is the file's: say which file.
            (ConfigError::Scan(message), Some(path)) => ConfigError::Parse {
                path: path.to_owned(),
                message,
            },
            (e, _) => e,
        })
    }

    /// A config file's text over the defaults, checked as at start, its rules compiled.
    pub fn from_text(text: &str) -> Result<Config, String> {
        let parts = Config::parse_file_parts(text)?;
        let config = Config::assemble(parts).map_err(|e| e.to_string())?;
        config.rule_set().map_err(|e| e.to_string())?;
        Ok(config)
    }

    fn assemble(parts: FileParts) -> Result<Config, ConfigError> {
        let mut config = parts.settings.resolve();
        if let Some(rules) = parts.rules {
            config.rules = rules;
        }
        config.scans = parts.scans;
        config.validate()?;
        Ok(config)
    }

    /// Parses the text of a config file.
    pub fn parse_file(text: &str) -> Result<Overrides, String> {
        Config::parse_file_parts(text).map(|parts| parts.settings)
    }

    /// Parses the text of a config file into its parts.
    pub fn parse_file_parts(text: &str) -> Result<FileParts, String> {
        toml::from_str::<FileSettings>(text)
            .map(FileSettings::split)
            .map_err(|e| e.to_string())
    }

    /// The alert rules, checked and compiled.
    pub fn rule_set(&self) -> Result<crate::alerts::RuleSet, crate::alerts::RuleError> {
        crate::alerts::RuleSet::compile(&self.rules, self.alert_throttle.0)
    }

    /// Every scan a market source runs: the built-in ones with these thresholds and
    /// windows, then the `[[scans]]`.
    pub fn scan_set(&self) -> Result<crate::scanner::ScanSet, String> {
        self.source_settings()
            .scan
            .scan_set()
            .map_err(|e| e.to_string())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("max_connections", self.max_connections),
            ("max_head_bytes", self.max_head_bytes),
            ("max_body_bytes", self.max_body_bytes),
            ("ws_read_buffer", self.ws_read_buffer),
            ("max_message_bytes", self.max_message_bytes),
            ("out_buffer_cap", self.out_buffer_cap),
            ("history_size", self.history_size),
            ("alert_history", self.alert_history),
            ("max_filter_symbols", self.max_filter_symbols),
            ("message_rate", self.message_rate as usize),
            ("message_burst", self.message_burst as usize),
            ("adhoc_queue", self.adhoc_queue),
            ("max_symbols", self.max_symbols),
            ("sim_symbols", self.sim_symbols),
            ("rsi_period", self.rsi_period),
            ("sma_fast", self.sma_fast),
            ("range_bars", self.range_bars),
            ("volume_bars", self.volume_bars),
            ("cross_bars", self.cross_bars as usize),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(invalid(name, "must be above 0"));
            }
        }
        // A connection's matched subscriptions are a 64-bit mask on the hot path.
        if !(1..=64).contains(&self.max_subscriptions) {
            return Err(invalid("max_subscriptions", "must be 1 to 64"));
        }
        let durations = [
            ("head_timeout", self.head_timeout),
            ("ping_interval", self.ping_interval),
            ("idle_timeout", self.idle_timeout),
            ("sweep_interval", self.sweep_interval),
            ("progress_interval", self.progress_interval),
            ("scan_interval", self.scan_interval),
            ("webhook_timeout", self.webhook_timeout),
        ];
        for (name, value) in durations {
            if value.0.is_zero() {
                return Err(invalid(name, "must be above 0"));
            }
        }
        // Deadlines are instants plus these; keep them far from overflow.
        let all_durations = [
            ("head_timeout", self.head_timeout),
            ("ping_interval", self.ping_interval),
            ("idle_timeout", self.idle_timeout),
            ("close_timeout", self.close_timeout),
            ("max_lag", self.max_lag),
            ("shutdown_timeout", self.shutdown_timeout),
            ("sweep_interval", self.sweep_interval),
            ("progress_interval", self.progress_interval),
            ("scan_interval", self.scan_interval),
            ("min_scan_interval", self.min_scan_interval),
            ("alert_throttle", self.alert_throttle),
            ("webhook_timeout", self.webhook_timeout),
        ];
        for (name, value) in all_durations {
            if value.0 > MAX_DURATION {
                return Err(invalid(name, "must be at most 30 days"));
            }
        }
        let capped = [
            ("adhoc_queue", self.adhoc_queue, 1_000_000),
            ("threads", self.threads, 1024),
            ("bus_history", self.bus_history, 100_000_000),
            ("max_symbols", self.max_symbols, 10_000_000),
            ("sim_symbols", self.sim_symbols, 10_000_000),
            ("alert_history", self.alert_history, 10_000_000),
            ("webhook_retries", self.webhook_retries as usize, 10),
        ];
        for (name, value, max) in capped {
            if value > max {
                return Err(invalid(name, &format!("must be at most {max}")));
            }
        }
        if !(0.001..=10_000_000.0).contains(&self.sim_rate) {
            return Err(invalid(
                "sim_rate",
                "must be 0.001 to 10000000 updates a second",
            ));
        }
        if self.token.as_ref().is_some_and(|t| !t.is_valid()) {
            return Err(invalid(
                "token",
                "must be 8 to 512 visible ASCII characters (no spaces)",
            ));
        }
        if self.sma_slow <= self.sma_fast {
            return Err(invalid("sma_slow", "must be longer than sma_fast"));
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(invalid("tls_cert", "--tls-cert and --tls-key go together"));
        }
        if self.role != Role::All && self.bus == BusSpec::Local {
            return Err(invalid("role", "producer and edge need --bus redis://..."));
        }
        let prefix_ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':');
        if !(1..=64).contains(&self.bus_prefix.len()) || !self.bus_prefix.chars().all(prefix_ok) {
            return Err(invalid(
                "bus_prefix",
                "must be 1 to 64 letters, digits, `-`, `_`, `.` or `:`",
            ));
        }
        let positive = [
            ("price_change_pct", self.price_change_pct),
            ("volume_spike_ratio", self.volume_spike_ratio),
        ];
        for (name, value) in positive {
            if !(value.is_finite() && value > 0.0) {
                return Err(invalid(name, "must be a number above 0"));
            }
        }
        for (name, value) in [
            ("update_score_step", self.update_score_step),
            ("update_price_pct", self.update_price_pct),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(invalid(name, "must be 0 or more"));
            }
        }
        if !(0.0 < self.rsi_oversold
            && self.rsi_oversold < self.rsi_overbought
            && self.rsi_overbought < 100.0)
        {
            return Err(invalid(
                "rsi_overbought",
                "needs 0 < rsi_oversold < rsi_overbought < 100",
            ));
        }
        // The built-in scans are definitions in the scan language, which keeps windows
        // of at most MAX_PERIOD bars, and an RSI or SMA of at least 2.
        let max = crate::expr::MAX_PERIOD as usize;
        for (name, value, min) in [
            ("rsi_period", self.rsi_period, 2),
            ("sma_fast", self.sma_fast, 2),
            ("sma_slow", self.sma_slow, 2),
            ("range_bars", self.range_bars, 1),
            ("volume_bars", self.volume_bars, 1),
            ("cross_bars", self.cross_bars as usize, 1),
        ] {
            if !(min..=max).contains(&value) {
                return Err(invalid(name, &format!("must be {min} to {max}")));
            }
        }
        scans::definitions(&self.scans).map_err(ConfigError::Scan)?;
        self.scan_set().map_err(ConfigError::Scan)?;
        Ok(())
    }
}

/// Each part's settings, mapped here and nowhere else.
impl Config {
    /// The Redis bus, when `bus` names one.
    pub fn redis_bus(&self) -> Option<crate::bus::redis::RedisBus> {
        let BusSpec::Redis(url) = &self.bus else {
            return None;
        };
        Some(crate::bus::redis::RedisBus {
            url: url.clone(),
            keys: crate::bus::redis::Keys::new(&self.bus_prefix),
            history: self.history_size,
            retention: self.bus_history.max(self.history_size),
            alert_history: self.alert_history,
        })
    }

    /// Does an edge ask the bus for results older than its ring? (An edge process on a
    /// bus that keeps more than the ring.)
    pub fn deep_history(&self) -> bool {
        self.role == Role::Edge && self.bus_history > self.history_size
    }

    /// How many edges to run: `threads`, or one per core for 0.
    pub fn edges(&self) -> usize {
        match self.threads {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        }
    }

    /// What building the source needs beyond its spec.
    pub fn source_settings(&self) -> SourceSettings {
        SourceSettings {
            scan: ScanSettings {
                indicators: IndicatorParams {
                    rsi: self.rsi_period,
                    sma_fast: self.sma_fast,
                    sma_slow: self.sma_slow,
                    range: self.range_bars,
                    volume: self.volume_bars,
                    reference: Reference::SessionOpen,
                },
                thresholds: Thresholds {
                    price_change_pct: self.price_change_pct,
                    volume_ratio: self.volume_spike_ratio,
                    rsi_overbought: self.rsi_overbought,
                    rsi_oversold: self.rsi_oversold,
                    cross_bars: self.cross_bars,
                },
                materiality: Materiality {
                    score_step: self.update_score_step,
                    price_pct: self.update_price_pct,
                },
                scan_interval: self.scan_interval.0,
                min_scan_interval: self.min_scan_interval.0,
                max_symbols: self.max_symbols,
                // Checked by `validate`: what is left here cannot fail.
                custom: scans::definitions(&self.scans).unwrap_or_default().into(),
                rules: std::sync::Arc::new(self.rule_set().map(|r| r.needs).unwrap_or_default()),
            },
            sim: SimOptions {
                symbols: self.sim_symbols,
                rate: self.sim_rate,
                seed: self.sim_seed,
                warmup: self.sim_warmup,
            },
            replay_speed: self.replay_speed,
            jsonl_follow: self.jsonl_follow,
        }
    }

    /// The alert engine's settings.
    pub fn alert_settings(&self) -> AlertSettings {
        AlertSettings {
            rules: self.rules.clone(),
            throttle: self.alert_throttle.0,
            history: self.alert_history,
            journal_max_bytes: self.journal_max_bytes,
            webhook: self.webhook_url.as_ref().map(|url| WebhookSettings {
                url: url.clone(),
                timeout: self.webhook_timeout.0,
                retries: self.webhook_retries,
                backoff: Duration::from_millis(500),
            }),
        }
    }
}

fn invalid(name: &'static str, message: &str) -> ConfigError {
    ConfigError::Invalid {
        name,
        message: message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_file_over_defaults() {
        let file = Config::parse_file(
            "listen = \"0.0.0.0:9000\"\nping_interval = \"5s\"\nhistory_size = 10\n",
        )
        .unwrap();
        let flags = Overrides {
            history_size: Some(20),
            ..Overrides::default()
        };
        let config = flags.or(file).resolve();
        assert_eq!(config.listen, "0.0.0.0:9000".parse().unwrap());
        assert_eq!(config.ping_interval, Dur(Duration::from_secs(5)));
        assert_eq!(config.history_size, 20);
        assert_eq!(config.idle_timeout, Dur(Duration::from_secs(60)));
        assert_eq!(config.max_lag, Dur(Duration::from_millis(100)));
        let off = Config::parse_file("max_lag = \"0\"").unwrap().resolve();
        assert_eq!(off.max_lag, Dur(Duration::ZERO));
    }

    #[test]
    fn threads_0_is_one_edge_per_core_and_too_many_are_refused() {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let edges = |threads| Config {
            threads,
            ..Config::default()
        };
        assert_eq!(edges(0).edges(), cores);
        assert_eq!(edges(3).edges(), 3);
        assert_eq!(Config::default().edges(), 1);
        let err = edges(1025).validate().unwrap_err().to_string();
        assert!(err.contains("threads"), "{err}");
    }

    #[test]
    fn bad_files_name_the_problem() {
        let cases = [
            ("listne = \"x\"", "unknown field `listne`"),
            ("history_size = \"many\"", "invalid type"),
            ("ping_interval = \"soon\"", "ping_interval"),
            ("source = \"moon:1\"", "unknown source"),
            ("source = \"firehose:fast\"", "whole number"),
            ("listen = ", "line 1"),
        ];
        for (text, want) in cases {
            let err = Config::parse_file(text).unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn out_of_range_values_are_refused() {
        for (flags, name) in [
            (
                Overrides {
                    sim_rate: Some(1e-17),
                    ..Default::default()
                },
                "sim_rate",
            ),
            (
                Overrides {
                    scan_interval: Some(Dur(Duration::from_secs(600_000_000 * 31_557_600))),
                    ..Default::default()
                },
                "scan_interval",
            ),
            (
                Overrides {
                    sma_fast: Some(50),
                    ..Default::default()
                },
                "sma_slow",
            ),
            (
                Overrides {
                    rsi_oversold: Some(80.0),
                    ..Default::default()
                },
                "rsi_overbought",
            ),
            (
                Overrides {
                    adhoc_queue: Some(usize::MAX),
                    ..Default::default()
                },
                "adhoc_queue",
            ),
            (
                Overrides {
                    max_subscriptions: Some(65),
                    ..Default::default()
                },
                "max_subscriptions",
            ),
            (
                Overrides {
                    history_size: Some(0),
                    ..Default::default()
                },
                "history_size",
            ),
            (
                Overrides {
                    ping_interval: Some(Dur(Duration::ZERO)),
                    ..Default::default()
                },
                "ping_interval",
            ),
        ] {
            let err = Config::load(None, flags).unwrap_err();
            assert!(
                matches!(err, ConfigError::Invalid { name: n, .. } if n == name),
                "{err}"
            );
        }
    }

    #[test]
    fn allowed_hosts() {
        let config =
            Config::parse_file("allow_host = [\"Scanner.Example.com.\", \".desk.example\"]")
                .unwrap()
                .resolve();
        let [name, suffix] = &config.allow_host[..] else {
            panic!("{:?}", config.allow_host)
        };
        assert!(name.matches("scanner.example.com") && name.matches("SCANNER.example.com."));
        assert!(!name.matches("x.scanner.example.com"));
        assert!(suffix.matches("desk.example") && suffix.matches("a.b.desk.example"));
        assert!(!suffix.matches("evildesk.example"));
        assert!("*".parse::<AllowedHost>().unwrap().matches("anything"));
        assert!("[::1]".parse::<AllowedHost>().is_ok());
        for bad in ["", "host:8080", "http://host", "a b", "[nonsense]"] {
            assert!(bad.parse::<AllowedHost>().is_err(), "{bad}");
        }
        // The flag repeats and takes comma lists.
        #[derive(clap::Parser)]
        struct Flags {
            #[command(flatten)]
            settings: Overrides,
        }
        let flags = <Flags as clap::Parser>::try_parse_from([
            "scanstream",
            "--allow-host",
            "a.example,b.example",
            "--allow-host",
            "c.example",
        ])
        .unwrap();
        let hosts = flags.settings.allow_host.unwrap();
        assert_eq!(hosts.len(), 3);
        assert!(hosts[2].matches("c.example"));
        let bad = <Flags as clap::Parser>::try_parse_from(["scanstream", "--allow-host", "x:80"]);
        assert!(bad.is_err());
    }

    #[test]
    fn source_specs() {
        assert_eq!(
            "firehose:250".parse(),
            Ok(SourceSpec::Firehose { rate: 250 })
        );
        assert!("firehose".parse::<SourceSpec>().is_err());
        assert_eq!("sim".parse(), Ok(SourceSpec::Sim));
        assert_eq!(
            "csv:data/daily".parse(),
            Ok(SourceSpec::Csv {
                path: "data/daily".into()
            })
        );
        assert_eq!(
            "jsonl:-".parse(),
            Ok(SourceSpec::Jsonl { path: "-".into() })
        );
        for bad in ["csv", "csv:", "jsonl", "sim:3", "moon"] {
            assert!(bad.parse::<SourceSpec>().is_err(), "{bad}");
        }
    }
}
