//! Alerts: rules turn published results into alerts, throttled per rule and symbol, kept
//! in a bounded history with acknowledgment, journaled when a data directory is set, and
//! handed to handlers (WebSocket broadcast, log line, webhook).
//!
//! The producer (the scanner thread) owns [`Alerts`] and calls it for every result it
//! publishes, so matching is plain code over a few rules, and journal writes never run on
//! a thread that serves sockets. What the edges must learn (an alert raised, one
//! acknowledged) is queued as [`AlertNote`]s for the bus. Nothing here blocks on the
//! network: the webhook handler only queues for its worker thread.

mod journal;
mod log;
mod rule;
mod webhook;
mod when;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ahash::AHashMap;
use serde::{Deserialize, Serialize};

pub use journal::{Journal, Loaded};
pub use log::{Acked, AlertLog, Query};
pub use rule::{HandlerKind, Kind, Rule, RuleError, RuleSet, RuleSpec, Severity, default_rules};
pub use webhook::{Webhook, WebhookSettings, WebhookStats};
pub use when::{VARS, When};

use crate::event::ScanEvent;
use crate::expr::{Frame, Needs};
use crate::timefmt::{parse_time, rfc3339};

/// One alert.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// Number; `a-17` on the wire.
    pub id: u64,
    /// The rule that raised it.
    pub rule: String,
    /// Its kind.
    pub kind: Kind,
    /// Its severity.
    pub severity: Severity,
    /// The symbol.
    pub symbol: String,
    /// The scan of the result that raised it.
    pub scan: String,
    /// What happened, in words.
    pub message: String,
    /// The result that raised it.
    pub result_seq: u64,
    /// When.
    pub created: SystemTime,
    /// When it was acknowledged, if it was.
    pub acked_at: Option<SystemTime>,
}

/// The wire form of an alert (PROTOCOL.md, `alert`), also the journal's.
#[derive(Debug, Serialize, Deserialize)]
struct AlertWire {
    alert_id: String,
    rule: String,
    kind: String,
    severity: String,
    symbol: String,
    #[serde(default)]
    scan: String,
    message: String,
    result_seq: u64,
    created: String,
    acknowledged: bool,
    #[serde(default)]
    acked_at: Option<String>,
}

impl Alert {
    /// `a-17`.
    pub fn wire_id(&self) -> String {
        format!("a-{}", self.id)
    }

    /// The alert as PROTOCOL.md's `alert` data, in its field order.
    pub fn to_json(&self) -> String {
        // Strings, numbers and bools only: serialising cannot fail.
        serde_json::to_string(&self.wire()).unwrap_or_default()
    }

    /// The alert a wire form holds (as [`Alert::to_json`] writes it).
    pub fn from_json(json: &str) -> Result<Alert, String> {
        let wire: AlertWire = serde_json::from_str(json).map_err(|e| e.to_string())?;
        Alert::from_wire(wire)
    }

    /// The alert's wire form, to serialise.
    pub fn wire(&self) -> impl Serialize + use<> {
        self.wire_form()
    }

    fn wire_form(&self) -> AlertWire {
        AlertWire {
            alert_id: self.wire_id(),
            rule: self.rule.clone(),
            kind: self.kind.name().to_owned(),
            severity: self.severity.name().to_owned(),
            symbol: self.symbol.clone(),
            scan: self.scan.clone(),
            message: self.message.clone(),
            result_seq: self.result_seq,
            created: rfc3339(self.created),
            acknowledged: self.acked_at.is_some(),
            acked_at: self.acked_at.map(rfc3339),
        }
    }

    fn from_wire(w: AlertWire) -> Result<Alert, String> {
        let kind = match w.kind.as_str() {
            "new_opportunity" => Kind::NewOpportunity,
            "threshold" => Kind::Threshold,
            "price_change" => Kind::PriceChange,
            "volume_spike" => Kind::VolumeSpike,
            other => return Err(format!("unknown kind `{other}`")),
        };
        let severity = Severity::from_name(&w.severity)
            .ok_or_else(|| format!("unknown severity `{}`", w.severity))?;
        let created = parse_time(&w.created).ok_or("bad `created` time")?;
        let acked_at = match w.acked_at {
            Some(t) => Some(parse_time(&t).ok_or("bad `acked_at` time")?),
            None => None,
        };
        Ok(Alert {
            id: parse_id(&w.alert_id).ok_or("bad `alert_id`")?,
            rule: w.rule,
            kind,
            severity,
            symbol: w.symbol,
            scan: w.scan,
            message: w.message,
            result_seq: w.result_seq,
            created,
            acked_at,
        })
    }
}

/// `a-17` → 17.
pub fn parse_id(s: &str) -> Option<u64> {
    s.strip_prefix("a-")?.parse().ok()
}

/// Where alerts go. Each handler sees every alert of the rules that name its kind.
pub trait Handler: Send {
    /// Which kind of handler this is.
    fn kind(&self) -> HandlerKind;
    /// Delivers one alert; `json` is its `alert` data, encoded once. Must not block.
    fn deliver(&mut self, alert: &Alert, json: &str);
}

/// `log`: one structured line on stderr.
#[derive(Debug, Default)]
pub struct LogHandler;

impl Handler for LogHandler {
    fn kind(&self) -> HandlerKind {
        HandlerKind::Log
    }

    fn deliver(&mut self, a: &Alert, _json: &str) {
        macro_rules! line {
            ($level:ident) => {
                tracing::$level!(
                    target: "alert",
                    alert_id = %a.wire_id(),
                    rule = %a.rule,
                    kind = a.kind.name(),
                    severity = a.severity.name(),
                    symbol = %a.symbol,
                    result_seq = a.result_seq,
                    "{}",
                    a.message
                )
            };
        }
        match a.severity {
            Severity::Info => line!(info),
            Severity::Warning => line!(warn),
            Severity::Critical => line!(error),
        }
    }
}

/// What the edges learn of an alert.
#[derive(Debug, Clone)]
pub struct AlertNote {
    /// The alert as it stands.
    pub alert: Alert,
    /// Its wire form (PROTOCOL.md `alert` data), encoded once.
    pub json: Arc<str>,
    /// Raised or acknowledged.
    pub change: Change,
}

/// What happened to an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Raised: into every edge's history, and sent to every subscriber when `broadcast`
    /// (its rule names the `websocket` handler).
    Raised {
        /// Send it as an `alert` message.
        broadcast: bool,
    },
    /// Acknowledged now (not again): sent to every subscriber as `acked`.
    Acked,
}

/// The engine's counters and the webhook's, as the edges show them in `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AlertStats {
    /// The engine's counters.
    pub counters: AlertCounters,
    /// The webhook's sent, failed attempts, gave up and dropped, when there is one.
    pub webhook: Option<[u64; 4]>,
}

/// Alert settings, from the config.
#[derive(Debug, Clone)]
pub struct AlertSettings {
    /// The rules, as given (the defaults when the config file names none).
    pub rules: Vec<RuleSpec>,
    /// A rule's throttle unless it sets one.
    pub throttle: Duration,
    /// Alerts kept.
    pub history: usize,
    /// Journal size that triggers a compaction.
    pub journal_max_bytes: u64,
    /// The webhook, when one is configured.
    pub webhook: Option<WebhookSettings>,
}

/// Counters for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AlertCounters {
    /// Alerts raised, by severity (info, warning, critical).
    pub raised: [u64; 3],
    /// Alerts a throttle held back.
    pub throttled: u64,
    /// Acknowledgments that changed an alert.
    pub acked: u64,
    /// Journal writes that failed.
    pub journal_errors: u64,
}

/// The alert engine.
pub struct Alerts {
    rules: Vec<Rule>,
    /// What the rules read per symbol: the slots of a result's frame.
    needs: Needs,
    /// When each (rule, symbol) last raised an alert.
    last: AHashMap<(usize, Box<str>), Instant>,
    log: AlertLog,
    next_id: u64,
    handlers: Vec<Box<dyn Handler>>,
    journal: Option<Journal>,
    /// What the edges have yet to learn, in order.
    notes: Vec<AlertNote>,
    webhook_stats: Option<Arc<WebhookStats>>,
    /// Counters.
    pub counters: AlertCounters,
}

impl std::fmt::Debug for Alerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alerts")
            .field("rules", &self.rules.len())
            .field("alerts", &self.log.len())
            .finish_non_exhaustive()
    }
}

/// Why alerts could not start.
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    /// A rule is wrong.
    #[error(transparent)]
    Rule(#[from] RuleError),
    /// The journal could not be read or written.
    #[error("alert journal {path}: {source}")]
    Journal {
        /// The journal file.
        path: String,
        /// The failure.
        source: std::io::Error,
    },
    /// The webhook setting is wrong.
    #[error("webhook_url: {0}")]
    Webhook(String),
}

impl Alerts {
    /// Checks the rules, loads the journal in `data_dir` (if any), and starts the handlers.
    pub fn start(settings: &AlertSettings, data_dir: Option<&Path>) -> Result<Alerts, AlertError> {
        let RuleSet { rules, needs } = RuleSet::compile(&settings.rules, settings.throttle)?;
        for rule in &rules {
            if rule.handlers.contains(&HandlerKind::Webhook) && settings.webhook.is_none() {
                return Err(RuleError {
                    rule: rule.name.clone(),
                    field: "handlers",
                    message: "`webhook` needs the webhook_url setting".into(),
                }
                .into());
            }
        }
        // The `websocket` handler is the edges' broadcast, marked on each note.
        let mut handlers: Vec<Box<dyn Handler>> = vec![Box::new(LogHandler)];
        let mut webhook_stats = None;
        if let Some(w) = &settings.webhook {
            let hook = Webhook::start(w.clone()).map_err(AlertError::Webhook)?;
            webhook_stats = Some(hook.stats());
            handlers.push(Box::new(hook));
        }
        let mut log = AlertLog::new(settings.history);
        let mut next_id = 1;
        let journal = match data_dir {
            None => None,
            Some(dir) => {
                let (journal, loaded) =
                    Journal::open(dir, settings.history, settings.journal_max_bytes).map_err(
                        |source| AlertError::Journal {
                            path: dir.join(journal::FILE).display().to_string(),
                            source,
                        },
                    )?;
                for alert in loaded.alerts {
                    log.push(alert);
                }
                next_id = loaded.next_id;
                Some(journal)
            }
        };
        Ok(Alerts {
            rules,
            needs,
            last: AHashMap::new(),
            log,
            next_id,
            handlers,
            journal,
            notes: Vec::new(),
            webhook_stats,
            counters: AlertCounters::default(),
        })
    }

    /// Goes on from the alert history a bus kept: taken as the history when the journal
    /// had none, and new alerts numbered after every alert in it either way.
    pub fn restore(&mut self, alerts: Vec<Alert>) {
        let newest = alerts.iter().map(|a| a.id).max().unwrap_or(0);
        if self.log.is_empty() {
            for alert in alerts {
                self.log.push(alert);
            }
        }
        self.next_id = self.next_id.max(newest.saturating_add(1));
    }

    /// Runs the rules over a published result at `now` (the throttle's clock), on
    /// `frame`, what the rules read of its symbol on its bar (built from the result's own
    /// fields when the source has no bars); returns how many alerts it raised. Alerts are
    /// stamped with the wall clock, read only then.
    pub fn on_result(&mut self, ev: &ScanEvent, frame: Option<&Frame>, now: Instant) -> usize {
        // Built from the result's fields only when a rule watches it and none came.
        let mut own: Option<Frame> = None;
        let mut raised = 0;
        for i in 0..self.rules.len() {
            if !self.rules[i].watches(ev) {
                continue;
            }
            let frame = match frame {
                Some(f) => f,
                None => own.get_or_insert_with(|| when::frame_of(ev, &self.needs)),
            };
            let Some(values) = self.rules[i].when.holds(ev, frame) else {
                continue;
            };
            let rule = &self.rules[i];
            match self.last.get_mut(&(i, ev.symbol_key.clone())) {
                Some(at) if now.saturating_duration_since(*at) < rule.throttle => {
                    self.counters.throttled += 1;
                    continue;
                }
                Some(at) => *at = now,
                None => {
                    self.last.insert((i, ev.symbol_key.clone()), now);
                }
            }
            let alert = Alert {
                id: self.next_id,
                rule: rule.name.clone(),
                kind: rule.kind,
                severity: rule.severity,
                symbol: ev.symbol_key.to_string(),
                scan: ev.scan.name().to_owned(),
                message: message(rule, ev, &values),
                result_seq: ev.seq,
                created: SystemTime::now(),
                acked_at: None,
            };
            self.next_id += 1;
            self.counters.raised[rule.severity as usize] += 1;
            raised += 1;
            let json = alert.to_json();
            if let Some(journal) = &mut self.journal {
                if let Err(e) = journal.append_alert(&alert) {
                    self.counters.journal_errors += 1;
                    tracing::error!(error = %e, "alert journal write failed");
                }
            }
            let kinds = self.rules[i].handlers.clone();
            for handler in &mut self.handlers {
                if kinds.contains(&handler.kind()) {
                    handler.deliver(&alert, &json);
                }
            }
            self.notes.push(AlertNote {
                alert: alert.clone(),
                json: json.into(),
                change: Change::Raised {
                    broadcast: kinds.contains(&HandlerKind::Websocket),
                },
            });
            self.log.push(alert);
        }
        raised
    }

    /// Acknowledges `id` (idempotent); a change is journaled and broadcast as `acked`.
    pub fn ack(&mut self, id: &str, at: SystemTime) -> Acked {
        let Some(n) = parse_id(id) else {
            return Acked::NotFound;
        };
        let outcome = self.log.ack(n, at);
        if let Acked::Now(alert) = &outcome {
            self.counters.acked += 1;
            self.notes.push(AlertNote {
                alert: alert.clone(),
                json: alert.to_json().into(),
                change: Change::Acked,
            });
            if let Some(journal) = &mut self.journal {
                if let Err(e) = journal.append_ack(alert.id, at) {
                    self.counters.journal_errors += 1;
                    tracing::error!(error = %e, "alert journal write failed");
                }
            }
        }
        outcome
    }

    /// Compacts the journal when it has grown past its limit.
    pub fn maintain(&mut self) {
        if let Some(journal) = &mut self.journal {
            if let Err(e) = journal.compact_if_due(&self.log) {
                self.counters.journal_errors += 1;
                tracing::error!(error = %e, "alert journal compaction failed");
            }
        }
    }

    /// What the edges have yet to learn, oldest first.
    pub fn take_notes(&mut self) -> Vec<AlertNote> {
        std::mem::take(&mut self.notes)
    }

    /// The counters, the webhook's included.
    pub fn stats(&self) -> AlertStats {
        AlertStats {
            counters: self.counters,
            webhook: self.webhook_stats.as_deref().map(|w| {
                [&w.sent, &w.failed_attempts, &w.gave_up, &w.dropped]
                    .map(|c| c.load(std::sync::atomic::Ordering::Relaxed))
            }),
        }
    }

    /// The history.
    pub fn log(&self) -> &AlertLog {
        &self.log
    }

    /// The webhook's counters, when there is a webhook.
    pub fn webhook_stats(&self) -> Option<&WebhookStats> {
        self.webhook_stats.as_deref()
    }

    /// The rules in force.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// What the rules read per symbol, each once: a frame's slots.
    pub fn needs(&self) -> &Needs {
        &self.needs
    }
}

/// `TSLA abs(change_pct) >= 5 (price_change; change_pct -7.9)`, or for a rule without
/// conditions `TSLA entered price_change (score 2.3)`.
fn message(rule: &Rule, ev: &ScanEvent, values: &[(String, f64)]) -> String {
    let symbol = &*ev.symbol_key;
    let seen = values
        .iter()
        .map(|(name, x)| format!("{name} {}", round(*x)))
        .collect::<Vec<_>>();
    if rule.when.is_empty() || rule.kind == Kind::NewOpportunity {
        let mut m = format!(
            "{symbol} entered {} (score {:.2})",
            ev.scan.name(),
            ev.score
        );
        for part in seen {
            m.push_str(", ");
            m.push_str(&part);
        }
        return m;
    }
    let mut m = format!(
        "{symbol} {} ({}",
        rule.when.texts.join(" and "),
        ev.scan.name()
    );
    if !seen.is_empty() {
        m.push_str("; ");
        m.push_str(&seen.join(", "));
    }
    m.push(')');
    m
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventKind, Scan, ScanResult};

    fn settings(rules: Vec<RuleSpec>) -> AlertSettings {
        AlertSettings {
            rules,
            throttle: Duration::from_secs(30),
            history: 3,
            journal_max_bytes: 1 << 20,
            webhook: None,
        }
    }

    fn movers() -> RuleSpec {
        RuleSpec {
            name: "movers".into(),
            kind: Kind::PriceChange,
            severity: Severity::Critical,
            scans: None,
            symbols: None,
            events: Some(vec!["new".into(), "update".into()]),
            when: vec!["abs_change_pct >= 5".into()],
            throttle: None,
            handlers: Some(vec![HandlerKind::Websocket]),
        }
    }

    fn event(symbol: &str, seq: u64, change_pct: f64) -> ScanEvent {
        let r = ScanResult {
            values: Vec::new(),
            rule_frame: None,
            symbol: symbol.into(),
            scan: Scan::PriceChange,
            event: EventKind::New,
            score: 2.0,
            price: 100.0,
            change_pct,
            volume: 10,
            volume_ratio: 1.0,
            rsi: None,
            source_ts: None,
            adhoc: false,
        };
        ScanEvent::publish(&r, seq, SystemTime::now())
    }

    #[test]
    fn throttling_follows_the_injected_clock_per_rule_and_symbol() {
        let mut alerts = Alerts::start(&settings(vec![movers()]), None).unwrap();
        let t0 = Instant::now();
        assert_eq!(alerts.on_result(&event("TSLA", 1, 7.9), None, t0), 1);
        // Within 30 s: held back, counted.
        let t = t0 + Duration::from_secs(29);
        assert_eq!(alerts.on_result(&event("TSLA", 2, 8.0), None, t), 0);
        assert_eq!(alerts.counters.throttled, 1);
        // Another symbol has its own throttle.
        assert_eq!(alerts.on_result(&event("AAPL", 3, 6.0), None, t), 1);
        // Past 30 s the symbol may alert again.
        let t = t0 + Duration::from_secs(30);
        assert_eq!(alerts.on_result(&event("TSLA", 4, 9.0), None, t), 1);
        let ids: Vec<u64> = alerts.log().iter().map(|a| a.id).collect();
        assert_eq!(ids, [1, 2, 3]);
        assert_eq!(alerts.counters.raised, [0, 0, 3]);
        let last = alerts.log().iter().last().unwrap();
        assert_eq!(
            last.message,
            "TSLA abs_change_pct >= 5 (price_change; abs_change_pct 9)"
        );
        assert_eq!(last.result_seq, 4);
        // One note per alert for the edges, in order, to broadcast (the rule names the
        // `websocket` handler).
        let notes = alerts.take_notes();
        assert_eq!(notes.len(), 3);
        assert_eq!(notes[2].change, Change::Raised { broadcast: true });
        assert!(
            notes[2]
                .json
                .starts_with(r#"{"alert_id":"a-3","rule":"movers""#),
            "{}",
            notes[2].json
        );
    }

    #[test]
    fn acks_are_recorded_once_and_broadcast_once() {
        let mut alerts = Alerts::start(&settings(vec![movers()]), None).unwrap();
        alerts.on_result(&event("TSLA", 1, 7.9), None, Instant::now());
        let _ = alerts.take_notes();
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let Acked::Now(a) = alerts.ack("a-1", at) else {
            panic!("first ack")
        };
        assert_eq!(a.acked_at, Some(at));
        let later = at + Duration::from_secs(5);
        assert_eq!(alerts.ack("a-1", later), Acked::Already(a.clone()));
        assert_eq!(alerts.ack("a-2", at), Acked::NotFound);
        assert_eq!(alerts.ack("17", at), Acked::NotFound);
        let notes = alerts.take_notes();
        assert_eq!(notes.len(), 1);
        assert_eq!(notes[0].change, Change::Acked);
        assert_eq!(alerts.counters.acked, 1);
    }

    #[test]
    fn the_log_is_bounded_and_queried_newest_first() {
        let mut alerts = Alerts::start(&settings(vec![movers()]), None).unwrap();
        let t0 = Instant::now();
        for (i, s) in ["A", "B", "C", "D"].into_iter().enumerate() {
            alerts.on_result(&event(s, i as u64 + 1, 6.0), None, t0);
        }
        alerts.ack("a-3", SystemTime::now());
        let log = alerts.log();
        assert_eq!(log.len(), 3, "capacity 3: a-1 aged out");
        let all: Vec<u64> = log
            .query(&Query {
                limit: 10,
                ..Query::default()
            })
            .iter()
            .map(|a| a.id)
            .collect();
        assert_eq!(all, [4, 3, 2]);
        let unacked = Query {
            unacked: true,
            limit: 10,
            ..Query::default()
        };
        let ids: Vec<u64> = log.query(&unacked).iter().map(|a| a.id).collect();
        assert_eq!(ids, [4, 2]);
        let by_symbol = Query {
            symbol: Some("b".into()),
            limit: 10,
            ..Query::default()
        };
        assert_eq!(log.query(&by_symbol)[0].id, 2);
        assert_eq!(
            log.query(&Query {
                limit: 1,
                ..Query::default()
            })
            .len(),
            1
        );
        let info = Query {
            severity: Some(Severity::Info),
            limit: 10,
            ..Query::default()
        };
        assert!(log.query(&info).is_empty());
        assert_eq!(alerts.ack("a-1", SystemTime::now()), Acked::NotFound);
    }

    #[test]
    fn a_webhook_rule_needs_a_webhook_and_names_are_unique() {
        let hook = RuleSpec {
            handlers: Some(vec![HandlerKind::Webhook]),
            ..movers()
        };
        let err = Alerts::start(&settings(vec![hook]), None).unwrap_err();
        assert!(err.to_string().contains("field `handlers`"), "{err}");
        let err = Alerts::start(&settings(vec![movers(), movers()]), None).unwrap_err();
        assert!(
            err.to_string().contains("another rule has this name"),
            "{err}"
        );
    }
}
