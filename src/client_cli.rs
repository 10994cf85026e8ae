//! `scanstream client`: a live view of a server's results, built on the client library.

use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::{Args, ValueEnum};
use scanstream::client::{
    Client, ClientConfig, Event, ResultMessage, State, SubscriptionOptions, Trust,
};
use scanstream::protocol::FilterSpec;
use serde_json::{Value, json};

/// Connects to a server, subscribes, and shows what it streams.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// Server stream URL: ws://, or wss:// for TLS.
    #[arg(long, default_value = "ws://127.0.0.1:8080/stream")]
    url: String,
    /// With wss://, trust only the CA certificates in this PEM file (a private CA or a
    /// self-signed server) instead of the system's trust roots.
    #[arg(long, value_name = "PEM")]
    ca_file: Option<PathBuf>,
    /// With wss://, accept any certificate for any name: encrypted but not verified, so
    /// anyone on the path can read the stream. For a throwaway test certificate only.
    #[arg(long, conflicts_with = "ca_file")]
    insecure_skip_verify: bool,
    /// Bearer token, when the server requires one.
    #[arg(long, env = "SCANSTREAM_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Subscription name.
    #[arg(long, default_value = "default")]
    subscription: String,
    /// Only these symbols (comma-separated).
    #[arg(long, value_delimiter = ',')]
    symbols: Option<Vec<String>>,
    /// Only these scans (comma-separated), e.g. price_change,volume_spike.
    #[arg(long, value_delimiter = ',')]
    scans: Option<Vec<String>>,
    /// Only results with score at least this.
    #[arg(long)]
    min_score: Option<f64>,
    /// Only results priced at least this.
    #[arg(long)]
    min_price: Option<f64>,
    /// Only results priced at most this.
    #[arg(long)]
    max_price: Option<f64>,
    /// Only results whose |change_pct| is at least this.
    #[arg(long)]
    min_abs_change_pct: Option<f64>,
    /// Only results whose volume ratio is at least this.
    #[arg(long)]
    min_volume_ratio: Option<f64>,
    /// Start live, without the snapshot of open opportunities.
    #[arg(long)]
    no_snapshot: bool,
    /// Send an ad-hoc scan of these symbols (comma-separated).
    #[arg(long, value_delimiter = ',', value_name = "SYMBOLS")]
    scan: Option<Vec<String>>,
    /// Acknowledge this alert.
    #[arg(long, value_name = "ALERT_ID")]
    ack: Vec<String>,
    /// One JSON object per line instead of the readable view.
    #[arg(long)]
    json: bool,
    /// Colour in the readable view.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
    color: ColorChoice,
}

/// When to colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ColorChoice {
    /// On a terminal, unless NO_COLOR is set.
    Auto,
    Always,
    Never,
}

/// Runs the client until Ctrl-C, a closed stdout, or a server that says not to return.
pub fn run(args: ClientArgs) -> Result<(), Box<dyn std::error::Error>> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))?;
    }
    let filters = FilterSpec {
        symbols: args.symbols.clone(),
        scans: args.scans.clone(),
        min_score: args.min_score,
        min_price: args.min_price,
        max_price: args.max_price,
        min_abs_change_pct: args.min_abs_change_pct,
        min_volume_ratio: args.min_volume_ratio,
    };
    let mut config = ClientConfig::new(args.url.clone());
    config.token = args.token.clone();
    config.trust = match (&args.ca_file, args.insecure_skip_verify) {
        (_, true) => Trust::InsecureSkipVerify,
        (Some(path), false) => Trust::CaFile(path.clone()),
        (None, false) => Trust::System,
    };
    config.events = Some(4096);
    let client = Client::start(config)?;
    client.subscribe(
        &args.subscription,
        filters,
        SubscriptionOptions {
            table: !args.no_snapshot,
            callback: None,
        },
    )?;
    if let Some(symbols) = &args.scan {
        client.scan(symbols)?;
    }
    for id in &args.ack {
        client.ack(id)?;
    }

    let color = match args.color {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
    };
    let mut view = View {
        out: io::stdout().lock(),
        json: args.json,
        color,
        url: args.url.clone(),
        header_due: true,
    };
    let events = client.events().cloned().ok_or("no events channel")?;
    let mut ended = None;
    while !stop.load(Ordering::Relaxed) {
        let ev = match events.recv_timeout(Duration::from_millis(100)) {
            Ok(ev) => ev,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => continue,
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
        };
        if let Event::State(State::Closed { code, reason }) = &ev {
            ended = Some((*code, reason.clone()));
        }
        match view.show(&ev) {
            Ok(()) => {}
            // A reader that went away (`| head`) is a normal end.
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => break,
            Err(e) => return Err(e.into()),
        }
        if ended.is_some() {
            break;
        }
    }
    client.close();
    match ended {
        Some((Some(code), reason)) => {
            Err(format!("server closed the stream ({code} {reason})").into())
        }
        // The client gave up by itself (a refused upgrade, a certificate it does not
        // trust): the caller closes only after the loop.
        Some((None, reason)) => Err(reason.into()),
        None => Ok(()),
    }
}

struct View<W: Write> {
    out: W,
    json: bool,
    color: bool,
    url: String,
    header_due: bool,
}

const COLUMNS: &str = "time           seq      event   symbol    scan              score      price   change   vol x     rsi";

impl<W: Write> View<W> {
    fn show(&mut self, ev: &Event) -> io::Result<()> {
        if self.json {
            return self.json_line(ev);
        }
        match ev {
            Event::Result(r) => {
                self.header()?;
                // Dropped out of the filters: the row leaves this view.
                let left = r.subscriptions.is_empty() && !r.left.is_empty();
                self.row(r, left.then_some("left"))?;
            }
            Event::Snapshot { seq, results, .. } => {
                let line = format!("snapshot: {} open as of #{seq}", results.len());
                self.note(&line, "36")?;
                self.header()?;
                for r in results {
                    self.row(r, Some("open"))?;
                }
            }
            Event::State(state) => {
                let line = match state {
                    State::Connecting => format!("connecting to {}", self.url),
                    State::Connected => format!("connected to {}", self.url),
                    State::Reconnecting { attempt, delay } => format!(
                        "reconnecting in {:.2} s (attempt {attempt})",
                        delay.as_secs_f64()
                    ),
                    State::Closed {
                        code: Some(code),
                        reason,
                    } => format!("closed: {code} {reason}"),
                    State::Closed { code: None, reason } => format!("closed: {reason}"),
                };
                self.note(&line, "36")?;
            }
            Event::Disconnected { code, reason } => {
                self.note(&format!("disconnected: {code} {reason}"), "33")?;
            }
            Event::Gap {
                subscription,
                since,
                epoch,
                server_epoch,
            } => {
                let why = if epoch == server_epoch {
                    "the server's history no longer reaches back"
                } else {
                    "the server restarted"
                };
                let line =
                    format!("gap on {subscription}: results after #{since} may be lost ({why})");
                self.note(&line, "31")?;
            }
            Event::Subscribed(s) if s.recovered && s.replayed > 0 => {
                let line = format!("{}: resumed, {} replayed", s.subscription, s.replayed);
                self.note(&line, "36")?;
            }
            Event::Alert(a) => {
                let line = format!(
                    "ALERT {} [{}] {} {}",
                    text(&a["alert_id"]),
                    text(&a["severity"]),
                    text(&a["symbol"]),
                    text(&a["message"])
                );
                self.note(&line, "35")?;
            }
            Event::Acked(a) => {
                self.note(&format!("acknowledged {}", text(&a["alert_id"])), "36")?
            }
            Event::Reply { kind, data, .. } => {
                let line = match kind.as_str() {
                    "status" => format!("scan {}: {}", text(&data["phase"]), compact(data)),
                    _ => format!("{kind}: {}", compact(data)),
                };
                self.note(&line, "36")?;
            }
            Event::Error { code, message, .. } => {
                self.note(&format!("error {code}: {message}"), "31")?;
            }
            _ => {}
        }
        self.out.flush()
    }

    fn header(&mut self) -> io::Result<()> {
        if std::mem::take(&mut self.header_due) {
            let line = if self.color {
                format!("\x1b[1m{COLUMNS}\x1b[0m")
            } else {
                COLUMNS.to_owned()
            };
            writeln!(self.out, "{line}")?;
        }
        Ok(())
    }

    fn row(&mut self, r: &ResultMessage, event: Option<&str>) -> io::Result<()> {
        let event = event.unwrap_or(match r.event {
            scanstream::EventKind::New => "new",
            scanstream::EventKind::Update => "update",
            scanstream::EventKind::Clear => "clear",
        });
        // RFC 3339: the time of day is what a live view needs. Snapshot rows carry no
        // envelope timestamp; their source's time stands in when there is one.
        let stamp = if r.timestamp.is_empty() {
            r.source_ts.as_deref().unwrap_or_default()
        } else {
            &r.timestamp
        };
        let time = stamp.get(11..23).unwrap_or("-");
        let rsi = r.rsi.map_or("-".to_owned(), |v| format!("{v:.1}"));
        let line = format!(
            "{time:<14} {:<8} {event:<7} {:<9} {:<16} {:>6.2} {:>10.2} {:>+7.2}% {:>6.2} {:>7}{}",
            r.seq,
            r.symbol,
            r.scan,
            r.score,
            r.price,
            r.change_pct,
            r.volume_ratio,
            rsi,
            if r.adhoc { "  ad-hoc" } else { "" },
        );
        if self.color {
            let code = match event {
                "new" | "open" => "32",
                "update" => "33",
                _ => "2",
            };
            writeln!(self.out, "\x1b[{code}m{line}\x1b[0m")
        } else {
            writeln!(self.out, "{line}")
        }
    }

    /// A line about the connection rather than a result.
    fn note(&mut self, line: &str, color: &str) -> io::Result<()> {
        self.header_due = true;
        if self.color {
            writeln!(self.out, "\x1b[{color}m-- {line}\x1b[0m")
        } else {
            writeln!(self.out, "-- {line}")
        }
    }

    fn json_line(&mut self, ev: &Event) -> io::Result<()> {
        let (kind, data, id, timestamp): (&str, Data<'_>, Option<u64>, Option<&str>) = match ev {
            Event::Result(r) => ("result", Data::Result(r), None, Some(&r.timestamp)),
            Event::Snapshot {
                subscription,
                seq,
                results,
            } => (
                "snapshot",
                Data::Snapshot {
                    subscription,
                    seq: *seq,
                    results,
                },
                None,
                None,
            ),
            Event::State(state) => ("state", Data::Value(state_json(state)), None, None),
            Event::Disconnected { code, reason } => (
                "disconnected",
                Data::Value(json!({"code": code, "reason": reason})),
                None,
                None,
            ),
            Event::Gap {
                subscription,
                since,
                epoch,
                server_epoch,
            } => (
                "gap",
                Data::Value(
                    json!({"subscription": subscription, "since": since, "epoch": epoch,
                    "server_epoch": server_epoch}),
                ),
                None,
                None,
            ),
            Event::Subscribed(s) => (
                "subscribed",
                Data::Value(
                    json!({"subscription": s.subscription, "epoch": s.epoch, "seq": s.seq,
                    "recovered": s.recovered, "replayed": s.replayed}),
                ),
                None,
                None,
            ),
            Event::Unsubscribed { subscription } => (
                "unsubscribed",
                Data::Value(json!({"subscription": subscription})),
                None,
                None,
            ),
            Event::Status(d) => ("status", Data::Value(d.clone()), None, None),
            Event::Alert(d) => ("alert", Data::Value(d.clone()), None, None),
            Event::Acked(d) => ("acked", Data::Value(d.clone()), None, None),
            Event::Reply { id, kind, data } => {
                (kind.as_str(), Data::Value(data.clone()), Some(*id), None)
            }
            Event::Error {
                code,
                message,
                id,
                subscription,
            } => (
                "error",
                Data::Value(
                    json!({"code": code, "message": message, "subscription": subscription}),
                ),
                *id,
                None,
            ),
        };
        // The protocol's envelope order: type, timestamp, data, id.
        let line = Line {
            kind,
            timestamp,
            data,
            id,
        };
        serde_json::to_writer(&mut self.out, &line)?;
        writeln!(self.out)?;
        self.out.flush()
    }
}

/// One `--json` line.
#[derive(serde::Serialize)]
struct Line<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    timestamp: Option<&'a str>,
    data: Data<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<u64>,
}

/// A line's `data`: results in the protocol's field order, other messages as given.
#[derive(serde::Serialize)]
#[serde(untagged)]
enum Data<'a> {
    Result(&'a ResultMessage),
    Snapshot {
        subscription: &'a str,
        seq: u64,
        results: &'a [ResultMessage],
    },
    Value(Value),
}

fn state_json(state: &State) -> Value {
    match state {
        State::Connecting => json!({"state": "connecting"}),
        State::Connected => json!({"state": "connected"}),
        State::Reconnecting { attempt, delay } => json!({
            "state": "reconnecting", "attempt": attempt, "delay_ms": delay.as_millis() as u64}),
        State::Closed { code, reason } => {
            json!({"state": "closed", "code": code, "reason": reason})
        }
    }
}

/// A JSON value as text, strings without quotes.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// A status reply in a few words.
fn compact(v: &Value) -> String {
    let mut parts = Vec::new();
    for key in ["symbols", "results", "adhoc_queue", "state"] {
        if let Some(x) = v.get(key) {
            parts.push(format!("{key} {}", text(x)));
        }
    }
    if parts.is_empty() {
        v.to_string()
    } else {
        parts.join(", ")
    }
}
