//! scanstream: a real-time market scanner that streams what it finds.
//!
//! ```text
//!  producer                                  bus                 edge
//!  feed ──bars──▶ scanner thread ──Event (result, status, ...)──▶ reactor thread ──▶ sockets
//!  (sim, csv,     (indicators, scans,  crossbeam + mio::Waker    (slab of connections,
//!   jsonl)         pacing, dedup)  ◀──Command (start, stop, scan)── filters, history, HTTP)
//! ```
//!
//! The scanner thread (the producer) owns the market data: it keeps incremental
//! indicators per symbol, evaluates the scans in paced cycles, turns them into
//! `new`/`update`/`clear` events and publishes each result once, already encoded as JSON.
//! The reactor thread (an edge) owns every socket: it parses HTTP/1.1 with httparse, runs
//! WebSocket connections through tungstenite's state machine, and copies each result into
//! the out buffer of every connection whose filters match, writing each buffer once per
//! loop turn. The two meet only at the bus: events one way, commands the other, and a
//! requester's tag that the producer hands back without reading it. A [`Server`] runs
//! one producer and `--threads` edges, each on a thread of its own, on one port
//! (`SO_REUSEPORT`); every edge gets the same published copy of each result.
//!
//! # Layout
//!
//! - [`alerts`]: rules, throttling, handlers, the alert history and its journal, run by
//!   the producer.
//! - [`bus`]: the seam: `Event` and `Command`, the in-process bus that carries them, and
//!   the Redis Streams bus between processes (bridge threads onto the in-process one).
//! - [`client`]: a client that reconnects by itself and resumes without loss.
//! - [`config`]: settings from defaults, the TOML file and flags.
//! - [`event`]: scan results and their encode-once published form.
//! - [`expr`]: the scan language: conditions and scores over indicators, compiled to
//!   flat programs.
//! - [`protocol`]: client messages, filters, error and close codes (sans-IO).
//! - [`history`]: the resume ring and the active set.
//! - [`metrics`]: each edge's counters and histograms (written by that edge alone, added
//!   up at render), in the Prometheus text format.
//! - [`scanner`]: the scanner thread, the producer; the `Source` trait it runs (the
//!   market scanner or the benchmark firehose); feeds (`sim`, `csv`, `jsonl`),
//!   indicators, scans, dedup.
//! - `reactor`: the server (`server`: the producer and the edges) and what a process's
//!   edges count together (`shared`); an edge: its connections (`conns`), what it
//!   answers from (`app`: history, status, the alert mirror), HTTP, WebSocket, fan-out,
//!   timers.
//! - `timefmt`: RFC 3339 timestamps.
//! - [`tls`]: the rustls settings of both ends: the server's certificate, the client's
//!   trust.

#![warn(missing_docs)]

pub mod alerts;
pub mod bus;
pub mod client;
pub mod config;
mod dur;
pub mod event;
pub mod expr;
pub mod history;
pub mod metrics;
pub mod protocol;
mod reactor;
pub mod scanner;
mod timefmt;
pub mod tls;

/// The fan-out hot path, for the benchmarks in `benches/` (another crate); not an API.
#[doc(hidden)]
pub mod bench_api {
    pub use crate::reactor::broadcast::{Delivery, Subscription, Tail, delivery, write_result};
}

#[doc(hidden)]
pub mod fuzz_api;

pub use config::{Config, ConfigError, Overrides};
pub use event::{EventKind, Scan, ScanEvent, ScanResult};
pub use reactor::{EdgeMaker, Server, ServerError, ShutdownHandle, StatusView, TlsReload};
pub use scanner::{Firehose, Progress, Source, SourceSpec};
pub use timefmt::rfc3339;
