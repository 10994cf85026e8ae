//! The server streams scanstream-shaped results to a subscribed client.

use std::net::TcpStream;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use peer_tokio::{Config, serve};
use serde_json::Value;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

/// The keys of a `result`, in the order scanstream writes them.
const KEYS: [&str; 16] = [
    "type",
    "timestamp",
    "data",
    "seq",
    "event",
    "symbol",
    "scan",
    "score",
    "price",
    "change_pct",
    "volume",
    "volume_ratio",
    "rsi",
    "source_ts",
    "adhoc",
    "subscriptions",
];

/// Runs the server on its own thread until the returned sender is dropped or used.
fn start(
    rate: u32,
) -> (
    std::net::SocketAddr,
    mpsc::Sender<()>,
    thread::JoinHandle<()>,
) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr");
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let server = thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            let config = Config {
                rate,
                report_interval: None,
                ..Config::default()
            };
            // The std receiver blocks, so it waits on the blocking pool.
            let stop = async move {
                let _ = tokio::task::spawn_blocking(move || stop_rx.recv()).await;
            };
            serve(listener, config, stop).await;
        });
    });
    (addr, stop_tx, server)
}

fn read_text(ws: &mut WebSocket<MaybeTlsStream<TcpStream>>) -> String {
    loop {
        match ws.read().expect("read") {
            Message::Text(t) => return t.as_str().to_owned(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected message {other:?}"),
        }
    }
}

#[test]
fn subscribed_client_gets_consecutive_results_of_scanstreams_shape() {
    let started = Instant::now();
    let (addr, stop, server) = start(200);
    let (mut ws, _) = tungstenite::connect(format!("ws://{addr}/stream")).expect("connect");
    if let MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
    }
    ws.send(Message::text(
        r#"{"type":"subscribe","data":{"subscription":"default"}}"#,
    ))
    .expect("subscribe");

    let reply: Value = serde_json::from_str(&read_text(&mut ws)).expect("json");
    assert_eq!(reply["type"], "subscribed");
    assert_eq!(reply["data"]["subscription"], "default");
    assert_eq!(reply["data"]["recovered"], true);

    let mut last_seq = None;
    for _ in 0..25 {
        let text = read_text(&mut ws);
        assert!(
            (240..=360).contains(&text.len()),
            "frame of {} bytes: {text}",
            text.len()
        );
        let v: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(v["type"], "result");

        // Exactly these keys, in this order.
        let top: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        let mut want_top = KEYS[..3].to_vec();
        want_top.sort_unstable();
        assert_eq!(top, want_top);
        let data: Vec<&str> = v["data"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut want_data = KEYS[3..].to_vec();
        want_data.sort_unstable();
        assert_eq!(data, want_data);
        let positions: Vec<usize> = KEYS
            .iter()
            .map(|k| text.find(&format!("\"{k}\":")).expect(k))
            .collect();
        assert!(positions.is_sorted(), "key order in {text}");

        let ts = v["timestamp"].as_str().unwrap();
        assert_eq!(ts.len(), 30, "{ts}");
        assert!(ts.ends_with('Z'));
        assert_eq!(v["data"]["source_ts"].as_str().unwrap().len(), 30);
        assert_eq!(v["data"]["scan"], "firehose");
        assert_eq!(v["data"]["subscriptions"], serde_json::json!(["default"]));
        assert_eq!(v["data"]["symbol"].as_str().unwrap().len(), 3);

        let seq = v["data"]["seq"].as_u64().unwrap();
        if let Some(prev) = last_seq {
            assert_eq!(seq, prev + 1, "seq after {prev}");
        }
        last_seq = Some(seq);
    }

    let _ = ws.close(None);
    drop(stop);
    server.join().expect("server thread");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[test]
fn nothing_is_sent_before_subscribe() {
    let (addr, stop, server) = start(200);
    let (mut ws, _) = tungstenite::connect(format!("ws://{addr}/stream")).expect("connect");
    if let MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
    }
    assert!(ws.read().is_err(), "a result arrived without a subscribe");
    drop(ws);
    drop(stop);
    server.join().expect("server thread");
}

#[test]
fn other_paths_are_refused() {
    let (addr, stop, server) = start(0);
    assert!(tungstenite::connect(format!("ws://{addr}/elsewhere")).is_err());
    drop(stop);
    server.join().expect("server thread");
}
