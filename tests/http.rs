//! The HTTP side of the server over real sockets: keep-alive, pipelining, error
//! statuses, the connection limit, slowloris protection, the WebSocket handshake, the
//! control endpoints and a storm of abrupt disconnects.

mod common;
use common::*;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use scanstream::config::Dur;
use serde_json::json;

/// RFC 6455 section 1.3's worked example.
const RFC_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const RFC_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// Sends raw bytes on a new connection; the response, then whether the server closed.
#[track_caller]
fn http_raw_then_closed(addr: std::net::SocketAddr, request: &[u8]) -> (HttpResponse, bool) {
    let mut s = raw(addr);
    s.write_all(request).unwrap();
    let resp = read_response(&mut s, &mut Vec::new());
    (resp, closed_by_server(&mut s))
}

/// True when nothing arrives within `wait` and the connection is not at EOF.
fn still_open(stream: &mut TcpStream, wait: Duration) -> bool {
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut byte = [0; 1];
    let open = match stream.read(&mut byte) {
        Ok(_) => false,
        Err(e) => matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
    };
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    open
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n")
}

fn upgrade_request(extra: &str) -> String {
    format!("GET /stream HTTP/1.1\r\nHost: localhost\r\n{extra}\r\n")
}

fn good_upgrade_headers(key: &str) -> String {
    format!(
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n"
    )
}

// --- 1. keep-alive ---------------------------------------------------------------

#[test]
fn keep_alive_serves_two_requests_on_one_connection() {
    let server = TestServer::scripted();
    let mut s = raw(server.addr);
    let mut pending = Vec::new();

    s.write_all(get("/healthz").as_bytes()).unwrap();
    let first = read_response(&mut s, &mut pending);
    assert_eq!(first.status, 200);
    assert_eq!(first.body, b"ok");
    assert_eq!(first.header("Connection"), None, "{first:?}");
    assert!(
        still_open(&mut s, Duration::from_millis(200)),
        "the server closed a kept-alive connection after the first response"
    );

    s.write_all(get("/stream/status").as_bytes()).unwrap();
    let second = read_response(&mut s, &mut pending);
    assert_eq!(second.status, 200);
    assert_eq!(second.json()["state"], "running");
    assert!(pending.is_empty(), "extra bytes after the responses");
}

#[test]
fn connection_close_is_honoured() {
    let server = TestServer::scripted();
    let (resp, closed) = http_raw_then_closed(
        server.addr,
        b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("Connection"), Some("close"));
    assert!(closed, "the server kept the connection open");
}

#[test]
fn http_1_0_without_keep_alive_closes() {
    let server = TestServer::scripted();
    let (resp, closed) = http_raw_then_closed(server.addr, b"GET /healthz HTTP/1.0\r\n\r\n");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, b"ok");
    assert_eq!(resp.header("Connection"), Some("close"));
    assert!(closed, "the server kept an HTTP/1.0 connection open");
}

#[test]
fn http_1_0_with_keep_alive_stays_open() {
    let server = TestServer::scripted();
    let mut s = raw(server.addr);
    let mut pending = Vec::new();
    let req = b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n";
    s.write_all(req).unwrap();
    assert_eq!(read_response(&mut s, &mut pending).status, 200);
    s.write_all(req).unwrap();
    assert_eq!(read_response(&mut s, &mut pending).status, 200);
}

// --- 2. pipelining ---------------------------------------------------------------

#[test]
fn pipelined_requests_are_answered_in_order() {
    let server = TestServer::scripted();
    let mut s = raw(server.addr);
    let batch = format!(
        "{}{}{}",
        get("/healthz"),
        get("/stream/status"),
        get("/nope")
    );
    s.write_all(batch.as_bytes()).unwrap();

    let mut pending = Vec::new();
    let first = read_response(&mut s, &mut pending);
    let second = read_response(&mut s, &mut pending);
    let third = read_response(&mut s, &mut pending);
    assert_eq!([first.status, second.status, third.status], [200, 200, 404]);
    assert_eq!(first.body, b"ok");
    assert!(second.json()["state"].is_string(), "{second:?}");
    assert_error(&third, 404, "not_found");
    assert!(
        still_open(&mut s, Duration::from_millis(100)),
        "a 404 must not close a kept-alive connection"
    );
}

#[test]
fn pipelined_post_with_body_then_get() {
    let server = TestServer::scripted();
    let mut s = raw(server.addr);
    let body = r#"{"symbols":["AAPL","MSFT"]}"#;
    let batch = format!(
        "POST /scan HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}{}",
        body.len(),
        get("/healthz")
    );
    s.write_all(batch.as_bytes()).unwrap();
    let mut pending = Vec::new();
    let scan = read_response(&mut s, &mut pending);
    assert_eq!(scan.status, 202);
    assert_eq!(scan.json(), json!({"queued": 2}));
    let health = read_response(&mut s, &mut pending);
    assert_eq!(health.status, 200);
    assert_eq!(health.body, b"ok");
}

// --- 3. error statuses -----------------------------------------------------------

#[test]
fn malformed_request_line_gets_400() {
    let server = TestServer::scripted();
    let (resp, closed) = http_raw_then_closed(server.addr, b"GARBAGE\r\n\r\n");
    assert_error(&resp, 400, "bad_request");
    assert_eq!(resp.header("Connection"), Some("close"));
    assert!(closed);
}

#[test]
fn malformed_header_gets_400() {
    let server = TestServer::scripted();
    let resp = http_raw(
        server.addr,
        b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nBad Header\r\n\r\n",
    );
    assert_error(&resp, 400, "bad_request");
}

#[test]
fn http11_without_exactly_one_valid_host_gets_400_and_others_are_served() {
    let server = TestServer::scripted();
    let cases: [(&[u8], &str); 5] = [
        (b"GET /healthz HTTP/1.1\r\n\r\n", "needs a Host"),
        (
            b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nHost: localhost\r\n\r\n",
            "more than one Host",
        ),
        (
            b"GET /healthz HTTP/1.0\r\nHost: localhost\r\nhost: other\r\n\r\n",
            "more than one Host",
        ),
        (
            b"GET /healthz HTTP/1.1\r\nHost: local host\r\n\r\n",
            "invalid Host",
        ),
        (
            b"GET /stream HTTP/1.1\r\nHost: user@localhost\r\nUpgrade: websocket\r\n\r\n",
            "invalid Host",
        ),
    ];
    for (request, why) in cases {
        let (resp, closed) = http_raw_then_closed(server.addr, request);
        assert_error(&resp, 400, "bad_request");
        let message = resp.json()["message"].as_str().unwrap().to_owned();
        assert!(message.contains(why), "{message}");
        assert!(closed);
    }
    // HTTP/1.0 needs no Host, and everyone else is still served.
    let (old, _) = http_raw_then_closed(server.addr, b"GET /healthz HTTP/1.0\r\n\r\n");
    assert_eq!(old.status, 200);
    assert_eq!(http(server.addr, "GET", "/healthz", None).status, 200);
    assert!(
        metric(
            server.addr,
            "scanstream_http_responses_total{status=\"400\"}"
        ) >= 5.0
    );
}

#[test]
fn invalid_content_length_gets_400() {
    let server = TestServer::scripted();
    let resp = http_raw(
        server.addr,
        b"POST /scan HTTP/1.1\r\nHost: localhost\r\nContent-Length: lots\r\n\r\n",
    );
    assert_error(&resp, 400, "bad_request");
}

#[test]
fn unknown_path_gets_404_json() {
    let server = TestServer::scripted();
    let resp = http(server.addr, "GET", "/nope", None);
    assert_error(&resp, 404, "not_found");
}

#[test]
fn wrong_method_gets_405_with_allow() {
    let server = TestServer::scripted();
    let cases = [
        ("GET", "/stream/start", "POST"),
        ("GET", "/stream/stop", "POST"),
        ("GET", "/scan", "POST"),
        ("POST", "/healthz", "GET"),
        ("POST", "/stream/status", "GET"),
        ("DELETE", "/metrics", "GET"),
        ("POST", "/stream", "GET"),
    ];
    for (method, path, allow) in cases {
        let resp = http(server.addr, method, path, None);
        assert_error(&resp, 405, "method_not_allowed");
        assert_eq!(resp.header("Allow"), Some(allow), "{method} {path}");
    }
}

#[test]
fn body_above_max_body_bytes_gets_413() {
    let server = TestServer::scripted_with(|c| c.max_body_bytes = 1024);
    let body = format!(r#"{{"symbols":["{}"]}}"#, "A".repeat(2048));
    let req = format!(
        "POST /scan HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let (resp, closed) = http_raw_then_closed(server.addr, req.as_bytes());
    assert_error(&resp, 413, "payload_too_large");
    assert!(closed);

    // A body of exactly max_body_bytes (JSON padded with whitespace) is accepted.
    let body = format!("{:<1024}", r#"{"symbols":["AAPL"]}"#);
    assert_eq!(body.len(), 1024);
    let resp = http(server.addr, "POST", "/scan", Some(&body));
    assert_eq!(resp.status, 202, "{}", String::from_utf8_lossy(&resp.body));
}

#[test]
fn head_above_max_head_bytes_gets_431() {
    let server = TestServer::scripted_with(|c| c.max_head_bytes = 1024);
    let req = format!(
        "GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\n\r\n",
        "a".repeat(2000)
    );
    let (resp, closed) = http_raw_then_closed(server.addr, req.as_bytes());
    assert_error(&resp, 431, "headers_too_large");
    assert!(closed);
}

#[test]
fn unterminated_head_above_max_head_bytes_gets_431() {
    let server = TestServer::scripted_with(|c| c.max_head_bytes = 1024);
    let mut s = raw(server.addr);
    // A head that never ends: the server must not wait for the blank line.
    let req = format!("GET /healthz HTTP/1.1\r\nX-Big: {}", "a".repeat(3000));
    s.write_all(req.as_bytes()).unwrap();
    let resp = read_response(&mut s, &mut Vec::new());
    assert_error(&resp, 431, "headers_too_large");
}

#[test]
fn too_many_headers_gets_431() {
    let server = TestServer::scripted();
    let headers: String = (0..70).map(|i| format!("X-H{i}: v\r\n")).collect();
    let req = format!("GET /healthz HTTP/1.1\r\nHost: localhost\r\n{headers}\r\n");
    let (resp, closed) = http_raw_then_closed(server.addr, req.as_bytes());
    assert_error(&resp, 431, "headers_too_large");
    assert!(closed);
}

#[test]
fn sixty_four_headers_are_accepted() {
    let server = TestServer::scripted();
    let headers: String = (0..63).map(|i| format!("X-H{i}: v\r\n")).collect();
    let req = format!("GET /healthz HTTP/1.1\r\nHost: localhost\r\n{headers}\r\n");
    let resp = http_raw(server.addr, req.as_bytes());
    assert_eq!(resp.status, 200);
}

// --- 4. connection limit ---------------------------------------------------------

#[test]
fn connection_limit_answers_503_then_recovers() {
    let server = TestServer::scripted_with(|c| c.max_connections = 2);
    let mut first = raw(server.addr);
    let second = raw(server.addr);
    // Both are admitted: the first one is served.
    first.write_all(get("/healthz").as_bytes()).unwrap();
    assert_eq!(read_response(&mut first, &mut Vec::new()).status, 200);

    let mut third = raw(server.addr);
    third.write_all(get("/healthz").as_bytes()).unwrap();
    let resp = read_response(&mut third, &mut Vec::new());
    assert_eq!(resp.status, 503);
    let body = resp.json();
    assert!(body["code"].is_string(), "{body}");
    assert!(body["message"].is_string(), "{body}");
    assert!(
        closed_by_server(&mut third),
        "a refused connection stays open"
    );
    drop(third);

    drop(second);
    eventually("a connection to be served after one closed", || {
        http(server.addr, "GET", "/healthz", None).status == 200
    });
    // The kept-alive first connection was never disturbed.
    first.write_all(get("/healthz").as_bytes()).unwrap();
    assert_eq!(read_response(&mut first, &mut Vec::new()).status, 200);
}

// --- 5. slowloris ----------------------------------------------------------------

#[test]
fn slowloris_is_cut_off_while_others_are_served() {
    let server = TestServer::scripted_with(|c| {
        c.head_timeout = Dur(Duration::from_millis(500));
        c.sweep_interval = Dur(Duration::from_millis(50));
    });
    let mut slow = raw(server.addr);
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: te")
        .unwrap();

    // Trickle a byte now and then: activity must not extend the deadline.
    let stop = Arc::new(AtomicBool::new(false));
    let trickler = {
        let mut w = slow.try_clone().unwrap();
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                if w.write_all(b"s").is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let reader = std::thread::spawn(move || {
        let resp = read_response(&mut slow, &mut Vec::new());
        let closed = closed_by_server(&mut slow);
        (resp, closed)
    });

    let mut answered = 0;
    while !reader.is_finished() {
        let resp = http(server.addr, "GET", "/healthz", None);
        assert_eq!(resp.status, 200, "a normal client was not served");
        answered += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    let (resp, closed) = reader.join().unwrap();
    stop.store(true, Ordering::SeqCst);
    trickler.join().unwrap();

    assert_error(&resp, 408, "request_timeout");
    assert_eq!(resp.header("Connection"), Some("close"));
    assert!(closed, "the slow connection was not closed by the server");
    assert!(answered >= 1, "no normal request completed meanwhile");
    assert_eq!(http(server.addr, "GET", "/healthz", None).status, 200);
}

#[test]
fn idle_kept_alive_connection_is_closed_quietly() {
    let server = TestServer::scripted_with(|c| {
        c.head_timeout = Dur(Duration::from_millis(300));
        c.sweep_interval = Dur(Duration::from_millis(50));
    });
    let mut s = raw(server.addr);
    let mut pending = Vec::new();
    s.write_all(get("/healthz").as_bytes()).unwrap();
    assert_eq!(read_response(&mut s, &mut pending).status, 200);
    // Nothing more is sent: the connection ends, without a 408.
    let mut rest = Vec::new();
    match s.read_to_end(&mut rest) {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the idle connection was not closed: {e}"),
    }
    assert!(
        rest.is_empty(),
        "unexpected bytes: {}",
        String::from_utf8_lossy(&rest)
    );
}

// --- 6. WebSocket handshake ------------------------------------------------------

#[test]
fn websocket_upgrade_gets_101_with_accept() {
    let server = TestServer::scripted();
    let mut s = raw(server.addr);
    s.write_all(UPGRADE).unwrap();
    let resp = read_response(&mut s, &mut Vec::new());
    assert_eq!(resp.status, 101);
    assert_eq!(resp.header("Sec-WebSocket-Accept"), Some(RFC_ACCEPT));
    assert!(
        resp.header("Upgrade")
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
    );
    assert!(
        resp.header("Connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("upgrade"))
    );
}

#[test]
fn plain_get_stream_gets_426() {
    let server = TestServer::scripted();
    let resp = http(server.addr, "GET", "/stream", None);
    assert_error(&resp, 426, "upgrade_required");
    assert_eq!(resp.header("Sec-WebSocket-Version"), Some("13"));
}

#[test]
fn websocket_version_8_gets_426() {
    let server = TestServer::scripted();
    let headers = good_upgrade_headers(RFC_KEY).replace("Version: 13", "Version: 8");
    let resp = http_raw(server.addr, upgrade_request(&headers).as_bytes());
    assert_error(&resp, 426, "upgrade_required");
    assert_eq!(resp.header("Sec-WebSocket-Version"), Some("13"));
}

#[test]
fn websocket_missing_or_short_key_gets_400() {
    let server = TestServer::scripted();
    let missing =
        good_upgrade_headers(RFC_KEY).replace(&format!("Sec-WebSocket-Key: {RFC_KEY}\r\n"), "");
    let short = good_upgrade_headers("c2hvcnQ=");
    for headers in [missing, short] {
        let resp = http_raw(server.addr, upgrade_request(&headers).as_bytes());
        assert_error(&resp, 400, "bad_request");
    }
}

#[test]
fn tungstenite_client_connects_and_subscribes() {
    let server = TestServer::scripted();
    let mut ws = connect(&server);
    let sub = subscribe(&mut ws, json!({"subscription": "main"}));
    assert_eq!(sub["subscription"], "main");
    expect_message(&mut ws, "status");
}

// --- 7. control endpoints --------------------------------------------------------

#[test]
fn stream_status_returns_status_json() {
    let server = TestServer::scripted();
    let resp = http(server.addr, "GET", "/stream/status", None);
    assert_eq!(resp.status, 200);
    assert!(
        resp.header("Content-Type")
            .is_some_and(|t| t.starts_with("application/json"))
    );
    let status = resp.json();
    for field in [
        "state",
        "cycle",
        "scanned",
        "total",
        "phase",
        "last_cycle_ms",
        "results_total",
        "subscribers",
        "adhoc_queue",
    ] {
        assert!(status.get(field).is_some(), "no `{field}` in {status}");
    }
    assert!(
        ["running", "stopped"].contains(&status["state"].as_str().unwrap()),
        "{status}"
    );
    assert!(status["cycle"].is_u64(), "{status}");
    assert!(status["last_cycle_ms"].is_number(), "{status}");
    assert!(status["subscribers"].is_u64(), "{status}");
}

#[test]
fn stop_and_start_change_the_state() {
    let server = TestServer::scripted();
    let stop = http(server.addr, "POST", "/stream/stop", None);
    assert_eq!(stop.status, 200);
    assert_eq!(stop.json()["state"], "stopped");
    eventually("status to show stopped", || {
        http(server.addr, "GET", "/stream/status", None).json()["state"] == "stopped"
    });

    let start = http(server.addr, "POST", "/stream/start", None);
    assert_eq!(start.status, 200);
    assert_eq!(start.json()["state"], "running");
    eventually("status to show running", || {
        http(server.addr, "GET", "/stream/status", None).json()["state"] == "running"
    });
}

#[test]
fn post_scan_queues_symbols() {
    let server = TestServer::scripted();
    let resp = http(
        server.addr,
        "POST",
        "/scan",
        Some(r#"{"symbols":["AAPL"]}"#),
    );
    assert_eq!(resp.status, 202);
    assert_eq!(resp.json(), json!({"queued": 1}));
}

#[test]
fn post_scan_with_bad_json_gets_400_bad_json() {
    let server = TestServer::scripted();
    let resp = http(server.addr, "POST", "/scan", Some("{not json"));
    assert_error(&resp, 400, "bad_json");
}

#[test]
fn post_scan_with_empty_symbols_gets_400() {
    let server = TestServer::scripted();
    let resp = http(server.addr, "POST", "/scan", Some(r#"{"symbols":[]}"#));
    assert_error(&resp, 400, "bad_request");
}

#[test]
fn healthz_answers_ok() {
    let server = TestServer::scripted();
    let resp = http(server.addr, "GET", "/healthz", None);
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, b"ok");
}

#[test]
fn metrics_expose_connections_latency_and_statuses() {
    let server = TestServer::scripted();
    assert_eq!(http(server.addr, "GET", "/nope", None).status, 404);
    let resp = http(server.addr, "GET", "/metrics", None);
    assert_eq!(resp.status, 200);
    assert!(
        resp.header("Content-Type")
            .is_some_and(|t| t.starts_with("text/plain"))
    );
    let text = String::from_utf8(resp.body).unwrap();
    for needle in [
        "scanstream_connections_open ",
        "scanstream_publish_to_flush_seconds_bucket",
        "scanstream_http_responses_total{status=\"404\"} ",
    ] {
        assert!(text.contains(needle), "no `{needle}` in:\n{text}");
    }
    assert!(metric(server.addr, "scanstream_connections_open") >= 1.0);
    assert!(
        metric(
            server.addr,
            "scanstream_http_responses_total{status=\"404\"}"
        ) >= 1.0
    );
}

// --- 8. abrupt disconnects -------------------------------------------------------

/// How the storm's client `i` leaves.
fn abrupt_client(addr: std::net::SocketAddr, i: usize) {
    let mut s = TcpStream::connect(addr).expect("tcp connect");
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    match i % 10 {
        // Half a request head, then gone.
        0 | 2 | 4 | 6 | 8 => {
            let _ = s.write_all(b"GET /stream/status HTTP/1.1\r\nHost: te");
        }
        // A finished WebSocket handshake, half a frame, then gone.
        1 | 3 => {
            s.write_all(UPGRADE).unwrap();
            let resp = read_response(&mut s, &mut Vec::new());
            assert_eq!(resp.status, 101);
            // A text frame announcing 10 bytes, with only 3 of them.
            let _ = s.write_all(&cut_frame(10, 3));
        }
        // Connect and drop at once.
        _ => {}
    }
    drop(s);
}

#[test]
fn five_hundred_abrupt_disconnects_leave_the_server_healthy() {
    const CLIENTS: usize = 500;
    const THREADS: usize = 4;
    let server = TestServer::scripted();
    let addr = server.addr;
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            std::thread::spawn(move || {
                for i in (t..CLIENTS).step_by(THREADS) {
                    abrupt_client(addr, i);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("a storm client failed");
    }

    let health = http(addr, "GET", "/healthz", None);
    assert_eq!(health.status, 200);
    assert_eq!(health.body, b"ok");

    let mut ws = connect(&server);
    subscribe(&mut ws, json!({"subscription": "after"}));
    expect_message(&mut ws, "status");
    server.push(result(
        "MSFT",
        scanstream::Scan::VolumeSpike,
        scanstream::EventKind::New,
    ));
    let msg = next_non_status(&mut ws);
    assert_eq!(msg["type"], "result");
    assert_eq!(msg["data"]["symbol"], "MSFT");

    // Left open: the WebSocket and the connection asking for the metrics.
    eventually("the storm's connections to be gone", || {
        metric(addr, "scanstream_connections_open") <= 2.0
    });
    assert!(metric(addr, "scanstream_connections_accepted_total") >= CLIENTS as f64);
}

#[test]
fn pipelined_requests_past_the_out_cap_are_all_answered_after_a_half_close() {
    let server = TestServer::scripted();
    let mut s = raw(server.addr);
    let n = 3000;
    let requests = "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".repeat(n);
    s.write_all(requests.as_bytes()).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut pending = Vec::new();
    for i in 0..n {
        let res = read_response(&mut s, &mut pending);
        assert_eq!(res.status, 200, "response {i}");
    }
    assert!(closed_by_server(&mut s));
}

#[test]
fn http_1_0_keep_alive_is_confirmed_in_the_response() {
    let server = TestServer::scripted();
    let mut s = raw(server.addr);
    s.write_all(b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .unwrap();
    let res = read_response(&mut s, &mut Vec::new());
    assert_eq!(res.header("Connection"), Some("keep-alive"));
}

#[test]
fn the_dashboard_is_served_whole_and_loads_nothing_from_elsewhere() {
    let server = TestServer::scripted();
    let page = http(server.addr, "GET", "/", None);
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("Content-Type"),
        Some("text/html; charset=utf-8")
    );
    let csp = page
        .header("Content-Security-Policy")
        .expect("a CSP header");
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(csp.contains("connect-src 'self'"), "{csp}");
    // The page address may carry the token.
    assert_eq!(page.header("Referrer-Policy"), Some("no-referrer"));
    let html = String::from_utf8(page.body).unwrap();
    assert!(html.contains(r#"src="/dashboard.js""#));
    assert!(html.contains(r#"href="/dashboard.css""#));

    for (path, content_type) in [
        ("/dashboard.js", "text/javascript; charset=utf-8"),
        ("/dashboard.css", "text/css; charset=utf-8"),
    ] {
        let asset = http(server.addr, "GET", path, None);
        assert_eq!(asset.status, 200, "{path}");
        assert_eq!(asset.header("Content-Type"), Some(content_type), "{path}");
        assert_eq!(asset.header("X-Content-Type-Options"), Some("nosniff"));
        assert!(
            asset.body.len() > 1000,
            "{path} is {} bytes",
            asset.body.len()
        );
        // Offline by construction: no file names another host.
        let text = String::from_utf8(asset.body).unwrap();
        for scheme in ["http://", "https://", "//cdn", "@import"] {
            assert!(!text.contains(scheme), "{path} mentions {scheme}");
        }
    }
    for scheme in ["http://", "https://"] {
        assert!(!html.contains(scheme), "the page mentions {scheme}");
    }

    let post = http(server.addr, "POST", "/dashboard.js", Some(""));
    assert_eq!(post.status, 405);
    assert_eq!(post.header("Allow"), Some("GET"));
}

on_two_edges!(
    keep_alive_serves_two_requests_on_one_connection,
    connection_close_is_honoured,
    http_1_0_without_keep_alive_closes,
    http_1_0_with_keep_alive_stays_open,
    pipelined_requests_are_answered_in_order,
    pipelined_post_with_body_then_get,
    malformed_request_line_gets_400,
    malformed_header_gets_400,
    http11_without_exactly_one_valid_host_gets_400_and_others_are_served,
    invalid_content_length_gets_400,
    unknown_path_gets_404_json,
    wrong_method_gets_405_with_allow,
    body_above_max_body_bytes_gets_413,
    head_above_max_head_bytes_gets_431,
    unterminated_head_above_max_head_bytes_gets_431,
    too_many_headers_gets_431,
    sixty_four_headers_are_accepted,
    connection_limit_answers_503_then_recovers,
    slowloris_is_cut_off_while_others_are_served,
    idle_kept_alive_connection_is_closed_quietly,
    websocket_upgrade_gets_101_with_accept,
    plain_get_stream_gets_426,
    websocket_version_8_gets_426,
    websocket_missing_or_short_key_gets_400,
    tungstenite_client_connects_and_subscribes,
    stream_status_returns_status_json,
    stop_and_start_change_the_state,
    post_scan_queues_symbols,
    post_scan_with_bad_json_gets_400_bad_json,
    post_scan_with_empty_symbols_gets_400,
    healthz_answers_ok,
    metrics_expose_connections_latency_and_statuses,
    five_hundred_abrupt_disconnects_leave_the_server_healthy,
    pipelined_requests_past_the_out_cap_are_all_answered_after_a_half_close,
    http_1_0_keep_alive_is_confirmed_in_the_response,
    the_dashboard_is_served_whole_and_loads_nothing_from_elsewhere,
);
