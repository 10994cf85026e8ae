//! Faults: a scanner that panics, clients that vanish mid-handshake or mid-frame, half-open
//! connections, and `accept` running out of descriptors. The server keeps serving
//! everyone else and loses nothing.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use scanstream::config::Dur;
use scanstream::{EventKind, Scan};
use serde_json::json;

#[test]
fn a_scanner_panic_degrades_health_but_the_stream_and_history_stay() {
    let server = TestServer::scripted();
    let mut watcher = connect(&server);
    subscribe(&mut watcher, json!({"subscription": "all"}));
    for symbol in ["AAPL", "MSFT", "IBM"] {
        server.push(result(symbol, Scan::PriceChange, EventKind::New));
    }
    for _ in 0..3 {
        expect_message(&mut watcher, "result");
    }
    server.push(result(PANIC_SYMBOL, Scan::PriceChange, EventKind::New));

    // Subscribers hear of it in a status.
    let status = loop {
        let msg = expect_message(&mut watcher, "status");
        if msg["data"]["health"] == "degraded" {
            break msg["data"].clone();
        }
    };
    assert_eq!(status["state"], "stopped");
    assert_eq!(status["phase"], "idle");

    let health = http(server.addr, "GET", "/healthz", None);
    assert_error(&health, 503, "degraded");
    assert_eq!(health.json()["message"], "scanner failed: scripted panic");
    let status = http(server.addr, "GET", "/stream/status", None).json();
    assert_eq!(status["health"], "degraded");
    assert_eq!(metric(server.addr, "scanstream_scanner_running"), 0.0);
    // Commands to a scanner that is gone are refused, not lost silently.
    assert_eq!(
        http(server.addr, "POST", "/stream/start", Some("")).status,
        503
    );
    send(
        &mut watcher,
        json!({"type": "scan", "id": "s1", "data": {"symbols": ["AAPL"]}}),
    );
    let refused = expect_error(&mut watcher, "unavailable");
    assert_eq!(refused["id"], "s1");

    // A newcomer still resumes from history: all three results, in order.
    let mut late = connect(&server);
    let sub = subscribe(&mut late, json!({"subscription": "s", "since": 0}));
    assert_eq!(sub["replayed"], 3);
    let symbols: Vec<String> = (0..3)
        .map(|_| {
            expect_message(&mut late, "result")["data"]["symbol"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(symbols, ["AAPL", "MSFT", "IBM"]);
    // And the status it gets says degraded too.
    assert_eq!(
        expect_message(&mut late, "status")["data"]["health"],
        "degraded"
    );
}

#[test]
fn a_healthy_server_says_ok() {
    let server = TestServer::scripted();
    assert_healthy(server.addr);
    assert_eq!(
        http(server.addr, "GET", "/stream/status", None).json()["health"],
        "ok"
    );
}

/// Ends a connection with a reset instead of a FIN: what a crashed peer looks like.
fn reset(stream: TcpStream) {
    let sock = socket2::SockRef::from(&stream);
    let _ = sock.set_linger(Some(Duration::ZERO));
    drop(stream);
}

#[test]
fn clients_vanishing_mid_handshake_or_mid_frame_disturb_no_one() {
    let server = TestServer::scripted();
    let mut watcher = connect(&server);
    subscribe(&mut watcher, json!({"subscription": "all"}));

    // Half a subscribe: a text frame announcing 100 bytes, with 10 sent.
    let half_frame = cut_frame(100, 10);
    let mut pushed = 0;
    for round in 0..40 {
        let mut s = raw(server.addr);
        match round % 4 {
            // Mid-handshake: part of the request head.
            0 => s.write_all(&UPGRADE[..round + 10]).unwrap(),
            // Mid-frame, after a completed handshake.
            1 | 2 => {
                s.write_all(UPGRADE).unwrap();
                read_response(&mut s, &mut Vec::new());
                s.write_all(&half_frame).unwrap();
            }
            // Mid-handshake, before the server could answer.
            _ => s.write_all(UPGRADE).unwrap(),
        }
        if round % 2 == 0 {
            reset(s);
        } else {
            drop(s);
        }
        server.push(result(
            KNOWN[round % KNOWN.len()],
            Scan::PriceChange,
            EventKind::New,
        ));
        pushed += 1;
    }
    // The watcher got every result, in order, with nothing lost.
    let mut last = 0;
    for _ in 0..pushed {
        let seq = expect_message(&mut watcher, "result")["data"]["seq"]
            .as_u64()
            .unwrap();
        assert_eq!(seq, last + 1);
        last = seq;
    }
    // And every vanished connection is gone from the server.
    eventually("only the watcher (and this request) left", || {
        metric(server.addr, "scanstream_connections_open") <= 2.0
    });
    assert_eq!(
        metric(server.addr, "scanstream_websocket_connections_open"),
        1.0
    );
}

#[test]
fn half_open_connections_are_reaped_by_the_timeouts() {
    let server = TestServer::scripted_with(|c| {
        c.head_timeout = Dur(Duration::from_millis(300));
        c.ping_interval = Dur(Duration::from_millis(100));
        c.idle_timeout = Dur(Duration::from_millis(400));
        c.sweep_interval = Dur(Duration::from_millis(50));
    });
    // Peers that went away without a FIN: one silent before its request, one after its
    // handshake with half a frame sent, one silent after its handshake. None reads.
    let silent_http = raw(server.addr);
    let mut half_frame = raw_ws(server.addr);
    half_frame.write_all(&cut_frame(50, 1)).unwrap();
    let silent_ws = raw_ws(server.addr);
    assert_eq!(metric(server.addr, "scanstream_connections_open"), 4.0);
    eventually("every half-open connection reaped", || {
        metric(server.addr, "scanstream_connections_open") <= 1.0
    });
    drop((silent_http, half_frame, silent_ws));
}

/// The server binary with its descriptor limit lowered to `nofile`, on a port of its
/// choosing, reading from an idle source.
fn limited_server(nofile: u32) -> BinaryServer {
    // The limit is set by a shell that then becomes the server.
    let binary = Binary::spawn(
        Command::new("sh")
            .arg("-c")
            .arg(format!("ulimit -n {nofile} && exec \"$0\" \"$@\""))
            .arg(BIN)
            .args(SERVER_ARGS)
            .args(["--source", "firehose:0"])
            .stdout(Stdio::null()),
    );
    BinaryServer::listening(binary)
}

/// CPU time a process has used, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn accept_failing_with_emfile_pauses_instead_of_spinning() {
    let server = limited_server(64);
    // More connections than descriptors: the rest wait in the backlog while accept fails.
    let mut held: Vec<TcpStream> = (0..120).map(|_| raw(server.addr)).collect();
    std::thread::sleep(Duration::from_millis(300));
    let before = cpu_ticks(server.id());
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(server.id()) - before;
    let elapsed_ticks = started.elapsed().as_secs_f64() * 100.0;
    // A loop spinning on the failing accept would burn the whole core (~200 ticks).
    assert!(
        (used as f64) < elapsed_ticks * 0.25,
        "{used} ticks of CPU in {elapsed_ticks:.0}: the loop spins"
    );

    // Descriptors come back: the waiting connections are served, and so is a newcomer.
    let last = held.pop().unwrap();
    held.clear();
    let mut last = last;
    last.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut last, &mut Vec::new()).status, 200);
    let errors = metric(server.addr, "scanstream_accept_errors_total");
    // One failure per pause (100 ms), not one per turn of a spinning loop.
    assert!(
        errors >= 1.0,
        "accept never failed: the limit was not reached"
    );
    assert!(errors < 100.0, "{errors} accept failures in about 2.5 s");
    let mut ws = connect_url(&server.url(), server.addr);
    subscribe(&mut ws, json!({"subscription": "after"}));
}
