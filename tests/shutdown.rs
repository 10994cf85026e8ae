//! Graceful shutdown: the real binary on SIGTERM, and the in-process handle, send 1001
//! to every WebSocket, flush and exit 0.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// Starts the binary on port 0 and reads the bound address from its log.
fn spawn_binary(args: &[&str]) -> (Child, std::net::SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_scanstream"))
        .args(["--listen", "127.0.0.1:0", "--log", "info"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start scanstream");
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines.next().expect("log ended before listening").unwrap();
        if let Some(rest) = line.split("local_addr=").nth(1) {
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    // Keep draining the log so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, addr)
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let until = Instant::now() + TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < until, "server did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_sends_1001_to_every_websocket_and_exits_0() {
    let (mut child, addr) = spawn_binary(&["--source", "firehose:200"]);
    let url = format!("ws://{addr}/stream");
    let mut a = connect_url(&url, addr);
    let mut b = connect_url(&url, addr);
    subscribe(&mut a, json!({}));
    expect_message(&mut a, "result");
    // The shell's own `kill`: no dependency on a procps binary.
    let status = Command::new("sh")
        .args(["-c", &format!("kill -TERM {}", child.id())])
        .status()
        .unwrap();
    assert!(status.success());
    assert_closed_with(&mut a, 1001);
    assert_closed_with(&mut b, 1001);
    let exit = wait_exit(&mut child);
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
    let out = Command::new(env!("CARGO_BIN_EXE_scanstream"))
        .args(["--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml") && err.contains("line 2"), "{err}");
}

#[test]
fn flags_win_over_the_config_file() {
    let dir = TempDir::new();
    let path = dir.join("ok.toml");
    std::fs::write(&path, "source = \"firehose:0\"\nlisten = \"127.0.0.1:1\"\n").unwrap();
    let (mut child, addr) = spawn_binary(&["--config", path.to_str().unwrap()]);
    // --listen 127.0.0.1:0 from the flags won over port 1 in the file.
    assert_ne!(addr.port(), 1);
    let res = http(addr, "GET", "/stream/status", None);
    assert_eq!(
        res.json()["results_total"],
        0,
        "the file's firehose:0 applied"
    );
    child.kill().unwrap();
    let _ = child.wait();
}
