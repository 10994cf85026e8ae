//! `loadgen`: opens N WebSocket connections to a scanstream-compatible server, subscribes,
//! reads, and reports throughput, end-to-end latency, fairness, `seq` losses, disconnects
//! and the server's CPU and memory over a measured window. See README.md beside Cargo.toml.
//! `--soak` runs the soak driver instead (`loadgen::soak`, described in perf/README.md).

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use loadgen::engine::{Churn, Config, Engine, TableCheckConfig};
use loadgen::tls::{Tls, Trust};
use loadgen::{selftest, soak, sys};

const DEFAULT_SUBSCRIBE: &str = r#"{"type":"subscribe","data":{"subscription":"default"}}"#;

/// Self-test pass mark: what the load generator must sustain on one core.
const SELFTEST_TARGET: f64 = 2_000_000.0;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "WebSocket load generator for scanstream and its peers"
)]
struct Args {
    /// Server URL: ws://, or wss:// with --ca-file or --insecure
    #[arg(long, default_value = "ws://127.0.0.1:8080/stream")]
    url: String,
    /// wss://: believe the CA certificates in this PEM file (a self-signed server
    /// certificate is its own CA); the certificate must name the URL's host
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// wss://: believe any server certificate (encrypted, not verified; for a throwaway
    /// test certificate)
    #[arg(long, alias = "insecure-skip-verify", conflicts_with = "ca_file")]
    insecure: bool,
    /// host:port to connect to, overriding the URL's
    #[arg(long)]
    addr: Option<String>,
    /// Request path (and query), overriding the URL's
    #[arg(long)]
    path: Option<String>,
    /// Connections to open [default: 100; 4 with --selftest; 1000 with --soak]
    #[arg(long)]
    clients: Option<usize>,
    /// Connections opened per second
    #[arg(long, default_value_t = 2000.0)]
    ramp: f64,
    /// Text message sent once connected
    #[arg(long, default_value = DEFAULT_SUBSCRIBE)]
    subscribe: String,
    /// Send nothing after the handshake (idle connections; pings are still answered)
    #[arg(long)]
    idle: bool,
    /// Seconds between the end of the ramp and the start of the measured window; with
    /// --soak, seconds from the start before RSS samples count [default: 2; with --soak a
    /// third of --duration]
    #[arg(long)]
    warmup: Option<f64>,
    /// Length of the measured window, in seconds; with --soak, of the whole run
    /// [default: 10; 1800 with --soak]
    #[arg(long)]
    duration: Option<f64>,
    /// Handshake deadline per connection, in seconds
    #[arg(long, default_value_t = 10.0)]
    connect_timeout: f64,
    /// Server process to sample CPU time and RSS of
    #[arg(long)]
    server_pid: Option<u32>,
    /// Largest frame payload accepted, in bytes
    #[arg(long, default_value_t = 16 << 20)]
    max_frame: usize,
    /// Print only the JSON line
    #[arg(long)]
    json: bool,
    /// Measure the load generator's own ceiling against an in-process sender
    #[arg(long)]
    selftest: bool,
    /// Self-test: frames per write of the sender [default: as many as fit in 64 KiB]
    #[arg(long, default_value_t = 0, hide_default_value = true)]
    selftest_frames: usize,
    /// Churn: each client connects, subscribes, leaves once `subscribed` arrives, and
    /// starts over; measures cycles per second and failed cycles
    #[arg(long)]
    churn: bool,
    /// Churn: seconds from connect to `subscribed` before a cycle counts as failed
    #[arg(long, default_value_t = 5.0)]
    cycle_timeout: f64,
    /// Churn: how a client leaves. `wait`: close frame, then wait for the server to close
    /// the TCP connection (RFC 6455 7.1.1, the server holds TIME_WAIT). `reset`: close
    /// frame, then an immediate reset (SO_LINGER 0)
    #[arg(long, default_value = "wait", value_parser = ["wait", "reset"])]
    churn_close: String,
    /// Churn: seconds to wait for the server to close after our close frame
    #[arg(long, default_value_t = 1.0)]
    close_wait: f64,
    /// Keep each connection's table (symbol, scan) from a first snapshot and the results
    /// after it; after the window, compare it with a fresh snapshot of a second
    /// subscription with the same filters. Adds `"snapshot": true` to the subscribe
    #[arg(long)]
    check_table: bool,
    /// Table check: how many connections keep a table (the first to open); 0 for all
    #[arg(long, default_value_t = 0)]
    check_sample: usize,
    /// Table check: seconds to wait after the window for the fresh snapshots
    #[arg(long, default_value_t = 10.0)]
    check_timeout: f64,
    /// Soak: clients subscribe with empty filters, then at random disconnect and resume,
    /// unsubscribe and subscribe again, scan, ack and ping; checks every result's `seq`,
    /// every reply and the server's RSS, and exits 1 unless all is well
    #[arg(long)]
    soak: bool,
    /// Soak: seed of the clients' random choices
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Soak: process whose RSS is sampled (the server) [default: --server-pid]
    #[arg(long)]
    rss_pid: Option<u32>,
    /// Soak: mean seconds between RSS samples (each interval 0.5 to 1.5 times it)
    #[arg(long, default_value_t = 1.0)]
    rss_every: f64,
    /// Soak: the RSS rule's allowance, in percent of the first third's median
    #[arg(long, default_value_t = soak::DEFAULT_RSS_GROWTH_PCT)]
    rss_growth_pct: u64,
    /// Soak: the RSS rule's allowance, in KiB on top of the percentage
    #[arg(long, default_value_t = soak::DEFAULT_RSS_SLACK_KIB)]
    rss_slack_kib: u64,
    /// Soak: write the RSS curve (t_s,rss_kib) to this CSV file
    #[arg(long)]
    rss_csv: Option<std::path::PathBuf>,
    /// Soak: fewest seconds between two actions of one client
    #[arg(long, default_value_t = 1.0)]
    act_min: f64,
    /// Soak: most seconds between two actions of one client
    #[arg(long, default_value_t = 10.0)]
    act_max: f64,
    /// Soak: fewest seconds from a disconnect to the reconnect
    #[arg(long, default_value_t = 0.1)]
    reconnect_min: f64,
    /// Soak: most seconds from a disconnect to the reconnect
    #[arg(long, default_value_t = 3.0)]
    reconnect_max: f64,
    /// Soak: seconds a request may wait for its reply
    #[arg(long, default_value_t = 10.0)]
    reply_timeout: f64,
    /// Soak: seconds the server gets to close the connection after our close frame
    #[arg(long, default_value_t = 5.0)]
    close_timeout: f64,
    /// Soak: seconds between progress lines on stderr (0: none; none with --json)
    #[arg(long, default_value_t = 10.0)]
    progress_every: f64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}

fn secs(v: f64, what: &str) -> Result<Duration, String> {
    Duration::try_from_secs_f64(v).map_err(|_| format!("--{what} must be a number of seconds >= 0"))
}

fn run(args: &Args) -> Result<(), String> {
    if args.ramp.is_nan() || args.ramp <= 0.0 {
        return Err("--ramp must be above 0".into());
    }
    if args.soak {
        return run_soak(args);
    }
    let nofile = sys::raise_nofile();
    let mut cfg = Config {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        tls: None,
        host: String::new(),
        path: String::new(),
        clients: args.clients.unwrap_or(if args.selftest { 4 } else { 100 }),
        ramp: args.ramp,
        subscribe: (!args.idle && !args.subscribe.is_empty())
            .then(|| args.subscribe.as_bytes().to_vec()),
        warmup: secs(args.warmup.unwrap_or(2.0), "warmup")?,
        duration: secs(args.duration.unwrap_or(10.0), "duration")?,
        connect_timeout: secs(args.connect_timeout, "connect-timeout")?,
        server_pid: args.server_pid,
        max_frame: args.max_frame,
        churn: None,
        check: None,
    };
    if args.check_table {
        if args.churn || args.selftest || cfg.subscribe.is_none() {
            return Err(
                "--check-table needs a subscribe message (no --idle, empty --subscribe, --churn or --selftest)"
                    .into(),
            );
        }
        cfg.check = Some(TableCheckConfig::from_subscribe(
            &args.subscribe,
            args.check_sample,
            secs(args.check_timeout, "check-timeout")?,
        )?);
    }
    if args.churn {
        if args.selftest {
            return Err("--churn and --selftest do not go together".into());
        }
        if cfg.subscribe.is_none() {
            return Err(
                "--churn needs a subscribe message (no --idle, no empty --subscribe)".into(),
            );
        }
        cfg.churn = Some(Churn {
            cycle_timeout: secs(args.cycle_timeout, "cycle-timeout")?,
            close_wait: secs(args.close_wait, "close-wait")?,
            reset: args.churn_close == "reset",
        });
    }
    let mut notes = Vec::new();
    let url;
    if args.selftest {
        // Receiver (this thread) on the last allowed CPU, sender on the first; when only
        // one is allowed they share it, and the note says so.
        let cpus = sys::allowed_cpus();
        let recv = cpus.last().copied();
        let send = cpus.first().copied().filter(|&c| Some(c) != recv);
        if let Some(cpu) = recv {
            sys::pin_to(cpu);
        }
        let (addr, frame_len, per_write) =
            selftest::start_sender(cfg.clients, args.selftest_frames, send)
                .map_err(|e| format!("self-test sender: {e}"))?;
        notes.push(format!(
            "self-test: receiver pinned to CPU {}, sender {}; {}-byte result frames, {} per write",
            recv.map_or("?".into(), |c| c.to_string()),
            send.map_or_else(|| "shares it".to_string(), |c| format!("on CPU {c}")),
            frame_len,
            per_write
        ));
        cfg.addr = addr;
        cfg.host = addr.to_string();
        cfg.path = "/stream".into();
        url = format!("ws://{addr}/stream (self-test)");
    } else {
        let t = target(args)?;
        (cfg.addr, cfg.tls, cfg.host, cfg.path) = (t.addr, t.tls, t.host, t.path);
        url = t.url;
    }
    if nofile > 0 && (cfg.clients as u64) + 16 > nofile {
        notes.push(format!(
            "open-file limit {nofile} is below {} clients: expect 'Too many open files'; raise it with ulimit -n",
            cfg.clients
        ));
    }
    if !args.json {
        for n in &notes {
            eprintln!("loadgen: {n}");
        }
    }
    let report = Engine::new(cfg.clone())
        .map_err(|e| format!("cannot create the poller: {e}"))?
        .run(!args.json)
        .map_err(|e| format!("poll failed: {e}"))?;
    if !args.json {
        print!("{}", report.table(&url));
    }
    if let Some(ex) = report.table_check.as_ref().and_then(|t| t.example.as_ref()) {
        eprintln!("loadgen: table check: {ex}");
    }
    println!("{}", report.json_line(&url, args.selftest));
    if report.connected == 0 {
        return Err("no connection was opened".into());
    }
    if report
        .table_check
        .as_ref()
        .is_some_and(|t| t.verdict() == "fail")
    {
        return Err("the table check failed".into());
    }
    if report.churn.as_ref().is_some_and(|c| c.cycles_total == 0) {
        return Err("no churn cycle completed".into());
    }
    if args.selftest && !args.json {
        println!("{}", report.selftest_line(SELFTEST_TARGET));
    }
    Ok(())
}

/// `--soak`: runs the soak driver, prints its table (unless --json) and its JSON line,
/// writes the RSS curve when asked; an error when the verdict is a failure.
fn run_soak(args: &Args) -> Result<(), String> {
    if args.selftest || args.churn || args.idle || args.check_table {
        return Err("--soak does not go with --selftest, --churn, --idle or --check-table".into());
    }
    let nofile = sys::raise_nofile();
    let t = target(args)?;
    let mut cfg = soak::SoakConfig::new(t.addr);
    (cfg.tls, cfg.host, cfg.path) = (t.tls, t.host, t.path);
    cfg.clients = args.clients.unwrap_or(1000);
    let duration = args.duration.unwrap_or(1800.0);
    cfg.duration = secs(duration, "duration")?;
    cfg.warmup = secs(args.warmup.unwrap_or(duration / 3.0), "warmup")?;
    cfg.seed = args.seed;
    cfg.rss_pid = args.rss_pid.or(args.server_pid);
    cfg.rss_every = secs(args.rss_every, "rss-every")?;
    cfg.rss_growth_pct = args.rss_growth_pct;
    cfg.rss_slack_kib = args.rss_slack_kib;
    cfg.act_min = secs(args.act_min, "act-min")?;
    cfg.act_max = secs(args.act_max, "act-max")?;
    cfg.reconnect_min = secs(args.reconnect_min, "reconnect-min")?;
    cfg.reconnect_max = secs(args.reconnect_max, "reconnect-max")?;
    cfg.ramp = args.ramp;
    cfg.reply_timeout = secs(args.reply_timeout, "reply-timeout")?;
    cfg.connect_timeout = secs(args.connect_timeout, "connect-timeout")?;
    cfg.close_timeout = secs(args.close_timeout, "close-timeout")?;
    cfg.progress_every = (!args.json && args.progress_every > 0.0)
        .then(|| secs(args.progress_every, "progress-every"))
        .transpose()?;
    if nofile > 0 && (cfg.clients as u64) + 16 > nofile && !args.json {
        eprintln!(
            "loadgen: open-file limit {nofile} is below {} clients: expect 'Too many open files'; raise it with ulimit -n",
            cfg.clients
        );
    }
    let report = soak::run(cfg).map_err(|e| format!("soak: {e}"))?;
    if let Some(path) = &args.rss_csv {
        std::fs::write(path, report.rss_csv())
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if !args.json {
        print!("{}", report.table());
    }
    println!("{}", report.json());
    let failures = report.failures();
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!("soak failed: {}", failures.join("; ")))
    }
}

/// Where the connections go, from `--url`, `--addr`, `--path` and the trust flags.
struct Target {
    addr: SocketAddr,
    /// `Host` header value.
    host: String,
    /// Request target: path and query.
    path: String,
    tls: Option<Tls>,
    /// The URL as reports print it.
    url: String,
}

fn target(args: &Args) -> Result<Target, String> {
    let u = split_url(&args.url)?;
    let trust = match (u.secure, &args.ca_file, args.insecure) {
        (false, None, false) => None,
        (false, ..) => return Err("--ca-file and --insecure are for wss:// URLs".into()),
        (true, Some(path), _) => Some(Trust::CaFile(path.clone())),
        (true, None, true) => Some(Trust::Insecure),
        (true, None, false) => return Err("wss:// needs --ca-file PEM or --insecure".into()),
    };
    let tls = trust
        .map(|t| Tls::new(host_name(&u.authority), &t))
        .transpose()?;
    let authority = args.addr.clone().unwrap_or(u.authority);
    let path = args.path.clone().unwrap_or(u.path);
    let scheme = if u.secure { "wss" } else { "ws" };
    Ok(Target {
        addr: resolve(&authority, if u.secure { 443 } else { 80 })?,
        url: format!("{scheme}://{authority}{path}"),
        host: authority,
        path,
        tls,
    })
}

/// A `ws://` or `wss://` URL taken apart.
#[derive(Debug, PartialEq, Eq)]
struct Url {
    /// `wss://`: TLS.
    secure: bool,
    /// `host[:port]`.
    authority: String,
    /// Path and query.
    path: String,
}

/// `ws://host[:port]/path?query` (or `wss://`) into scheme, authority and request target.
fn split_url(url: &str) -> Result<Url, String> {
    let (secure, rest) = if let Some(r) = url.strip_prefix("ws://") {
        (false, r)
    } else if let Some(r) = url.strip_prefix("wss://") {
        (true, r)
    } else {
        return Err(format!("URL must start with ws:// or wss://, got `{url}`"));
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_string()),
    };
    if authority.is_empty() {
        return Err(format!("no host in `{url}`"));
    }
    Ok(Url {
        secure,
        authority: authority.to_string(),
        path,
    })
}

/// The host of an authority, without its port or an IPv6 literal's brackets: the name
/// a server certificate must carry.
fn host_name(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split_once(']').map_or(rest, |(h, _)| h);
    }
    authority.rsplit_once(':').map_or(authority, |(h, _)| h)
}

fn resolve(authority: &str, default_port: u16) -> Result<SocketAddr, String> {
    // A port is needed to resolve; `]` ends an IPv6 literal.
    let has_port = authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| !p.contains(']') && !p.is_empty());
    let with_port = if has_port {
        authority.to_string()
    } else {
        format!("{authority}:{default_port}")
    };
    with_port
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve `{authority}`: {e}"))?
        .next()
        .ok_or_else(|| format!("`{authority}` resolves to nothing"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(secure: bool, authority: &str, path: &str) -> Result<Url, String> {
        Ok(Url {
            secure,
            authority: authority.into(),
            path: path.into(),
        })
    }

    #[test]
    fn urls() {
        assert_eq!(
            split_url("ws://127.0.0.1:8080/stream"),
            url(false, "127.0.0.1:8080", "/stream")
        );
        assert_eq!(
            split_url("ws://h:1/stream?token=x"),
            url(false, "h:1", "/stream?token=x")
        );
        assert_eq!(split_url("ws://h:1"), url(false, "h:1", "/"));
        assert_eq!(split_url("ws://h?a=1"), url(false, "h", "/?a=1"));
        assert_eq!(split_url("wss://h:2/s"), url(true, "h:2", "/s"));
        assert!(split_url("http://h/").is_err());
        assert!(split_url("ws:///x").is_err());
        assert!(split_url("wss://").is_err());
        assert_eq!(
            resolve("127.0.0.1:9", 80),
            Ok(SocketAddr::from(([127, 0, 0, 1], 9)))
        );
        assert_eq!(
            resolve("127.0.0.1", 80),
            Ok(SocketAddr::from(([127, 0, 0, 1], 80)))
        );
        assert_eq!(resolve("[::1]", 443).map(|a| a.port()), Ok(443));
        for (authority, host) in [
            ("127.0.0.1:18702", "127.0.0.1"),
            ("localhost", "localhost"),
            ("[::1]:443", "::1"),
            ("[::1]", "::1"),
        ] {
            assert_eq!(host_name(authority), host);
        }
    }

    #[test]
    fn wss_needs_a_trust_and_ws_takes_none() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["loadgen"];
            argv.extend_from_slice(extra);
            target(&Args::parse_from(argv)).map(|t| (t.tls.is_some(), t.url, t.addr.port()))
        };
        assert!(parse(&["--url", "wss://127.0.0.1/s"]).is_err());
        assert!(parse(&["--url", "ws://127.0.0.1/s", "--insecure"]).is_err());
        assert_eq!(
            parse(&["--url", "wss://127.0.0.1/s", "--insecure"]),
            Ok((true, "wss://127.0.0.1/s".into(), 443))
        );
        assert_eq!(
            parse(&["--url", "ws://127.0.0.1:9/s"]),
            Ok((false, "ws://127.0.0.1:9/s".into(), 9))
        );
        assert!(parse(&["--url", "wss://h/", "--ca-file", "/nonexistent.pem"]).is_err());
    }
}
