//! Which scan a result comes from: the built-in ones by name, and scans defined in the
//! config file, each given a small number the first time its name is registered. A scan
//! is `Copy` and two bytes wide, so results, filters and dedup keys carry it for free.
//!
//! Custom names live in a process-wide, append-only table: a name keeps its number for
//! the life of the process, so every part that sees a `Scan` (filters, history, the bus)
//! agrees on it without a handle to the config. Between processes a custom scan travels
//! by name.

use std::fmt;
use std::sync::{Mutex, OnceLock};

use serde::Serialize;

/// The scans a result can come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scan {
    /// `|change_pct|` past its threshold.
    PriceChange,
    /// Volume well above its recent average.
    VolumeSpike,
    /// RSI at or above the overbought line.
    RsiOverbought,
    /// RSI at or below the oversold line.
    RsiOversold,
    /// Close above the prior N-bar high.
    NewHigh,
    /// Close below the prior N-bar low.
    NewLow,
    /// Fast SMA crossed above the slow one.
    SmaCrossUp,
    /// Fast SMA crossed below the slow one.
    SmaCrossDown,
    /// The benchmark source's synthetic results.
    Firehose,
    /// A scan from the config file, by its number in the table of names.
    Custom(u8),
}

/// Custom scans a process can name: a filter's scan set is one `u64`, built-in scans
/// included.
pub const MAX_CUSTOM: usize = 64 - Scan::ALL.len();

/// The names of custom scans, by number; each set once.
static NAMES: [OnceLock<&'static str>; MAX_CUSTOM] = [const { OnceLock::new() }; MAX_CUSTOM];
/// Held while a name is added, so two threads cannot take one number.
static ADDING: Mutex<()> = Mutex::new(());

/// Why a custom scan's name cannot be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScanNameError {
    /// Names are what filters and results carry: lower case letters, digits and `_`,
    /// starting with a letter, at most 32 characters.
    #[error(
        "scan name {0:?}: use 1 to 32 lower-case letters, digits and `_`, starting with a letter"
    )]
    Invalid(String),
    /// A custom scan may not take a built-in scan's name.
    #[error("scan name {0:?} is a built-in scan's")]
    BuiltIn(String),
    /// The table is full.
    #[error("more than {MAX_CUSTOM} custom scans")]
    TooMany,
}

impl Scan {
    /// Every built-in scan, in protocol order.
    pub const ALL: [Scan; 9] = [
        Scan::PriceChange,
        Scan::VolumeSpike,
        Scan::RsiOverbought,
        Scan::RsiOversold,
        Scan::NewHigh,
        Scan::NewLow,
        Scan::SmaCrossUp,
        Scan::SmaCrossDown,
        Scan::Firehose,
    ];

    /// The wire name.
    pub fn name(self) -> &'static str {
        match self {
            Scan::PriceChange => "price_change",
            Scan::VolumeSpike => "volume_spike",
            Scan::RsiOverbought => "rsi_overbought",
            Scan::RsiOversold => "rsi_oversold",
            Scan::NewHigh => "new_high",
            Scan::NewLow => "new_low",
            Scan::SmaCrossUp => "sma_cross_up",
            Scan::SmaCrossDown => "sma_cross_down",
            Scan::Firehose => "firehose",
            // Numbers are only handed out by `register`, which sets the name first.
            Scan::Custom(n) => NAMES
                .get(usize::from(n))
                .and_then(|name| name.get())
                .copied()
                .unwrap_or("unknown"),
        }
    }

    /// Parses a wire name: a built-in scan, or a registered custom one.
    pub fn from_name(name: &str) -> Option<Scan> {
        Scan::ALL
            .into_iter()
            .find(|s| s.name() == name)
            .or_else(|| {
                NAMES
                    .iter()
                    .take_while(|n| n.get().is_some())
                    .position(|n| n.get() == Some(&name))
                    .map(|n| Scan::Custom(n as u8))
            })
    }

    /// The custom scan called `name`, numbered now if it is new.
    pub fn register(name: &str) -> Result<Scan, ScanNameError> {
        let valid = (1..=32).contains(&name.len())
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid {
            return Err(ScanNameError::Invalid(name.to_owned()));
        }
        if Scan::ALL.iter().any(|s| s.name() == name) {
            return Err(ScanNameError::BuiltIn(name.to_owned()));
        }
        let _adding = ADDING.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(scan) = Scan::from_name(name) {
            return Ok(scan);
        }
        let free = NAMES
            .iter()
            .position(|n| n.get().is_none())
            .ok_or(ScanNameError::TooMany)?;
        // A few dozen short names at most, kept for the life of the process.
        let _ = NAMES[free].set(Box::leak(name.into()));
        Ok(Scan::Custom(free as u8))
    }

    /// This scan's bit in a filter's scan set.
    #[inline]
    pub fn bit(self) -> u64 {
        1 << self.code()
    }

    /// A small number for this scan, below 64: the built-in ones in protocol order, then
    /// the custom ones.
    #[inline]
    pub fn code(self) -> u8 {
        // A match, not a search of `ALL`: filters take a scan's bit for every delivery.
        match self {
            Scan::PriceChange => 0,
            Scan::VolumeSpike => 1,
            Scan::RsiOverbought => 2,
            Scan::RsiOversold => 3,
            Scan::NewHigh => 4,
            Scan::NewLow => 5,
            Scan::SmaCrossUp => 6,
            Scan::SmaCrossDown => 7,
            Scan::Firehose => 8,
            Scan::Custom(n) => Scan::ALL.len() as u8 + n,
        }
    }

    /// Defined in the config file rather than built in?
    pub fn is_custom(self) -> bool {
        matches!(self, Scan::Custom(_))
    }
}

impl fmt::Display for Scan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for Scan {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_custom_name_keeps_its_number_and_reads_back() {
        let a = Scan::register("test_oversold_bounce").unwrap();
        let b = Scan::register("test_gap_and_go").unwrap();
        assert_ne!(a, b);
        assert_eq!(Scan::register("test_oversold_bounce").unwrap(), a);
        assert_eq!(a.name(), "test_oversold_bounce");
        assert_eq!(Scan::from_name("test_gap_and_go"), Some(b));
        assert!(a.is_custom() && !Scan::NewHigh.is_custom());
        assert!(a.code() >= 9 && a.code() < 64);
        assert_ne!(a.bit() & b.bit(), a.bit(), "distinct bits");
        assert_eq!(Scan::from_name("new_high"), Some(Scan::NewHigh));
        assert_eq!(Scan::NewHigh.bit(), 1 << 4);
        for (i, scan) in Scan::ALL.iter().enumerate() {
            assert_eq!(usize::from(scan.code()), i, "{scan}");
        }
        assert_eq!(Scan::from_name("test_never_registered"), None);
    }

    #[test]
    fn names_are_checked() {
        for bad in [
            "",
            "Bounce",
            "9lives",
            "has space",
            "dash-ed",
            &"x".repeat(33),
        ] {
            assert!(
                matches!(Scan::register(bad), Err(ScanNameError::Invalid(_))),
                "{bad:?}"
            );
        }
        assert_eq!(
            Scan::register("new_high"),
            Err(ScanNameError::BuiltIn("new_high".into()))
        );
    }
}
