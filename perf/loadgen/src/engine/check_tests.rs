//! The table check through the whole engine, against an in-process server that answers
//! the first subscribe with a snapshot and a few results and the second with a fresh
//! snapshot: the check subscribe goes out after the window, the run waits for its
//! snapshot and no longer, and the verdict follows the snapshot's rows.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Config, Engine, TableCheckConfig};
use crate::ws;

/// Reads one masked client text frame as JSON.
fn read_client_text(s: &mut TcpStream) -> io::Result<Value> {
    let (op, payload) = ws::read_client_frame(s)?;
    assert_eq!(op, ws::OP_TEXT);
    serde_json::from_slice(&payload).map_err(io::Error::other)
}

fn send(s: &mut TcpStream, v: Value) -> io::Result<()> {
    s.write_all(&ws::server_frame(
        ws::OP_TEXT,
        v.to_string().as_bytes(),
        true,
    ))
}

const TS: &str = "2026-11-28T06:23:33.842294182Z";

fn snapshot(name: &str, seq: u64, rows: &[(&str, f64)]) -> Value {
    let rows: Vec<Value> = rows
        .iter()
        .map(
            |(s, p)| json!({"seq": 1, "event": "new", "symbol": s, "scan": "firehose", "price": p}),
        )
        .collect();
    json!({"type": "snapshot", "timestamp": TS,
           "data": {"subscription": name, "seq": seq, "results": rows}})
}

fn result(seq: u64, event: &str, symbol: &str, price: f64, name: &str) -> Value {
    json!({"type": "result", "timestamp": TS,
           "data": {"seq": seq, "event": event, "symbol": symbol, "scan": "firehose",
                    "price": price, "subscriptions": [name]}})
}

/// One connection: snapshot {AAA, BBB}, then clear AAA, update BBB, new CCC; the fresh
/// snapshot has `fresh` as its rows.
fn serve(mut s: TcpStream, fresh: &[(&str, f64)]) -> io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    ws::answer_upgrade(&mut s)?;
    let sub = read_client_text(&mut s)?;
    if sub["data"]["snapshot"] != json!(true) {
        // Not in the sample: results only.
        send(&mut s, json!({"type": "subscribed", "data": {"seq": 10}}))?;
        send(&mut s, result(11, "new", "AAA", 1.0, "default"))?;
        let _ = s.read(&mut [0u8; 64]);
        return Ok(());
    }
    let name = sub["data"]["subscription"].as_str().unwrap().to_string();
    send(&mut s, json!({"type": "subscribed", "data": {"seq": 10}}))?;
    send(&mut s, snapshot(&name, 10, &[("AAA", 1.0), ("BBB", 2.0)]))?;
    send(&mut s, json!({"type": "status", "data": {}}))?;
    send(&mut s, result(11, "clear", "AAA", 1.0, &name))?;
    send(&mut s, result(12, "update", "BBB", 2.5, &name))?;
    send(&mut s, result(14, "new", "CCC", 3.0, &name))?;
    let check = read_client_text(&mut s)?;
    let check_name = check["data"]["subscription"].as_str().unwrap().to_string();
    assert_ne!(check_name, name);
    send(&mut s, json!({"type": "subscribed", "data": {"seq": 14}}))?;
    send(&mut s, snapshot(&check_name, 14, fresh))?;
    // Until the client closes.
    let _ = s.read(&mut [0u8; 64]);
    Ok(())
}

fn server(fresh: &'static [(&'static str, f64)]) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().take(3).flatten() {
            std::thread::spawn(move || serve(s, fresh));
        }
    });
    addr
}

fn run(addr: SocketAddr, sample: usize) -> (super::Report, Duration) {
    let subscribe = r#"{"type":"subscribe","data":{"subscription":"default"}}"#;
    let check =
        TableCheckConfig::from_subscribe(subscribe, sample, Duration::from_secs(5)).unwrap();
    let cfg = Config {
        addr,
        tls: None,
        host: addr.to_string(),
        path: "/stream".into(),
        clients: 3,
        ramp: 1000.0,
        subscribe: Some(subscribe.as_bytes().to_vec()),
        warmup: Duration::ZERO,
        duration: Duration::from_millis(300),
        connect_timeout: Duration::from_secs(2),
        server_pid: None,
        max_frame: 1 << 20,
        churn: None,
        check: Some(check),
    };
    let t = Instant::now();
    let r = Engine::new(cfg).unwrap().run(false).unwrap();
    (r, t.elapsed())
}

#[test]
fn tables_kept_through_the_engine_equal_the_fresh_snapshot() {
    let (r, took) = run(server(&[("BBB", 2.5), ("CCC", 3.0)]), 2);
    let t = r.table_check.expect("the check ran");
    assert_eq!(
        (t.sampled, t.checked, t.equal, t.different, t.unanswered),
        (2, 2, 2, 0, 0),
        "{t:?}"
    );
    assert_eq!((t.verdict(), t.rows), ("pass", 4));
    // The gap at 13 is seen on the two tables' connections, and is not a duplicate.
    assert_eq!((r.gaps, r.lost, r.duplicated), (2, 2, 0));
    // The third, not in the sample, subscribed without asking for a snapshot.
    assert_eq!(r.other_messages.get("snapshot"), Some(&4));
    // The run ends once the snapshots came, long before the check's timeout.
    assert!(took < Duration::from_secs(3), "took {took:?}");
}

#[test]
fn a_fresh_snapshot_that_differs_fails_the_check() {
    let (r, _) = run(server(&[("AAA", 1.0), ("BBB", 2.0), ("CCC", 3.0)]), 0);
    let t = r.table_check.unwrap();
    assert_eq!((t.sampled, t.checked, t.different), (3, 3, 3), "{t:?}");
    assert_eq!(t.verdict(), "fail");
    let ex = t.example.unwrap();
    assert!(ex.contains("1 only in the snapshot (AAA/firehose)"), "{ex}");
    assert!(ex.contains("BBB/firehose: table 2.5, snapshot 2"), "{ex}");
}
