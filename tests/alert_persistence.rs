//! Alerts that outlive a moment, over real sockets: the journal across a restart and
//! after a torn write, and the webhook against a local HTTP server.

mod common;
use common::alerts::*;
use common::*;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use scanstream::EventKind;
use scanstream::alerts::{HandlerKind, RuleSpec};
use scanstream::config::Dur;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------
// The journal

fn journaled(dir: &Path) -> TestServer {
    let dir = dir.to_owned();
    TestServer::scripted_with(move |c| {
        c.data_dir = Some(dir);
        c.rules = vec![movers()];
    })
}

#[test]
fn alerts_and_acks_survive_a_restart() {
    let dir = TempDir::new();
    let server = journaled(dir.path());
    server.push(res("AAPL", EventKind::New, |r| r.change_pct = -6.0));
    server.push(res("MSFT", EventKind::New, |r| r.change_pct = 8.0));
    wait_for_alerts(server.addr, 2);
    let resp = http(server.addr, "POST", "/alerts/a-1/ack", None);
    assert_eq!(resp.status, 200);
    let acked_at = resp.json()["acked_at"].clone();
    assert!(acked_at.is_string());
    let before = list(server.addr, "");
    server.stop().expect("clean stop");

    let ops: Vec<_> = journal_lines(dir.path())
        .iter()
        .map(|l| l["op"].as_str().unwrap_or("?").to_owned())
        .collect();
    assert_eq!(ops, ["alert", "alert", "ack"]);

    let server = journaled(dir.path());
    let after = list(server.addr, "");
    assert_eq!(after, before, "the history changed across the restart");
    assert_eq!(ids(&after), ["a-2", "a-1"]);
    assert_eq!(after[1]["acknowledged"], true);
    assert_eq!(after[1]["acked_at"], acked_at);
    assert_eq!(after[0]["acknowledged"], false);
    assert!(after[0]["acked_at"].is_null());
    assert_eq!(ids(&list(server.addr, "?unacked=true")), ["a-2"]);
    // The loaded acknowledgment holds: acking again keeps its time.
    let resp = http(server.addr, "POST", "/alerts/a-1/ack", None);
    assert_eq!(resp.json()["acked_at"], acked_at);

    server.push(res("TSLA", EventKind::New, |r| r.change_pct = 9.0));
    let all = wait_for_alerts(server.addr, 3);
    assert_eq!(all[0]["alert_id"], "a-3", "ids go on: {:?}", ids(&all));
    assert_eq!(all[0]["symbol"], "TSLA");
    server.stop().expect("clean stop");
}

/// A journal line as the server writes it.
fn journal_alert(id: u32, symbol: &str, change: f64) -> String {
    json!({
        "op": "alert",
        "alert_id": format!("a-{id}"),
        "rule": "movers",
        "kind": "price_change",
        "severity": "warning",
        "symbol": symbol,
        "scan": "price_change",
        "message": format!("{symbol} abs_change_pct {change} >= 5 (price_change)"),
        "result_seq": id * 10,
        "created": scanstream::rfc3339(SystemTime::now()),
        "acknowledged": false,
        "acked_at": null,
    })
    .to_string()
}

#[test]
fn a_torn_journal_line_is_skipped_and_cut_off() {
    let dir = TempDir::new();
    let torn = journal_alert(3, "ZZZZ", 12.0);
    let text = format!(
        "{}\n{}\n{}",
        journal_alert(1, "AAPL", 6.0),
        journal_alert(2, "MSFT", 7.0),
        &torn[..torn.len() / 2]
    );
    std::fs::write(dir.join("alerts.jsonl"), text).unwrap();

    let server = journaled(dir.path());
    let loaded = list(server.addr, "");
    assert_eq!(ids(&loaded), ["a-2", "a-1"]);
    assert_eq!(loaded[0]["symbol"], "MSFT");
    assert_eq!(loaded[1]["result_seq"], 10);
    assert_eq!(
        loaded[1]["message"],
        "AAPL abs_change_pct 6 >= 5 (price_change)"
    );

    server.push(res("TSLA", EventKind::New, |r| r.change_pct = 9.0));
    let all = wait_for_alerts(server.addr, 3);
    // The torn a-3 never was: its id goes to the next alert.
    assert_eq!(all[0]["alert_id"], "a-3", "{:?}", ids(&all));
    assert_eq!(all[0]["symbol"], "TSLA");

    let lines = journal_lines(dir.path());
    let ids: Vec<_> = lines.iter().map(|l| l["alert_id"].clone()).collect();
    assert_eq!(ids, [json!("a-1"), json!("a-2"), json!("a-3")], "{lines:?}");
    assert!(lines.iter().all(|l| l["symbol"] != "ZZZZ"), "{lines:?}");
    server.stop().expect("clean stop");
}

// ---------------------------------------------------------------------------------------
// The webhook

/// What the local webhook receiver does with each connection, in turn.
enum Reply {
    Status(u16),
    /// Read the request, then answer nothing until the client gives up.
    Hang,
}

/// A request the receiver got.
#[derive(Debug)]
struct HookRequest {
    line: String,
    content_type: String,
    body: String,
}

/// A one-request-per-connection HTTP server on 127.0.0.1:0 following `script`; returns
/// its URL and the requests it gets, as they arrive.
fn webhook_receiver(script: Vec<Reply>) -> (String, mpsc::Receiver<HookRequest>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for reply in script {
            let Ok((mut s, _)) = listener.accept() else {
                return;
            };
            s.set_read_timeout(Some(TIMEOUT)).unwrap();
            let Some(req) = read_request(&mut s) else {
                continue;
            };
            let _ = tx.send(req);
            match reply {
                Reply::Status(code) => {
                    let head = format!(
                        "HTTP/1.1 {code} Scripted\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                    let _ = s.write_all(head.as_bytes());
                }
                Reply::Hang => {
                    let mut sink = [0; 1024];
                    while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
                }
            }
        }
    });
    (url, rx)
}

/// Reads one request: head and a Content-Length body.
fn read_request(s: &mut TcpStream) -> Option<HookRequest> {
    let mut buf = Vec::new();
    let mut chunk = [0; 4096];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        if let Ok(httparse::Status::Complete(head)) = req.parse(&buf) {
            let header = |name: &str| {
                req.headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case(name))
                    .map(|h| String::from_utf8_lossy(h.value).trim().to_owned())
                    .unwrap_or_default()
            };
            let len: usize = header("content-length").parse().unwrap_or(0);
            if buf.len() >= head + len {
                return Some(HookRequest {
                    line: format!("{} {}", req.method?, req.path?),
                    content_type: header("content-type"),
                    body: String::from_utf8_lossy(&buf[head..head + len]).into_owned(),
                });
            }
        }
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn webhook_server(url: &str, timeout: Duration, retries: u32) -> TestServer {
    let url = url.to_owned();
    TestServer::scripted_with(move |c| {
        c.webhook_url = Some(url);
        c.webhook_timeout = Dur(timeout);
        c.webhook_retries = retries;
        c.rules = vec![RuleSpec {
            handlers: Some(vec![HandlerKind::Webhook]),
            ..movers()
        }];
    })
}

#[track_caller]
fn wait_metric(addr: SocketAddr, name: &str, value: f64) {
    let mut last = f64::NAN;
    let until = Instant::now() + TIMEOUT;
    while Instant::now() < until {
        last = metric(addr, name);
        if last == value {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{name} stayed at {last}, expected {value}");
}

#[track_caller]
fn next_request(rx: &mpsc::Receiver<HookRequest>) -> HookRequest {
    rx.recv_timeout(TIMEOUT).expect("a webhook request")
}

#[test]
fn webhook_posts_the_alert_json() {
    let (url, requests) = webhook_receiver(vec![Reply::Status(204)]);
    let server = webhook_server(&url, Duration::from_secs(3), 0);
    let mut ws = watcher(&server);
    server.push(res("TSLA", EventKind::New, |r| r.change_pct = 6.0));
    let req = next_request(&requests);
    assert_eq!(req.line, "POST /hook");
    assert!(req.content_type.starts_with("application/json"), "{req:?}");
    let body: Value = serde_json::from_str(&req.body).expect("a JSON body");
    assert_eq!(body["alert_id"], "a-1", "{body}");
    assert_eq!(body["rule"], "movers", "{body}");
    assert_eq!(body["symbol"], "TSLA", "{body}");
    assert_eq!(body["kind"], "price_change", "{body}");
    wait_metric(server.addr, "scanstream_webhook_sent_total", 1.0);
    assert_eq!(
        metric(server.addr, "scanstream_webhook_failed_attempts_total"),
        0.0
    );
    assert_eq!(list(server.addr, ""), [body]);
    // The rule names only the webhook: no `alert` reaches WebSocket clients.
    send(&mut ws, json!({"type": "ping", "id": "p"}));
    let (msg, _) = next_other(&mut ws);
    assert_eq!(msg["type"], "pong", "{msg}");
}

#[test]
fn webhook_timeout_gives_up_and_the_server_keeps_serving() {
    let (url, requests) = webhook_receiver(vec![Reply::Hang]);
    let server = webhook_server(&url, Duration::from_millis(300), 0);
    server.push(res("TSLA", EventKind::New, |r| r.change_pct = 6.0));
    let req = next_request(&requests);
    assert!(req.body.contains("\"a-1\""), "{req:?}");
    // The reactor does not wait for the webhook.
    assert_eq!(http(server.addr, "GET", "/healthz", None).status, 200);
    wait_metric(server.addr, "scanstream_webhook_gave_up_total", 1.0);
    assert_eq!(
        metric(server.addr, "scanstream_webhook_failed_attempts_total"),
        1.0
    );
    assert_eq!(metric(server.addr, "scanstream_webhook_sent_total"), 0.0);
    assert_eq!(http(server.addr, "GET", "/healthz", None).status, 200);
    assert_eq!(list(server.addr, "").len(), 1);
}

#[test]
fn webhook_retries_after_a_server_error() {
    let (url, requests) = webhook_receiver(vec![Reply::Status(500), Reply::Status(200)]);
    let server = webhook_server(&url, Duration::from_secs(3), 2);
    server.push(res("TSLA", EventKind::New, |r| r.change_pct = 6.0));
    let first = next_request(&requests);
    let second = next_request(&requests);
    assert_eq!(first.body, second.body, "a retry posts the same alert");
    wait_metric(server.addr, "scanstream_webhook_sent_total", 1.0);
    assert_eq!(
        metric(server.addr, "scanstream_webhook_failed_attempts_total"),
        1.0
    );
    assert_eq!(metric(server.addr, "scanstream_webhook_gave_up_total"), 0.0);
    assert!(requests.try_recv().is_err(), "a third request after a 200");
}

on_two_edges!(
    alerts_and_acks_survive_a_restart,
    a_torn_journal_line_is_skipped_and_cut_off,
    webhook_posts_the_alert_json,
    webhook_timeout_gives_up_and_the_server_keeps_serving,
    webhook_retries_after_a_server_error,
);
