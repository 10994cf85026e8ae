//! Shared vocabulary for the integration tests: a real server on 127.0.0.1:0, a
//! scripted source the test feeds, WebSocket and raw HTTP clients with timeouts. Beside
//! it: the `scanstream` program as a child process (`binary`), WebSocket frames by hand
//! (`frames`), scratch directories (`temp_dir`), a redis-server of the test's own
//! (`redis_server`), the client library with quick reconnects (`client`), tables kept
//! by it (`tables`) and a proxy that cuts or switches connections (`proxy`).
#![allow(dead_code)] // each test binary uses its own part of this

pub mod alerts;
mod binary;
pub mod client;
mod frames;
pub mod proxy;
pub mod redis_server;
pub mod tables;
mod temp_dir;
pub mod tls;

#[allow(unused_imports)] // each test binary uses its own part of these too
pub use {binary::*, frames::*, temp_dir::TempDir};

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender, unbounded};
use scanstream::{
    Config, EdgeMaker, EventKind, Progress, Scan, ScanResult, Server, ServerError, ShutdownHandle,
    Source, SourceSpec,
};
use serde_json::{Value, json};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

/// How long any read in a test may wait.
pub const TIMEOUT: Duration = Duration::from_secs(10);

pub type Ws = WebSocket<TcpStream>;

/// `ws://…/stream` on `addr`.
pub fn stream_url(addr: SocketAddr) -> String {
    format!("ws://{addr}/stream")
}

/// A server running on its own thread; shut down gracefully when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    handle: ShutdownHandle,
    thread: Option<JoinHandle<Result<(), ServerError>>>,
    /// Feeds the scripted source (when the server runs one).
    pub feed: Option<Sender<ScanResult>>,
    /// Attaches more edges to this server's producer.
    maker: Option<EdgeMaker>,
}

/// Defaults for tests: port 0, a firehose that emits nothing, the edges this test runs
/// with (see [`with_edges`]), and no conflation: whether an edge lags past `max_lag`
/// depends on the machine, and the tests that push bursts count on every `seq` (the
/// overload tests turn it on).
pub fn test_config() -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        source: SourceSpec::Firehose { rate: 0 },
        threads: edges(),
        max_lag: scanstream::config::Dur(Duration::ZERO),
        ..Config::default()
    }
}

thread_local! {
    static EDGES: std::cell::Cell<usize> = const { std::cell::Cell::new(1) };
}

/// The edges (`--threads`) the servers of this test run: 1 unless [`with_edges`] says.
pub fn edges() -> usize {
    EDGES.with(|e| e.get())
}

/// Runs `test` with every server it starts (in process or the binary) on `n` edges.
pub fn with_edges(n: usize, test: fn()) {
    EDGES.with(|e| e.set(n));
    test();
}

/// Runs the named tests of this file again against servers of two edges, as
/// `two_edges::NAME`: every check then also holds with connections spread by the kernel
/// over two event loops that share the port.
#[macro_export]
macro_rules! on_two_edges {
    ($($test:ident),* $(,)?) => {
        mod two_edges {
            $(
                #[test]
                fn $test() {
                    $crate::common::with_edges(2, super::$test);
                }
            )*
        }
    };
}

impl TestServer {
    /// A server whose results come from `feed`.
    pub fn scripted() -> TestServer {
        TestServer::scripted_with(|_| {})
    }

    /// A scripted server with settings changed by `tweak`.
    pub fn scripted_with(tweak: impl FnOnce(&mut Config)) -> TestServer {
        let mut config = test_config();
        tweak(&mut config);
        let (tx, rx) = unbounded();
        let server = Server::bind_with(
            config,
            Box::new(Scripted {
                rx,
                announced: false,
            }),
        )
        .expect("bind");
        let mut server = TestServer::run(server);
        server.feed = Some(tx);
        server
    }

    /// A server over the source its config names.
    pub fn with(tweak: impl FnOnce(&mut Config)) -> TestServer {
        let mut config = test_config();
        tweak(&mut config);
        TestServer::run(Server::bind(config).expect("bind"))
    }

    /// A firehose server at `rate` results per second.
    pub fn firehose(rate: u32) -> TestServer {
        TestServer::with(|c| c.source = SourceSpec::Firehose { rate })
    }

    fn run(server: Server) -> TestServer {
        let addr = server.local_addr();
        let handle = server.shutdown_handle();
        let maker = server.edge_maker();
        let thread = std::thread::spawn(move || server.run());
        TestServer {
            addr,
            handle,
            thread: Some(thread),
            feed: None,
            maker,
        }
    }

    /// Another edge on this server's producer, on a port of its own, attached now.
    /// Drop it before the server: the producer ends when its last edge does.
    pub fn attach_edge(&self, index: usize) -> TestServer {
        let maker = self.maker.as_ref().expect("a server with a producer");
        let edge = maker
            .bind(index, "127.0.0.1:0".parse().unwrap())
            .expect("bind an edge");
        TestServer::run(edge)
    }

    /// Publishes a result through the scripted source.
    pub fn push(&self, result: ScanResult) {
        self.feed
            .as_ref()
            .expect("scripted server")
            .send(result)
            .unwrap();
    }

    pub fn url(&self) -> String {
        stream_url(self.addr)
    }

    /// Stops the server and waits for `run` to return.
    pub fn stop(mut self) -> Result<(), ServerError> {
        // A maker can attach edges, so it keeps the producer, which the server joins.
        self.maker = None;
        self.handle.shutdown();
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.maker = None;
        if let Some(thread) = self.thread.take() {
            self.handle.shutdown();
            let _ = thread.join();
        }
    }
}

/// The symbols a scripted server knows, for ad-hoc requests.
pub const KNOWN: [&str; 6] = ["AAPL", "MSFT", "IBM", "TSLA", "NVDA", "AMZN"];

/// Pushing a result for this symbol makes the scripted source panic.
pub const PANIC_SYMBOL: &str = "PANIC";

/// A source that publishes what the test sends it, as soon as it arrives.
struct Scripted {
    rx: Receiver<ScanResult>,
    announced: bool,
}

impl Source for Scripted {
    fn poll(&mut self, now: Instant, max: usize, out: &mut Vec<ScanResult>) -> Instant {
        out.extend(self.rx.try_iter().take(max));
        // A fault on demand: the scanner thread must survive nothing, the server everything.
        if out.iter().any(|r| r.symbol == PANIC_SYMBOL) {
            panic!("scripted panic");
        }
        now + Duration::from_millis(2)
    }
    fn scan(&mut self, symbols: &[String], out: &mut Vec<ScanResult>) {
        for s in symbols {
            let mut r = result(s, Scan::PriceChange, EventKind::New);
            r.adhoc = true;
            out.push(r);
        }
    }
    fn progress(&self) -> Progress {
        Progress::default()
    }
    fn restart(&mut self, _: Instant) {}
    fn new_symbols(&mut self, out: &mut Vec<Box<str>>) {
        if !std::mem::replace(&mut self.announced, true) {
            out.extend(KNOWN.iter().map(|s| Box::from(*s)));
        }
    }
}

/// A small, fast simulated market.
pub fn sim(config: &mut Config) {
    config.source = SourceSpec::Sim;
    config.sim_symbols = 50;
    config.scan_interval.0 = Duration::from_millis(200);
    config.min_scan_interval.0 = Duration::from_millis(200);
    config.progress_interval.0 = Duration::from_millis(50);
}

/// The open opportunities that `filters` match, from a `snapshot` on a connection of
/// its own, by (symbol, scan).
#[track_caller]
pub fn snapshot_rows(server: &TestServer, filters: Value) -> HashMap<(String, String), Value> {
    snapshot_rows_at(server.addr, filters)
}

/// As [`snapshot_rows`], from the server at `addr`.
#[track_caller]
pub fn snapshot_rows_at(addr: SocketAddr, filters: Value) -> HashMap<(String, String), Value> {
    let mut ws = connect_url(&stream_url(addr), addr);
    let data = json!({"subscription": "truth", "filters": filters, "snapshot": true});
    subscribe(&mut ws, data);
    rows_of_snapshot(&expect_message(&mut ws, "snapshot"))
}

/// A `snapshot` message's rows by (symbol, scan).
#[track_caller]
pub fn rows_of_snapshot(snapshot: &Value) -> HashMap<(String, String), Value> {
    let rows = snapshot["data"]["results"]
        .as_array()
        .expect("snapshot rows");
    rows.iter()
        .map(|r| {
            let key = (
                r["symbol"].as_str().expect("symbol").to_owned(),
                r["scan"].as_str().expect("scan").to_owned(),
            );
            (key, r.clone())
        })
        .collect()
}

/// A plain result to push.
pub fn result(symbol: &str, scan: Scan, event: EventKind) -> ScanResult {
    ScanResult {
        values: Vec::new(),
        rule_frame: None,
        symbol: symbol.into(),
        scan,
        event,
        score: 1.0,
        price: 100.0,
        change_pct: 1.0,
        volume: 1000,
        volume_ratio: 1.0,
        rsi: Some(50.0),
        source_ts: Some(SystemTime::now()),
        adhoc: false,
    }
}

/// Opens a WebSocket to the server, with read timeouts.
#[track_caller]
pub fn connect(server: &TestServer) -> Ws {
    connect_url(&server.url(), server.addr)
}

#[track_caller]
pub fn connect_url(url: &str, addr: SocketAddr) -> Ws {
    let stream = TcpStream::connect(addr).expect("tcp connect");
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let (ws, _) = tungstenite::client(url, stream).expect("websocket handshake");
    ws
}

/// Sends a JSON message.
#[track_caller]
pub fn send(ws: &mut Ws, msg: Value) {
    ws.send(Message::text(msg.to_string())).expect("send");
}

/// The next data message, skipping pings and pongs.
#[track_caller]
pub fn next_message(ws: &mut Ws) -> Value {
    loop {
        match ws.read().expect("read a message") {
            Message::Text(t) => return serde_json::from_str(&t).expect("server sent JSON"),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

/// The next message, which must be of type `ty`; returns the whole message. Progress
/// `status` messages (without an `id`) in between are skipped unless `ty` is `status`.
#[track_caller]
pub fn expect_message(ws: &mut Ws, ty: &str) -> Value {
    let mut msg = next_message(ws);
    while ty != "status" && msg["type"] == "status" && msg.get("id").is_none() {
        msg = next_message(ws);
    }
    assert_eq!(msg["type"], ty, "expected `{ty}`, got {msg}");
    msg
}

/// The next message that is not a `status`.
#[track_caller]
pub fn next_non_status(ws: &mut Ws) -> Value {
    loop {
        let msg = next_message(ws);
        if msg["type"] != "status" {
            return msg;
        }
    }
}

/// Subscribes with `data` and returns the `subscribed` data. Leaves what follows unread.
#[track_caller]
pub fn subscribe(ws: &mut Ws, data: Value) -> Value {
    send(ws, json!({"type": "subscribe", "data": data}));
    expect_message(ws, "subscribed")["data"].clone()
}

/// An error reply with `code`.
#[track_caller]
pub fn expect_error(ws: &mut Ws, code: &str) -> Value {
    let msg = expect_message(ws, "error");
    assert_eq!(msg["data"]["code"], code, "{msg}");
    msg
}

/// Reads until the server's close frame and checks its code.
#[track_caller]
pub fn assert_closed_with(ws: &mut Ws, code: u16) {
    loop {
        match ws.read() {
            Ok(Message::Close(Some(frame))) => {
                assert_eq!(
                    frame.code,
                    CloseCode::from(code),
                    "close reason: {}",
                    frame.reason
                );
                return;
            }
            Ok(Message::Close(None)) => panic!("closed without a code, expected {code}"),
            Ok(_) => {}
            Err(e) => panic!("connection ended without close {code}: {e}"),
        }
    }
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

/// Opens a raw TCP connection with a read timeout.
pub fn raw(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("tcp connect");
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s
}

/// Reads exactly one HTTP response (by Content-Length) from a stream.
#[track_caller]
pub fn read_response(stream: &mut TcpStream, pending: &mut Vec<u8>) -> HttpResponse {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut res = httparse::Response::new(&mut headers);
        if let Ok(httparse::Status::Complete(head)) = res.parse(pending) {
            let headers: Vec<(String, String)> = res
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_owned(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            let status = res.code.unwrap();
            let len: usize = headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                .map_or(0, |(_, v)| v.parse().unwrap());
            if pending.len() >= head + len {
                let body = pending[head..head + len].to_vec();
                pending.drain(..head + len);
                return HttpResponse {
                    status,
                    headers,
                    body,
                };
            }
        }
        let mut chunk = [0; 8192];
        let n = stream.read(&mut chunk).expect("read response");
        assert!(n > 0, "connection closed before a whole response");
        pending.extend_from_slice(&chunk[..n]);
    }
}

/// Sends raw bytes on a new connection and reads one response.
#[track_caller]
pub fn http_raw(addr: SocketAddr, request: &[u8]) -> HttpResponse {
    let mut s = raw(addr);
    s.write_all(request).unwrap();
    read_response(&mut s, &mut Vec::new())
}

/// `METHOD path` with an optional body, `Connection: close`.
#[track_caller]
pub fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> HttpResponse {
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    http_raw(addr, req.as_bytes())
}

/// Reads until EOF (or reset): true when the server closed the connection.
pub fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut sink = [0; 4096];
    loop {
        match stream.read(&mut sink) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// `/healthz` says 200 `ok`.
#[track_caller]
pub fn assert_healthy(addr: SocketAddr) {
    let health = http(addr, "GET", "/healthz", None);
    assert_eq!(
        (health.status, health.body.as_slice()),
        (200, b"ok".as_slice()),
        "{}",
        String::from_utf8_lossy(&health.body)
    );
}

/// A metric's value from `/metrics` (the first line that starts with `name`).
#[track_caller]
pub fn metric(addr: SocketAddr, name: &str) -> f64 {
    let text = String::from_utf8(http(addr, "GET", "/metrics", None).body).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no metric {name}"))
        .parse()
        .unwrap()
}

/// Waits for the first item `want` accepts (a client event, a line a program wrote),
/// failing the test after `TIMEOUT`.
#[track_caller]
pub fn wait_for<E, T>(items: &Receiver<E>, what: &str, mut want: impl FnMut(&E) -> Option<T>) -> T {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let item = items
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no {what} within {TIMEOUT:?}"));
        if let Some(t) = want(&item) {
            return t;
        }
    }
}

/// Polls `cond` until true or the timeout.
#[track_caller]
pub fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + TIMEOUT;
    while Instant::now() < until {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting for {what}");
}

/// Checks an error response: its status and a JSON body `{"code", "message"}`.
#[track_caller]
pub fn assert_error(resp: &HttpResponse, status: u16, code: &str) {
    assert_eq!(
        resp.status,
        status,
        "body: {}",
        String::from_utf8_lossy(&resp.body)
    );
    assert!(
        resp.header("Content-Type")
            .is_some_and(|t| t.starts_with("application/json")),
        "error content type: {:?}",
        resp.header("Content-Type")
    );
    let body = resp.json();
    assert_eq!(body["code"], code, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "error without a message: {body}"
    );
}
