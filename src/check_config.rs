//! `scanstream check-config FILE`: loads a config file as the server would and prints the
//! scans and alert rules it would run; exit status 1 on any error, for CI pipelines.

use std::io::{self, Write};
use std::path::PathBuf;

use clap::Args;
use scanstream::{Config, Overrides};

/// Checks a config file and prints the scans and rules it would run.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The TOML config file.
    file: PathBuf,
}

/// Prints what `args.file` would run, or fails with the first problem in it.
pub fn run(args: CheckArgs) -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::load(Some(&args.file), Overrides::default())?;
    config
        .rule_set()
        .map_err(|e| format!("config file {}: {e}", args.file.display()))?;
    let set = config.scan_set()?;
    let mut out = io::stdout().lock();
    writeln!(out, "{}: ok", args.file.display())?;
    writeln!(out, "scans ({}):", set.len())?;
    for def in set.definitions() {
        let origin = if def.scan.is_custom() {
            ""
        } else {
            " (built in)"
        };
        writeln!(out, "  {}{origin}", def.scan)?;
        for when in &def.when {
            writeln!(out, "    when  {when}")?;
        }
        writeln!(out, "    score {}", def.score)?;
    }
    writeln!(out, "alert rules ({}):", config.rules.len())?;
    for rule in &config.rules {
        let when = if rule.when.is_empty() {
            String::new()
        } else {
            format!(" when {}", rule.when.join(" and "))
        };
        writeln!(
            out,
            "  {} ({}, {}){when}",
            rule.name,
            rule.kind.name(),
            rule.severity.name()
        )?;
    }
    Ok(())
}
