//! `peer-tokio`: scanstream's benchmark firehose on tokio + tokio-tungstenite +
//! `tokio::sync::broadcast`, the baseline the performance figures compare against.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use peer_tokio::{Config, serve};

/// Streams synthetic scan results, shaped like scanstream's `firehose:RATE`, to every
/// WebSocket client that sends a `subscribe` message.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to listen on (port 0 picks a free one; the bound address is printed).
    #[arg(long, default_value = "127.0.0.1:8081")]
    listen: SocketAddr,
    /// Results per second; 0 produces nothing.
    #[arg(long, default_value_t = 1000)]
    rate: u32,
    /// tokio worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Broadcast channel capacity: results a connection may fall behind before it
    /// loses some.
    #[arg(long, default_value_t = 4096)]
    capacity: usize,
    /// WebSocket path; an empty value accepts any path.
    #[arg(long, default_value = "/stream")]
    path: String,
    /// Write already-queued results with feed and a single flush instead of one send
    /// each.
    #[arg(long)]
    batch: bool,
    /// Seconds between pings to each connection.
    #[arg(long, default_value_t = 25)]
    ping_secs: u64,
    /// Seconds between counter lines on stderr; 0 prints none.
    #[arg(long, default_value_t = 10)]
    report_secs: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("peer-tokio: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let config = Config {
        rate: args.rate,
        capacity: args.capacity,
        path: args.path,
        batch: args.batch,
        ping_interval: Duration::from_secs(args.ping_secs.max(1)),
        report_interval: (args.report_secs > 0).then(|| Duration::from_secs(args.report_secs)),
    };
    let threads = args.threads.max(1);
    let listen = args.listen;
    // Spawned rather than run by block_on, so the accept loop too runs on the worker
    // threads and `--threads 1` means one thread does all the work.
    let served = runtime.block_on(async move {
        tokio::spawn(async move {
            let listener = tokio::net::TcpListener::bind(listen).await?;
            let addr = listener.local_addr()?;
            eprintln!(
                "peer-tokio listening on ws://{addr}{} rate={} threads={threads} capacity={}",
                config.path, config.rate, config.capacity
            );
            let stats = serve(listener, config, stop_signal()).await;
            eprintln!("peer-tokio: stopped: {}", stats.summary());
            Ok::<_, std::io::Error>(())
        })
        .await
    });
    match served {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("peer-tokio: {listen}: {e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("peer-tokio: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Completes on SIGINT or SIGTERM.
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
