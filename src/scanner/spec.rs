//! What a source is, as settings name it: `sim`, `csv:PATH`, `jsonl:PATH`,
//! `firehose:RATE`, and the replay speed. Parsing only; the scanner builds the source.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

/// Where market data (or results) come from.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceSpec {
    /// `sim`: the seeded synthetic market.
    Sim,
    /// `csv:PATH`: replay OHLCV bars from a file or a directory of files.
    Csv {
        /// File or directory.
        path: PathBuf,
    },
    /// `jsonl:PATH` or `jsonl:-` (stdin): one tick per line.
    Jsonl {
        /// File, or `-`.
        path: PathBuf,
    },
    /// `firehose:RATE`: exactly RATE synthetic results per second, for benchmarks.
    Firehose {
        /// Results per second.
        rate: u32,
    },
}

const SOURCES: &str = "sim, csv:PATH, jsonl:PATH, jsonl:- or firehose:RATE";

impl FromStr for SourceSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, arg) = s.split_once(':').unwrap_or((s, ""));
        let path = || {
            if arg.is_empty() {
                Err(format!("{kind}:PATH needs a path, got `{s}`"))
            } else {
                Ok(PathBuf::from(arg))
            }
        };
        match kind {
            "sim" if arg.is_empty() => Ok(SourceSpec::Sim),
            "csv" => Ok(SourceSpec::Csv { path: path()? }),
            "jsonl" => Ok(SourceSpec::Jsonl { path: path()? }),
            "firehose" => {
                let rate = arg.parse().map_err(|_| {
                    format!("firehose:RATE needs RATE as a whole number of results per second, got `{arg}`")
                })?;
                Ok(SourceSpec::Firehose { rate })
            }
            _ => Err(format!("unknown source `{s}`; known: {SOURCES}")),
        }
    }
}

impl fmt::Display for SourceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceSpec::Sim => f.write_str("sim"),
            SourceSpec::Csv { path } => write!(f, "csv:{}", path.display()),
            SourceSpec::Jsonl { path } => write!(f, "jsonl:{}", path.display()),
            SourceSpec::Firehose { rate } => write!(f, "firehose:{rate}"),
        }
    }
}

impl<'de> Deserialize<'de> for SourceSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Replay speed: bars per second over all symbols, or as fast as the scanner goes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Speed {
    /// This many bars per second.
    PerSecond(f64),
    /// One time step after another, each scanned at once.
    Max,
}

impl FromStr for Speed {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "max" {
            return Ok(Speed::Max);
        }
        match s.parse::<f64>() {
            Ok(r) if r.is_finite() && r > 0.0 => Ok(Speed::PerSecond(r)),
            _ => Err(format!(
                "replay speed is bars per second above 0, or `max`; got `{s}`"
            )),
        }
    }
}

impl fmt::Display for Speed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Speed::PerSecond(r) => write!(f, "{r}"),
            Speed::Max => f.write_str("max"),
        }
    }
}

impl<'de> Deserialize<'de> for Speed {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(f64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(r) => Speed::from_str(&r.to_string()),
            Raw::Text(s) => s.parse(),
        }
        .map_err(serde::de::Error::custom)
    }
}
