//! Graceful shutdown: the real binary on SIGTERM, and the in-process handle, send 1001
//! to every WebSocket, flush and exit 0.

mod common;

use common::*;
use serde_json::json;

#[test]
fn sigterm_sends_1001_to_every_websocket_and_exits_0() {
    let mut server = BinaryServer::start(&["--source", "firehose:200"]);
    let mut a = connect_url(&server.url(), server.addr);
    let mut b = connect_url(&server.url(), server.addr);
    subscribe(&mut a, json!({}));
    expect_message(&mut a, "result");
    server.terminate();
    assert_closed_with(&mut a, 1001);
    assert_closed_with(&mut b, 1001);
    let exit = server.exit_within(TIMEOUT);
    assert!(exit.success(), "exit status {exit}");
}

#[test]
fn shutdown_handle_closes_1001_and_run_returns_ok() {
    let server = TestServer::firehose(100);
    let mut ws = connect(&server);
    subscribe(&mut ws, json!({}));
    let stopper = std::thread::spawn(move || server.stop());
    assert_closed_with(&mut ws, 1001);
    assert!(stopper.join().unwrap().is_ok());
}

#[test]
fn a_bad_config_file_is_refused_with_its_line() {
    let dir = TempDir::new();
    let path = dir.join("bad.toml");
    std::fs::write(&path, "listen = \"127.0.0.1:0\"\nping_interval = 25\n").unwrap();
    let err =
        Binary::spawn(&mut scanstream(&["--config", path.to_str().unwrap()])).expect_failure();
    assert!(err.contains("bad.toml") && err.contains("line 2"), "{err}");
}

#[test]
fn flags_win_over_the_config_file() {
    let dir = TempDir::new();
    let path = dir.join("ok.toml");
    std::fs::write(&path, "source = \"firehose:0\"\nlisten = \"127.0.0.1:1\"\n").unwrap();
    let server = BinaryServer::start(&["--config", path.to_str().unwrap()]);
    // --listen 127.0.0.1:0 from the flags won over port 1 in the file.
    assert_ne!(server.addr.port(), 1);
    let res = http(server.addr, "GET", "/stream/status", None);
    assert_eq!(
        res.json()["results_total"],
        0,
        "the file's firehose:0 applied"
    );
}

on_two_edges!(
    sigterm_sends_1001_to_every_websocket_and_exits_0,
    shutdown_handle_closes_1001_and_run_returns_ok,
);
