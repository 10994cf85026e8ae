//! The `scanstream` binary: flags and config file in, server run, exit code out;
//! `scanstream client`, a live view of a server's stream; and `scanstream check-config`.

mod check_config;
mod client_cli;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use scanstream::{Config, Overrides, Server, ShutdownHandle, TlsReload};
use tracing_subscriber::EnvFilter;

/// A real-time market scanner that streams its results over WebSocket.
#[derive(Debug, Parser)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// TOML config file; flags given here win over it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    settings: Overrides,
}

// One value per process: the client's many flags make it large, and that costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Connect to a server and show its results live (reconnects and resumes by itself).
    Client(client_cli::ClientArgs),
    /// Check a config file and print the scans and alert rules it would run (exit 1 on an
    /// error).
    CheckConfig(check_config::CheckArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Some(Command::Client(args)) => client_cli::run(args),
        Some(Command::CheckConfig(args)) => check_config::run(args),
        None => run(cli),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("scanstream: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::load(cli.config.as_deref(), cli.settings)?;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log))
        .map_err(|e| format!("log filter `{}`: {e}", config.log))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let server = Server::bind(config)?;
    watch_signals(server.shutdown_handle(), server.tls_reload())?;
    server.run()?;
    Ok(())
}

/// SIGINT and SIGTERM start a graceful shutdown; a second one ends the process at once.
/// SIGHUP reads the TLS certificate and key again.
fn watch_signals(handle: ShutdownHandle, tls: Option<TlsReload>) -> std::io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut seen = 0;
            for signal in signals.forever() {
                if signal == SIGHUP {
                    match &tls {
                        Some(tls) => tls.reload(),
                        None => tracing::info!("SIGHUP: no TLS certificate to reload"),
                    }
                    continue;
                }
                seen += 1;
                if seen > 1 {
                    std::process::exit(128 + signal);
                }
                tracing::info!(signal, "signal received");
                handle.shutdown();
            }
        })?;
    Ok(())
}
