//! Alert rules: what the config file says, checked once at start into what matching runs.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use crate::dur::Dur;
use crate::event::{EventKind, Scan, ScanEvent};

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
    /// Conditions that must all hold, like `change_pct >= 5`.
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

/// A field of a result a condition can test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// `score`.
    Score,
    /// `price`.
    Price,
    /// `change_pct`.
    ChangePct,
    /// `|change_pct|`.
    AbsChangePct,
    /// `volume_ratio`.
    VolumeRatio,
    /// `rsi` (a result without one never matches).
    Rsi,
}

const FIELDS: &str = "score, price, change_pct, abs_change_pct, volume_ratio, rsi";

impl Field {
    fn parse(s: &str) -> Option<Field> {
        Some(match s {
            "score" => Field::Score,
            "price" => Field::Price,
            "change_pct" => Field::ChangePct,
            "abs_change_pct" => Field::AbsChangePct,
            "volume_ratio" => Field::VolumeRatio,
            "rsi" => Field::Rsi,
            _ => return None,
        })
    }

    /// The name conditions use.
    pub fn name(self) -> &'static str {
        match self {
            Field::Score => "score",
            Field::Price => "price",
            Field::ChangePct => "change_pct",
            Field::AbsChangePct => "abs_change_pct",
            Field::VolumeRatio => "volume_ratio",
            Field::Rsi => "rsi",
        }
    }

    fn of(self, ev: &ScanEvent) -> Option<f64> {
        Some(match self {
            Field::Score => ev.score,
            Field::Price => ev.price,
            Field::ChangePct => ev.change_pct,
            Field::AbsChangePct => ev.change_pct.abs(),
            Field::VolumeRatio => ev.volume_ratio,
            Field::Rsi => ev.rsi?,
        })
    }
}

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `>=`
    Ge,
    /// `>`
    Gt,
    /// `<=`
    Le,
    /// `<`
    Lt,
}

impl Op {
    fn symbol(self) -> &'static str {
        match self {
            Op::Ge => ">=",
            Op::Gt => ">",
            Op::Le => "<=",
            Op::Lt => "<",
        }
    }
}

/// `field op value`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Condition {
    /// What is tested.
    pub field: Field,
    /// How.
    pub op: Op,
    /// Against what.
    pub value: f64,
}

impl Condition {
    /// Parses `change_pct >= 5`.
    pub fn parse(s: &str) -> Result<Condition, String> {
        let ops = [(">=", Op::Ge), ("<=", Op::Le), (">", Op::Gt), ("<", Op::Lt)];
        let (at, text, op) = ops
            .iter()
            .filter_map(|(text, op)| s.find(text).map(|at| (at, *text, *op)))
            .min_by_key(|(at, text, _)| (*at, std::cmp::Reverse(text.len())))
            .ok_or_else(|| format!("`{s}`: expected FIELD OP NUMBER, with OP one of >= > <= <"))?;
        let field = s[..at].trim();
        let value = s[at + text.len()..].trim();
        let field = Field::parse(field)
            .ok_or_else(|| format!("`{s}`: unknown field `{field}`; known: {FIELDS}"))?;
        let value: f64 = value
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite())
            .ok_or_else(|| format!("`{s}`: `{value}` is not a number"))?;
        Ok(Condition { field, op, value })
    }

    /// The value it saw, when it holds.
    pub fn holds(&self, ev: &ScanEvent) -> Option<f64> {
        let x = self.field.of(ev)?;
        let ok = match self.op {
            Op::Ge => x >= self.value,
            Op::Gt => x > self.value,
            Op::Le => x <= self.value,
            Op::Lt => x < self.value,
        };
        ok.then_some(x)
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {}",
            self.field.name(),
            self.op.symbol(),
            self.value
        )
    }
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
    pub when: Vec<Condition>,
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

impl Rule {
    /// Checks a spec; `throttle` is the default throttle.
    pub fn from_spec(spec: &RuleSpec, throttle: Duration) -> Result<Rule, RuleError> {
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
        let when = spec
            .when
            .iter()
            .map(|c| Condition::parse(c).map_err(|m| err("when", m)))
            .collect::<Result<Vec<_>, _>>()?;
        let tests = |fields: &[Field]| when.iter().any(|c| fields.contains(&c.field));
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
            Kind::PriceChange if !tests(&[Field::ChangePct, Field::AbsChangePct]) => {
                return Err(err(
                    "when",
                    "a price_change rule needs a condition on change_pct or abs_change_pct".into(),
                ));
            }
            Kind::VolumeSpike if !tests(&[Field::VolumeRatio]) => {
                return Err(err(
                    "when",
                    "a volume_spike rule needs a condition on volume_ratio".into(),
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

    /// The conditions' values when `ev` matches the rule (empty for a rule without any).
    pub fn matches(&self, ev: &ScanEvent) -> Option<Vec<(Condition, f64)>> {
        let event_ok = match ev.kind {
            EventKind::New => self.on_new,
            EventKind::Update => self.on_update,
            EventKind::Clear => false,
        };
        if !event_ok || ev.adhoc && self.kind == Kind::NewOpportunity {
            return None;
        }
        // The benchmark firehose's synthetic results raise alerts only for a rule that
        // names its scan: a benchmark measures the stream, not alerts on noise.
        let scan_ok = match self.scans {
            Some(bits) => bits & ev.scan.bit() != 0,
            None => ev.scan != Scan::Firehose,
        };
        if !scan_ok {
            return None;
        }
        if let Some(symbols) = &self.symbols {
            if !symbols.iter().any(|s| **s == *ev.symbol_key) {
                return None;
            }
        }
        self.when
            .iter()
            .map(|c| c.holds(ev).map(|x| (*c, x)))
            .collect()
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
            &["abs_change_pct >= 5"],
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
    use std::time::SystemTime;

    fn spec(kind: Kind, when: &[&str]) -> RuleSpec {
        RuleSpec::new("r", kind, Severity::Warning, when)
    }

    fn event(kind: EventKind, change_pct: f64, volume_ratio: f64, rsi: Option<f64>) -> ScanEvent {
        let r = ScanResult {
            values: Vec::new(),
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

    #[test]
    fn conditions_parse_and_say_what_is_wrong() {
        let c = Condition::parse(" change_pct>=-5.5 ").unwrap();
        assert_eq!((c.field, c.op, c.value), (Field::ChangePct, Op::Ge, -5.5));
        assert_eq!(Condition::parse("rsi < 30").unwrap().op, Op::Lt);
        assert_eq!(Condition::parse("score > 2").unwrap().op, Op::Gt);
        assert_eq!(Condition::parse("score<=2").unwrap().op, Op::Le);
        assert!(
            Condition::parse("volume >= 3")
                .unwrap_err()
                .contains("unknown field")
        );
        assert!(
            Condition::parse("score >= x")
                .unwrap_err()
                .contains("not a number")
        );
        assert!(
            Condition::parse("score >= inf")
                .unwrap_err()
                .contains("not a number")
        );
        assert!(
            Condition::parse("score = 2")
                .unwrap_err()
                .contains("expected FIELD OP")
        );
    }

    #[test]
    fn bad_rules_name_the_rule_and_the_field() {
        let cases: [(RuleSpec, &str); 6] = [
            (spec(Kind::Threshold, &[]), "when"),
            (spec(Kind::PriceChange, &["score >= 2"]), "when"),
            (spec(Kind::VolumeSpike, &["rsi >= 2"]), "when"),
            (
                RuleSpec {
                    scans: Some(vec!["nope".into()]),
                    ..spec(Kind::Threshold, &["score >= 1"])
                },
                "scans",
            ),
            (
                RuleSpec {
                    events: Some(vec!["update".into()]),
                    ..spec(Kind::NewOpportunity, &[])
                },
                "events",
            ),
            (
                RuleSpec {
                    handlers: Some(vec![]),
                    ..spec(Kind::Threshold, &["score >= 1"])
                },
                "handlers",
            ),
        ];
        for (spec, field) in cases {
            let err = Rule::from_spec(&spec, Duration::from_secs(30)).unwrap_err();
            assert_eq!((err.rule.as_str(), err.field), ("r", field), "{err}");
            assert!(err.to_string().starts_with("rule `r`, field `"));
        }
    }

    #[test]
    fn kinds_match_their_events_and_conditions() {
        let t = Duration::from_secs(30);
        let price = Rule::from_spec(&spec(Kind::PriceChange, &["abs_change_pct >= 5"]), t).unwrap();
        let hit = price
            .matches(&event(EventKind::New, -6.0, 1.0, None))
            .unwrap();
        assert_eq!(hit[0].1, 6.0, "the value seen is reported");
        assert!(
            price
                .matches(&event(EventKind::New, 2.0, 1.0, None))
                .is_none()
        );
        // Default events: `new` only; `clear` never.
        assert!(
            price
                .matches(&event(EventKind::Update, -6.0, 1.0, None))
                .is_none()
        );
        assert!(
            price
                .matches(&event(EventKind::Clear, -6.0, 1.0, None))
                .is_none()
        );

        let opportunity = Rule::from_spec(&spec(Kind::NewOpportunity, &[]), t).unwrap();
        assert_eq!(
            opportunity.matches(&event(EventKind::New, 0.0, 1.0, None)),
            Some(vec![])
        );

        let rsi = RuleSpec {
            events: Some(vec!["new".into(), "update".into()]),
            symbols: Some(vec!["TSLA".into()]),
            ..spec(Kind::Threshold, &["rsi >= 80"])
        };
        let rsi = Rule::from_spec(&rsi, t).unwrap();
        assert!(
            rsi.matches(&event(EventKind::Update, 0.0, 1.0, Some(85.0)))
                .is_some()
        );
        assert!(
            rsi.matches(&event(EventKind::Update, 0.0, 1.0, None))
                .is_none()
        );
        let other = RuleSpec {
            symbols: Some(vec!["AAPL".into()]),
            ..spec(Kind::VolumeSpike, &["volume_ratio >= 3"])
        };
        let other = Rule::from_spec(&other, t).unwrap();
        assert!(
            other
                .matches(&event(EventKind::New, 0.0, 4.0, None))
                .is_none()
        );
    }

    #[test]
    fn the_default_rules_are_valid() {
        for spec in default_rules() {
            Rule::from_spec(&spec, Duration::from_secs(30)).unwrap();
        }
    }
}
