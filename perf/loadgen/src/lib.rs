//! `loadgen` as a library: the WebSocket framing, the message helpers, the /proc readers,
//! the load engine and the soak driver, for the `loadgen` program and for tests that drive
//! a server from Rust (the main crate's `tests/soak.rs` runs [`soak::run`]).
//!
//! ```text
//!            engine (benchmark, churn)     soak (random clients, verdict)
//!                         \                  /
//!                    conn: one client connection over mio
//!           /           /          |            |              \
//!   transport (the   ws (frames,  rng (masks,  msg (type, seq,  sys (/proc, clock,
//!   socket, or TLS)  handshake)   nonces)      timestamp)       SO_LINGER)
//! ```
//!
//! Both drivers run one thread and one mio `Poll`. Each connection is a [`conn::Conn`];
//! the driver says what a frame means (a result to time, a reply to match), counts it,
//! and checks every result's `seq` with [`seq::Seq`].
//!
//! # Layout
//!
//! - [`conn`]: one client connection: connect, upgrade, the `101`, frames read through a
//!   shared buffer, pings answered, queued bytes written, the close.
//! - [`transport`]: a connection's bytes, on the bare socket or through TLS.
//! - [`tls`]: the TLS settings of a `wss://` run: what it trusts, the server's name.
//! - [`engine`]: the benchmark: connections opened at a rate, a warm-up, a measured
//!   window, churn mode, and the report, its table and its JSON line.
//! - [`soak`]: the soak driver: clients that disconnect and resume, unsubscribe, scan,
//!   ack and ping at random, every reply and result checked, RSS judged.
//! - [`selftest`]: an in-process sender that measures the engine's own ceiling.
//! - [`ws`]: RFC 6455 framing for a client, the upgrade request and its answer.
//! - [`msg`]: a message's `type`, `seq` and `timestamp` by byte search.
//! - [`seq`]: `seq` continuity of one connection, and the tally of gaps and duplicates.
//! - [`table`]: a subscription's table kept from delivered events, compared with a
//!   snapshot (the engine's `--check-table`).
//! - [`rng`]: the seedable generator of choices, masks and nonces.
//! - [`stats`]: the latency histogram.
//! - [`sys`]: /proc readers, the clock, file limits, CPU affinity, SO_LINGER.

pub mod conn;
pub mod engine;
pub mod msg;
pub mod rng;
pub mod selftest;
pub mod seq;
pub mod soak;
pub mod stats;
pub mod sys;
pub mod table;
pub mod tls;
pub mod transport;
pub mod ws;
