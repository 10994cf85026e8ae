//! The indicators a scan may name, their parameters and their limits, and the one
//! canonical way each is written (`bb_lower(20, 2)`), which keys a result's `values`.

use std::fmt;

use super::Error;

/// An indicator with its parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Indicator {
    /// Exponential moving average of closes, seeded with the SMA.
    Ema(u32),
    /// Simple moving average of closes.
    Sma(u32),
    /// Wilder's RSI.
    Rsi(u32),
    /// MACD line: fast EMA minus slow EMA.
    Macd(Macd),
    /// EMA of the MACD line.
    MacdSignal(Macd),
    /// MACD line minus its signal.
    MacdHist(Macd),
    /// SMA plus k population standard deviations.
    BbUpper(u32, Factor),
    /// SMA minus k population standard deviations.
    BbLower(u32, Factor),
    /// Where the close sits between the bands (0 at the lower, 1 at the upper).
    BbPct(u32, Factor),
    /// Wilder's average true range.
    Atr(u32),
    /// Volume-weighted typical price since the session began.
    Vwap,
    /// Highest high of the n bars before this one.
    Highest(u32),
    /// Lowest low of the n bars before this one.
    Lowest(u32),
    /// Mean volume of the n bars before this one.
    AvgVolume(u32),
    /// Volume over the mean of the n bars before this one.
    VolumeRatio(u32),
    /// Change in percent against the reference (previous close or session open).
    ChangePct,
    /// Open against the previous close, in percent.
    GapPct,
    /// The last price (the close).
    Price,
    /// The bar's open.
    Open,
    /// The bar's high.
    High,
    /// The bar's low.
    Low,
    /// The bar's close.
    Close,
    /// The bar's volume.
    Volume,
}

/// MACD's three periods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Macd {
    /// Fast EMA period.
    pub fast: u32,
    /// Slow EMA period.
    pub slow: u32,
    /// Signal EMA period.
    pub signal: u32,
}

/// A band's width in standard deviations: a positive finite number, kept as its bits so
/// an indicator can be hashed and compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Factor(u64);

impl Factor {
    /// The number.
    pub fn get(self) -> f64 {
        f64::from_bits(self.0)
    }
}

impl fmt::Display for Factor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Rust prints the shortest form that reads back the same: 2, 2.5, 0.1.
        write!(f, "{}", self.get())
    }
}

/// The longest window any indicator keeps, in bars: memory per symbol grows with it.
pub const MAX_PERIOD: u32 = 5000;

/// How a parameter is checked.
#[derive(Clone, Copy)]
enum Param {
    /// A whole number of bars from `min` to [`MAX_PERIOD`].
    Period { name: &'static str, min: u32 },
    /// A positive number.
    Factor { name: &'static str },
}

use Param::{Factor as K, Period as N};

/// Each indicator's name and parameters.
const SPECS: &[(&str, &[Param])] = &[
    ("ema", &[N { name: "n", min: 2 }]),
    ("sma", &[N { name: "n", min: 2 }]),
    ("rsi", &[N { name: "n", min: 2 }]),
    ("macd", MACD),
    ("macd_signal", MACD),
    ("macd_hist", MACD),
    ("bb_upper", BB),
    ("bb_lower", BB),
    ("bb_pct", BB),
    ("atr", &[N { name: "n", min: 1 }]),
    ("vwap", &[]),
    ("highest", &[N { name: "n", min: 1 }]),
    ("lowest", &[N { name: "n", min: 1 }]),
    ("avg_volume", &[N { name: "n", min: 1 }]),
    ("volume_ratio", &[N { name: "n", min: 1 }]),
    ("change_pct", &[]),
    ("gap_pct", &[]),
    ("price", &[]),
    ("open", &[]),
    ("high", &[]),
    ("low", &[]),
    ("close", &[]),
    ("volume", &[]),
];

const MACD: &[Param] = &[
    N {
        name: "fast",
        min: 2,
    },
    N {
        name: "slow",
        min: 2,
    },
    N {
        name: "signal",
        min: 1,
    },
];
const BB: &[Param] = &[N { name: "n", min: 2 }, K { name: "k" }];

/// The functions that are not indicators.
pub const CROSSES: [&str; 2] = ["crosses_above", "crosses_below"];
/// The absolute value.
pub const ABS: &str = "abs";

/// Is `name` an indicator (with or without parameters)?
pub fn is_indicator(name: &str) -> bool {
    SPECS.iter().any(|(n, _)| *n == name)
}

/// The indicator `name` with `args` (each with its column), checked; `col` is the name's.
pub fn indicator(name: &str, args: &[(f64, usize)], col: usize) -> Result<Indicator, Error> {
    let Some((_, params)) = SPECS.iter().find(|(n, _)| *n == name) else {
        return Err(unknown(name, col, &[]));
    };
    if args.len() != params.len() {
        return Err(Error::at(
            col,
            format!(
                "{name} takes {}, not {}",
                signature(name, params),
                args.len()
            ),
        ));
    }
    let mut periods = [0u32; 3];
    let mut factor = Factor(0);
    for (i, (param, &(value, at))) in params.iter().zip(args).enumerate() {
        match *param {
            N { name: p, min } => {
                let ok = value.fract() == 0.0 && value >= f64::from(min);
                if !ok || value > f64::from(MAX_PERIOD) {
                    return Err(Error::at(
                        at,
                        format!(
                            "{name}: {p} must be a whole number from {min} to {MAX_PERIOD}, not {value}"
                        ),
                    ));
                }
                periods[i] = value as u32;
            }
            K { name: p } => {
                if !(value.is_finite() && value > 0.0) {
                    return Err(Error::at(
                        at,
                        format!("{name}: {p} must be a positive number, not {value}"),
                    ));
                }
                factor = Factor(value.to_bits());
            }
        }
    }
    let [a, b, c] = periods;
    let macd = Macd {
        fast: a,
        slow: b,
        signal: c,
    };
    if name.starts_with("macd") && a >= b {
        return Err(Error::at(
            col,
            format!("{name}: the fast period ({a}) must be shorter than the slow one ({b})"),
        ));
    }
    Ok(match name {
        "ema" => Indicator::Ema(a),
        "sma" => Indicator::Sma(a),
        "rsi" => Indicator::Rsi(a),
        "macd" => Indicator::Macd(macd),
        "macd_signal" => Indicator::MacdSignal(macd),
        "macd_hist" => Indicator::MacdHist(macd),
        "bb_upper" => Indicator::BbUpper(a, factor),
        "bb_lower" => Indicator::BbLower(a, factor),
        "bb_pct" => Indicator::BbPct(a, factor),
        "atr" => Indicator::Atr(a),
        "vwap" => Indicator::Vwap,
        "highest" => Indicator::Highest(a),
        "lowest" => Indicator::Lowest(a),
        "avg_volume" => Indicator::AvgVolume(a),
        "volume_ratio" => Indicator::VolumeRatio(a),
        "change_pct" => Indicator::ChangePct,
        "gap_pct" => Indicator::GapPct,
        "price" => Indicator::Price,
        "open" => Indicator::Open,
        "high" => Indicator::High,
        "low" => Indicator::Low,
        "close" => Indicator::Close,
        _ => Indicator::Volume,
    })
}

/// `bb_lower(n, k)`: how a function is called.
fn signature(name: &str, params: &[Param]) -> String {
    let names: Vec<&str> = params
        .iter()
        .map(|p| match p {
            N { name, .. } | K { name } => *name,
        })
        .collect();
    match names.len() {
        0 => "no arguments".to_owned(),
        1 => format!("1 argument ({name}({}))", names[0]),
        n => format!("{n} arguments ({name}({}))", names.join(", ")),
    }
}

/// An unknown name, with the nearest known one (an indicator, a function or one of
/// `vars`) when it is a likely typo.
pub fn unknown(name: &str, col: usize, vars: &[&str]) -> Error {
    let known = SPECS
        .iter()
        .map(|(n, _)| *n)
        .chain(CROSSES)
        .chain([ABS])
        .chain(vars.iter().copied());
    let nearest = known
        .map(|k| (distance(name, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min();
    let hint = nearest.map_or(String::new(), |(_, k)| format!(" (did you mean {k}?)"));
    Error::at(col, format!("unknown indicator {name}{hint}"))
}

/// Edit distance (insertions, deletions, substitutions).
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (diag + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diag = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

impl fmt::Display for Indicator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let macd = |f: &mut fmt::Formatter<'_>, name: &str, m: &Macd| {
            write!(f, "{name}({}, {}, {})", m.fast, m.slow, m.signal)
        };
        match self {
            Indicator::Ema(n) => write!(f, "ema({n})"),
            Indicator::Sma(n) => write!(f, "sma({n})"),
            Indicator::Rsi(n) => write!(f, "rsi({n})"),
            Indicator::Macd(m) => macd(f, "macd", m),
            Indicator::MacdSignal(m) => macd(f, "macd_signal", m),
            Indicator::MacdHist(m) => macd(f, "macd_hist", m),
            Indicator::BbUpper(n, k) => write!(f, "bb_upper({n}, {k})"),
            Indicator::BbLower(n, k) => write!(f, "bb_lower({n}, {k})"),
            Indicator::BbPct(n, k) => write!(f, "bb_pct({n}, {k})"),
            Indicator::Atr(n) => write!(f, "atr({n})"),
            Indicator::Vwap => f.write_str("vwap"),
            Indicator::Highest(n) => write!(f, "highest({n})"),
            Indicator::Lowest(n) => write!(f, "lowest({n})"),
            Indicator::AvgVolume(n) => write!(f, "avg_volume({n})"),
            Indicator::VolumeRatio(n) => write!(f, "volume_ratio({n})"),
            Indicator::ChangePct => f.write_str("change_pct"),
            Indicator::GapPct => f.write_str("gap_pct"),
            Indicator::Price => f.write_str("price"),
            Indicator::Open => f.write_str("open"),
            Indicator::High => f.write_str("high"),
            Indicator::Low => f.write_str("low"),
            Indicator::Close => f.write_str("close"),
            Indicator::Volume => f.write_str("volume"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(values: &[f64]) -> Vec<(f64, usize)> {
        values.iter().map(|v| (*v, 1)).collect()
    }

    #[test]
    fn every_indicator_prints_as_it_is_written() {
        for (name, values, text) in [
            ("rsi", &[14.0][..], "rsi(14)"),
            ("bb_lower", &[20.0, 2.0], "bb_lower(20, 2)"),
            ("bb_pct", &[20.0, 2.5], "bb_pct(20, 2.5)"),
            ("macd_hist", &[12.0, 26.0, 9.0], "macd_hist(12, 26, 9)"),
            ("vwap", &[], "vwap"),
            ("volume_ratio", &[20.0], "volume_ratio(20)"),
        ] {
            let ind = indicator(name, &args(values), 1).unwrap();
            assert_eq!(ind.to_string(), text);
        }
    }

    #[test]
    fn parameters_are_checked_with_their_limits() {
        for (name, values, needle) in [
            ("rsi", &[1.0][..], "from 2 to 5000, not 1"),
            ("sma", &[20.5], "whole number"),
            ("ema", &[6000.0], "from 2 to 5000"),
            ("bb_upper", &[20.0, 0.0], "k must be a positive number"),
            ("macd", &[26.0, 12.0, 9.0], "must be shorter"),
            ("rsi", &[], "takes 1 argument (rsi(n)), not 0"),
            (
                "bb_lower",
                &[20.0],
                "takes 2 arguments (bb_lower(n, k)), not 1",
            ),
            ("close", &[1.0], "takes no arguments, not 1"),
        ] {
            let err = indicator(name, &args(values), 1).unwrap_err();
            assert!(err.message.contains(needle), "{name}: {}", err.message);
        }
    }

    #[test]
    fn a_likely_typo_gets_the_nearest_name() {
        for (typo, hint) in [
            ("bb_lowr", Some("bb_lower")),
            ("rsl", Some("rsi")),
            ("crosses_abve", Some("crosses_above")),
            ("volume_ration", Some("volume_ratio")),
            ("momentum", None),
        ] {
            let message = unknown(typo, 1, &[]).message;
            match hint {
                Some(h) => assert!(
                    message.ends_with(&format!("(did you mean {h}?)")),
                    "{message}"
                ),
                None => assert!(!message.contains("did you mean"), "{message}"),
            }
        }
    }
}
