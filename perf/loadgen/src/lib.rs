//! `loadgen` as a library: the WebSocket framing, the message helpers, the /proc readers,
//! the load engine and the soak driver, for the `loadgen` program and for tests that drive
//! a server from Rust (the main crate's `tests/soak.rs` runs [`soak::run`]).

pub mod conn;
pub mod engine;
pub mod msg;
pub mod rng;
pub mod selftest;
pub mod seq;
pub mod soak;
pub mod stats;
pub mod sys;
pub mod ws;
