//! The config file's `[[scans]]`: scans a user writes in the scan language, beside the
//! built-in ones. Checked when the config loads, so a bad one stops the server with the
//! file, the scan, the field and the column.

use serde::{Deserialize, Serialize};

use crate::event::Scan;
use crate::scanner::scanset::Definition;

/// A scan as the config file writes it.
///
/// ```toml
/// [[scans]]
/// name  = "oversold_bounce"
/// when  = ["rsi(14) < 35", "close > bb_lower(20, 2)", "volume_ratio(20) >= 1.5"]
/// score = "(35 - rsi(14)) / 5 + volume_ratio(20)"
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScanSpec {
    /// Its name, as results and filters carry it.
    pub name: String,
    /// Conditions that must all hold.
    pub when: Vec<String>,
    /// How far past its line the scan is [default: 1].
    #[serde(default = "one")]
    pub score: String,
}

fn one() -> String {
    "1".to_owned()
}

/// The definitions `specs` give, their names registered; the first problem otherwise.
pub fn definitions(specs: &[ScanSpec]) -> Result<Vec<Definition>, String> {
    let mut out: Vec<Definition> = Vec::with_capacity(specs.len());
    for spec in specs {
        let scan = Scan::register(&spec.name).map_err(|e| e.to_string())?;
        if out.iter().any(|d| d.scan == scan) {
            return Err(format!("scan {} is defined twice", spec.name));
        }
        if spec.when.is_empty() {
            return Err(format!(
                "scan {}: `when` needs at least one condition",
                spec.name
            ));
        }
        out.push(Definition {
            scan,
            when: spec.when.clone(),
            score: spec.score.clone(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ConfigError, Overrides};

    const GOOD: &str = r#"
[[scans]]
name  = "cfg_oversold_bounce"
when  = ["rsi(14) < 35", "close > bb_lower(20, 2)", "volume_ratio(20) >= 1.5"]
score = "(35 - rsi(14)) / 5 + volume_ratio(20)"

[[scans]]
name = "cfg_macd_turn"
when = ["crosses_above(macd(12, 26, 9), macd_signal(12, 26, 9))"]
"#;

    #[test]
    fn scans_in_the_file_run_after_the_built_in_ones() {
        let config = Config::from_text(GOOD).unwrap();
        let set = config.scan_set().unwrap();
        let names: Vec<&str> = set.scans().map(|s| s.name()).collect();
        assert_eq!(names.len(), 10);
        assert_eq!(names[..2], ["price_change", "volume_spike"]);
        assert_eq!(names[8..], ["cfg_oversold_bounce", "cfg_macd_turn"]);
        assert_eq!(set.definitions()[9].score, "1", "score defaults to 1");
    }

    #[test]
    fn a_bad_scan_is_refused_with_its_name_field_and_column() {
        for (text, want) in [
            (
                "[[scans]]\nname = \"cfg_bad\"\nwhen = [\"rsi(14) < 35\", \"close > bb_lowr(20, 2)\"]\n",
                "scan cfg_bad, when[1], col 9: unknown indicator bb_lowr (did you mean bb_lower?)",
            ),
            (
                "[[scans]]\nname = \"cfg_bad2\"\nwhen = [\"rsi(14) < 35\"]\nscore = \"rsi(14) > 2\"\n",
                "scan cfg_bad2, score, col 1: expected a number, found a condition",
            ),
            (
                "[[scans]]\nname = \"new_high\"\nwhen = [\"close > 1\"]\n",
                "scan name \"new_high\" is a built-in scan's",
            ),
            (
                "[[scans]]\nname = \"Bad Name\"\nwhen = [\"close > 1\"]\n",
                "scan name \"Bad Name\": use 1 to 32 lower-case letters",
            ),
            (
                "[[scans]]\nname = \"cfg_twice\"\nwhen = [\"close > 1\"]\n\
                 [[scans]]\nname = \"cfg_twice\"\nwhen = [\"close > 2\"]\n",
                "scan cfg_twice is defined twice",
            ),
            (
                "[[scans]]\nname = \"cfg_empty\"\nwhen = []\n",
                "scan cfg_empty: `when` needs at least one condition",
            ),
            (
                "[[scans]]\nname = \"cfg_typo\"\nwen = [\"close > 1\"]\n",
                "unknown field `wen`",
            ),
            ("sma_fast = 1\n", "setting `sma_fast`: must be 2 to 5000"),
        ] {
            let err = Config::from_text(text).unwrap_err();
            assert!(err.contains(want), "{text}\n{err}");
        }
    }

    #[test]
    fn a_bad_scan_in_a_file_names_the_file() {
        let path = std::env::temp_dir().join(format!("scans-{}.toml", std::process::id()));
        std::fs::write(
            &path,
            "[[scans]]\nname = \"cfg_in_file\"\nwhen = [\"clse > 1\"]\n",
        )
        .unwrap();
        let err = Config::load(Some(&path), Overrides::default()).unwrap_err();
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(err, ConfigError::Parse { .. }), "{err:?}");
        let message = err.to_string();
        assert!(message.starts_with("config file "), "{message}");
        assert!(
            message.ends_with(
                "scan cfg_in_file, when[0], col 1: unknown indicator clse (did you mean close?)"
            ),
            "{message}"
        );
    }
}
