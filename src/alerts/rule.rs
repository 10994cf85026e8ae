//! Alert rules: what the config file says, checked once at start into what matching runs.

use std::time::Duration;

use serde::Deserialize;

use super::when::When;
use crate::dur::Dur;
use crate::event::{EventKind, Scan, ScanEvent};
use crate::expr::Needs;

/// What kind of alert a rule raises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A symbol enters a scan (a `new` event).
    NewOpportunity,
    /// Field conditions hold.
    Threshold,
    /// The price moved: conditions on `change_pct` or `abs_change_pct`.
    PriceChange,
    /// Volume is unusual: conditions on `volume_ratio`.
    VolumeSpike,
}

impl Kind {
    /// The protocol's name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::NewOpportunity => "new_opportunity",
            Kind::Threshold => "threshold",
            Kind::PriceChange => "price_change",
            Kind::VolumeSpike => "volume_spike",
        }
    }
}

/// How urgent an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth a look.
    Info,
    /// Worth acting on.
    Warning,
    /// Act now.
    Critical,
}

impl Severity {
    /// The protocol's name.
    pub fn name(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }

    /// Parses a name.
    pub fn from_name(s: &str) -> Option<Severity> {
        match s {
            "info" => Some(Severity::Info),
            "warning" => Some(Severity::Warning),
            "critical" => Some(Severity::Critical),
            _ => None,
        }
    }
}

/// Where an alert goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HandlerKind {
    /// An `alert` message to every connection holding a subscription.
    Websocket,
    /// A structured line on stderr.
    Log,
    /// An HTTP POST to `webhook_url`, from a worker thread.
    Webhook,
}

/// A rule as the config file writes it (`[[rules]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Unique name.
    pub name: String,
    /// Alert kind.
    pub kind: Kind,
    /// Severity [default: info].
    #[serde(default = "default_severity")]
    pub severity: Severity,
    /// Scans watched [default: all market scans; `firehose` only when named].
    #[serde(default)]
    pub scans: Option<Vec<String>>,
    /// Symbols watched [default: all].
    #[serde(default)]
    pub symbols: Option<Vec<String>>,
    /// Events watched, `new` and/or `update` [default: new].
    #[serde(default)]
    pub events: Option<Vec<String>>,
    /// Conditions in the scan language that must all hold, like `abs(change_pct) >= 5`
    /// or `rsi(14) < 30`.
    #[serde(default)]
    pub when: Vec<String>,
    /// At most one alert per symbol this often [default: the `alert_throttle` setting].
    #[serde(default)]
    pub throttle: Option<Dur>,
    /// Handlers [default: websocket and log].
    #[serde(default)]
    pub handlers: Option<Vec<HandlerKind>>,
}

impl RuleSpec {
    /// A rule on every scan and symbol, with the default events, throttle and handlers.
    pub fn new(name: &str, kind: Kind, severity: Severity, when: &[&str]) -> RuleSpec {
        RuleSpec {
            name: name.into(),
            kind,
            severity,
            scans: None,
            symbols: None,
            events: None,
            when: when.iter().map(|s| (*s).to_owned()).collect(),
            throttle: None,
            handlers: None,
        }
    }
}

fn default_severity() -> Severity {
    Severity::Info
}

/// A checked rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Unique name.
    pub name: String,
    /// Alert kind.
    pub kind: Kind,
    /// Severity.
    pub severity: Severity,
    /// Bit set of `Scan::bit`; `None` is every scan.
    scans: Option<u64>,
    /// Upper-cased symbols; `None` is every symbol.
    symbols: Option<Vec<Box<str>>>,
    on_new: bool,
    on_update: bool,
    /// All must hold.
    pub when: When,
    /// At most one alert per symbol this often.
    pub throttle: Duration,
    /// Where its alerts go.
    pub handlers: Vec<HandlerKind>,
}

/// A rule refused at start: which rule, which field, why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("rule `{rule}`, field `{field}`: {message}")]
pub struct RuleError {
    /// The rule's name (or its position when it has none).
    pub rule: String,
    /// The field at fault.
    pub field: &'static str,
    /// What is wrong.
    pub message: String,
}

/// The rules, checked, and what their conditions read per symbol.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    /// In config order.
    pub rules: Vec<Rule>,
    /// Every indicator and cross the rules read, each once: the frame's slots.
    pub needs: Needs,
}

impl RuleSet {
    /// Checks `specs`, each name once; `throttle` is the default throttle.
    pub fn compile(specs: &[RuleSpec], throttle: Duration) -> Result<RuleSet, RuleError> {
        let mut set = RuleSet::default();
        for spec in specs {
            let rule = Rule::from_spec(spec, throttle, &mut set.needs)?;
            if set.rules.iter().any(|r| r.name == rule.name) {
                return Err(RuleError {
                    rule: rule.name,
                    field: "name",
                    message: "another rule has this name".into(),
                });
            }
            set.rules.push(rule);
        }
        Ok(set)
    }
}

impl Rule {
    /// Checks a spec, compiling its conditions against `needs`; `throttle` is the
    /// default throttle.
    pub fn from_spec(
        spec: &RuleSpec,
        throttle: Duration,
        needs: &mut Needs,
    ) -> Result<Rule, RuleError> {
        let err = |field: &'static str, message: String| RuleError {
            rule: spec.name.clone(),
            field,
            message,
        };
        if spec.name.trim().is_empty() || spec.name.len() > 128 {
            return Err(err("name", "must be 1 to 128 bytes".into()));
        }
        let scans = match &spec.scans {
            None => None,
            Some(list) if list.is_empty() => {
                return Err(err("scans", "empty; omit it to watch every scan".into()));
            }
            Some(list) => {
                let mut bits = 0;
                for name in list {
                    let scan = Scan::from_name(name)
                        .ok_or_else(|| err("scans", format!("unknown scan `{name}`")))?;
                    bits |= scan.bit();
                }
                Some(bits)
            }
        };
        let symbols = match &spec.symbols {
            None => None,
            Some(list) if list.is_empty() => {
                return Err(err(
                    "symbols",
                    "empty; omit it to watch every symbol".into(),
                ));
            }
            Some(list) => Some(
                list.iter()
                    .map(|s| s.trim().to_ascii_uppercase().into_boxed_str())
                    .collect(),
            ),
        };
        let (mut on_new, mut on_update) = (false, false);
        match &spec.events {
            None => on_new = true,
            Some(list) if list.is_empty() => {
                return Err(err("events", "empty; omit it to watch `new`".into()));
            }
            Some(list) => {
                for e in list {
                    match e.as_str() {
                        "new" => on_new = true,
                        "update" => on_update = true,
                        other => {
                            return Err(err(
                                "events",
                                format!("`{other}`: expected `new` or `update`"),
                            ));
                        }
                    }
                }
            }
        }
        let when = When::compile(&spec.when, needs).map_err(|m| err("when", m))?;
        match spec.kind {
            Kind::NewOpportunity if on_update => {
                return Err(err(
                    "events",
                    "a new_opportunity rule watches `new` events only".into(),
                ));
            }
            Kind::Threshold if when.is_empty() => {
                return Err(err("when", "a threshold rule needs a condition".into()));
            }
            Kind::PriceChange if !when.reads_change() => {
                return Err(err(
                    "when",
                    "a price_change rule needs a condition on change_pct or abs_change_pct".into(),
                ));
            }
            Kind::VolumeSpike if !when.reads_volume_ratio() => {
                return Err(err(
                    "when",
                    "a volume_spike rule needs a condition on volume_ratio or volume_ratio(n)"
                        .into(),
                ));
            }
            _ => {}
        }
        let throttle = spec.throttle.map_or(throttle, |d| d.0);
        if throttle > Duration::from_secs(30 * 24 * 3600) {
            return Err(err("throttle", "must be at most 30 days".into()));
        }
        let handlers = match &spec.handlers {
            None => vec![HandlerKind::Websocket, HandlerKind::Log],
            Some(list) if list.is_empty() => {
                return Err(err("handlers", "empty: the alerts would go nowhere".into()));
            }
            Some(list) => list.clone(),
        };
        Ok(Rule {
            name: spec.name.clone(),
            kind: spec.kind,
            severity: spec.severity,
            scans,
            symbols,
            on_new,
            on_update,
            when,
            throttle,
            handlers,
        })
    }

    /// Is `ev` of an event, a scan and a symbol this rule watches (its conditions aside)?
    pub fn watches(&self, ev: &ScanEvent) -> bool {
        let event_ok = match ev.kind {
            EventKind::New => self.on_new,
            EventKind::Update => self.on_update,
            EventKind::Clear => false,
        };
        if !event_ok || ev.adhoc && self.kind == Kind::NewOpportunity {
            return false;
        }
        // The benchmark firehose's synthetic results raise alerts only for a rule that
        // names its scan: a benchmark measures the stream, not alerts on noise.
        let scan_ok = match self.scans {
            Some(bits) => bits & ev.scan.bit() != 0,
            None => ev.scan != Scan::Firehose,
        };
        scan_ok
            && self
                .symbols
                .as_ref()
                .is_none_or(|symbols| symbols.iter().any(|s| **s == *ev.symbol_key))
    }
}

/// The rules a server runs when its config file names none: enough that the demo shows
/// alerts within a minute.
pub fn default_rules() -> Vec<RuleSpec> {
    let rule = |name: &str, kind, severity, when: &[&str], events: &[&str]| RuleSpec {
        events: Some(events.iter().map(|s| (*s).to_owned()).collect()),
        ..RuleSpec::new(name, kind, severity, when)
    };
    vec![
        rule(
            "big-movers",
            Kind::PriceChange,
            Severity::Warning,
            &["abs(change_pct) >= 5"],
            &["new", "update"],
        ),
        rule(
            "volume-surge",
            Kind::VolumeSpike,
            Severity::Info,
            &["volume_ratio >= 5"],
            &["new", "update"],
        ),
        rule(
            "strong-setups",
            Kind::NewOpportunity,
            Severity::Info,
            &["score >= 4"],
            &["new"],
        ),
        rule(
            "rsi-extremes",
            Kind::Threshold,
            Severity::Critical,
            &["rsi >= 90"],
            &["new", "update"],
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::ScanResult;
    use crate::expr::Frame;
    use std::time::SystemTime;

    fn spec(kind: Kind, when: &[&str]) -> RuleSpec {
        RuleSpec::new("r", kind, Severity::Warning, when)
    }

    fn rule(spec: &RuleSpec) -> Result<(Rule, Needs), RuleError> {
        let mut needs = Needs::default();
        let rule = Rule::from_spec(spec, Duration::from_secs(30), &mut needs)?;
        Ok((rule, needs))
    }

    fn event(kind: EventKind, change_pct: f64, volume_ratio: f64, rsi: Option<f64>) -> ScanEvent {
        let r = ScanResult {
            values: Vec::new(),
            rule_frame: None,
            symbol: "tsla".into(),
            scan: Scan::PriceChange,
            event: kind,
            score: 2.0,
            price: 100.0,
            change_pct,
            volume: 10,
            volume_ratio,
            rsi,
            source_ts: None,
            adhoc: false,
        };
        ScanEvent::publish(&r, 1, SystemTime::now())
    }

    /// `rule` judged on `ev` with indicator values `given` by slot.
    fn judge(rule: &(Rule, Needs), ev: &ScanEvent, given: &[f64]) -> Option<Vec<(String, f64)>> {
        let frame = Frame {
            values: given.into(),
            crosses: crate::expr::cross_states(rule.1.crosses.len()).into(),
        };
        let rule = &rule.0;
        rule.watches(ev)
            .then(|| rule.when.holds(ev, &frame))
            .flatten()
    }

    #[test]
    fn bad_rules_name_the_rule_and_the_field() {
        let cases: [(RuleSpec, &str, &str); 9] = [
            (spec(Kind::Threshold, &[]), "when", "needs a condition"),
            (
                spec(Kind::PriceChange, &["score >= 2"]),
                "when",
                "change_pct",
            ),
            (
                spec(Kind::VolumeSpike, &["rsi >= 2"]),
                "when",
                "volume_ratio",
            ),
            (
                spec(Kind::Threshold, &["score >= 1", "rsl(14) < 30"]),
                "when",
                "when[1], col 1: unknown indicator rsl (did you mean rsi?)",
            ),
            (
                spec(Kind::Threshold, &["scor >= 1"]),
                "when",
                "(did you mean score?)",
            ),
            (
                spec(Kind::Threshold, &["crosses_above(score, 2)"]),
                "when",
                "col 15: a cross compares indicators",
            ),
            (
                RuleSpec {
                    scans: Some(vec!["nope".into()]),
                    ..spec(Kind::Threshold, &["score >= 1"])
                },
                "scans",
                "unknown scan",
            ),
            (
                RuleSpec {
                    events: Some(vec!["update".into()]),
                    ..spec(Kind::NewOpportunity, &[])
                },
                "events",
                "new",
            ),
            (
                RuleSpec {
                    handlers: Some(vec![]),
                    ..spec(Kind::Threshold, &["score >= 1"])
                },
                "handlers",
                "nowhere",
            ),
        ];
        for (spec, field, needle) in cases {
            let err = rule(&spec).unwrap_err();
            assert_eq!((err.rule.as_str(), err.field), ("r", field), "{err}");
            assert!(err.to_string().starts_with("rule `r`, field `"));
            assert!(err.message.contains(needle), "{err}");
        }
    }

    #[test]
    fn kinds_match_their_events_and_conditions() {
        let price = rule(&spec(Kind::PriceChange, &["abs_change_pct >= 5"])).unwrap();
        let hit = judge(&price, &event(EventKind::New, -6.0, 1.0, None), &[]).unwrap();
        assert_eq!(hit, [("abs_change_pct".to_owned(), 6.0)]);
        assert!(judge(&price, &event(EventKind::New, 2.0, 1.0, None), &[]).is_none());
        // Default events: `new` only; `clear` never.
        assert!(judge(&price, &event(EventKind::Update, -6.0, 1.0, None), &[]).is_none());
        assert!(judge(&price, &event(EventKind::Clear, -6.0, 1.0, None), &[]).is_none());

        let opportunity = rule(&spec(Kind::NewOpportunity, &[])).unwrap();
        let ev = event(EventKind::New, 0.0, 1.0, None);
        assert_eq!(judge(&opportunity, &ev, &[]), Some(vec![]));

        let rsi = RuleSpec {
            events: Some(vec!["new".into(), "update".into()]),
            symbols: Some(vec!["TSLA".into()]),
            ..spec(Kind::Threshold, &["rsi >= 80"])
        };
        let rsi = rule(&rsi).unwrap();
        let ev = event(EventKind::Update, 0.0, 1.0, Some(85.0));
        assert!(judge(&rsi, &ev, &[]).is_some());
        // A result without an RSI: undefined, so the condition does not hold.
        let ev = event(EventKind::Update, 0.0, 1.0, None);
        assert!(judge(&rsi, &ev, &[]).is_none());
        let other = RuleSpec {
            symbols: Some(vec!["AAPL".into()]),
            ..spec(Kind::VolumeSpike, &["volume_ratio >= 3"])
        };
        let other = rule(&other).unwrap();
        assert!(judge(&other, &event(EventKind::New, 0.0, 4.0, None), &[]).is_none());
    }

    #[test]
    fn conditions_read_indicators_from_the_frame_and_fields_from_the_result() {
        let spec = spec(
            Kind::VolumeSpike,
            &[
                "rsi(14) < 30",
                "volume_ratio(50) >= 2 * score",
                "price > sma(200)",
            ],
        );
        let r = rule(&spec).unwrap();
        let slots =
            r.1.indicators
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>();
        assert_eq!(slots, ["rsi(14)", "volume_ratio(50)", "price", "sma(200)"]);
        let ev = event(EventKind::New, 1.0, 9.0, Some(80.0));
        // The frame's rsi(14) is what counts, not the result's own `rsi`.
        let seen = judge(&r, &ev, &[25.0, 4.5, 101.0, 100.0]).unwrap();
        let names: Vec<&str> = seen.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["rsi(14)", "volume_ratio(50)", "price", "sma(200)"]);
        assert_eq!(seen[1].1, 4.5);
        assert!(judge(&r, &ev, &[35.0, 4.5, 101.0, 100.0]).is_none());
        assert!(
            judge(&r, &ev, &[25.0, 3.9, 101.0, 100.0]).is_none(),
            "4.5 < 2 * score"
        );
        assert!(
            judge(&r, &ev, &[25.0, 4.5, 101.0, f64::NAN]).is_none(),
            "undefined"
        );
    }

    #[test]
    fn a_rule_set_shares_what_its_rules_read_and_refuses_a_name_twice() {
        let a = RuleSpec::new("a", Kind::Threshold, Severity::Info, &["rsi(14) > 70"]);
        let b = RuleSpec::new(
            "b",
            Kind::Threshold,
            Severity::Info,
            &["rsi(14) < 30", "crosses_above(ema(12), ema(26))"],
        );
        let set = RuleSet::compile(&[a.clone(), b], Duration::from_secs(1)).unwrap();
        assert_eq!(set.needs.indicators.len(), 3, "rsi(14) once, the two EMAs");
        assert_eq!(set.needs.crosses.len(), 1);
        let err = RuleSet::compile(&[a.clone(), a], Duration::from_secs(1)).unwrap_err();
        assert_eq!((err.rule.as_str(), err.field), ("a", "name"));
    }

    #[test]
    fn the_default_rules_are_valid() {
        RuleSet::compile(&default_rules(), Duration::from_secs(30)).unwrap();
    }
}
