//! TLS on the server's port, over real sockets, with a certificate made at test time: a
//! client that trusts it gets `https://` and `wss://`; a plain-TCP client and a bad
//! handshake get no HTTP and are closed, while the server goes on serving the others.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;

use common::tls::new_certificate;
use common::*;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use scanstream::{EventKind, Scan};
use serde_json::json;

type Tls = StreamOwned<ClientConnection, TcpStream>;

/// A scripted server speaking TLS with a fresh certificate, and a client configuration
/// that trusts it.
fn tls_server() -> (TestServer, Arc<ClientConfig>) {
    let dir = TempDir::new();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let config = new_certificate(&cert, &key);
    let server = TestServer::scripted_with(|c| {
        c.tls_cert = Some(cert);
        c.tls_key = Some(key);
    });
    (server, config)
}

/// Does a client with `config` complete a TLS handshake and get `/healthz`?
fn healthy_over(addr: SocketAddr, config: &Arc<ClientConfig>) -> bool {
    get_tls(addr, config, "/healthz").starts_with("HTTP/1.1 200")
}

/// A counter from `/metrics`, asked over TLS.
fn tls_metric(addr: SocketAddr, config: &Arc<ClientConfig>, name: &str) -> f64 {
    let text = get_tls(addr, config, "/metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no metric {name}"))
        .parse()
        .unwrap()
}

fn connect_tls(addr: SocketAddr, config: &Arc<ClientConfig>) -> Tls {
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(TIMEOUT)).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let conn = ClientConnection::new(Arc::clone(config), name).unwrap();
    StreamOwned::new(conn, tcp)
}

/// `GET path` over TLS on a connection of its own, to the end of the response (empty
/// when the handshake fails).
fn get_tls(addr: SocketAddr, config: &Arc<ClientConfig>, path: &str) -> String {
    let mut tls = connect_tls(addr, config);
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    // A handshake the client refuses (a certificate it does not trust) fails here.
    if tls.write_all(req.as_bytes()).is_err() {
        return String::new();
    }
    let mut text = Vec::new();
    // The server closes after the response; a missing close_notify is no matter here.
    let _ = tls.read_to_end(&mut text);
    String::from_utf8_lossy(&text).into_owned()
}

#[test]
fn a_client_that_trusts_the_certificate_gets_https_and_wss() {
    let (server, config) = tls_server();
    let health = get_tls(server.addr, &config, "/healthz");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.ends_with("ok"), "{health}");

    let tls = connect_tls(server.addr, &config);
    let url = format!("ws://localhost:{}/stream", server.addr.port());
    let (mut ws, _) = tungstenite::client(url, tls).expect("websocket over TLS");
    ws.send(tungstenite::Message::text(
        json!({"type": "subscribe", "data": {}}).to_string(),
    ))
    .unwrap();
    let mut result = None;
    server.push(result_of("AAPL"));
    while result.is_none() {
        let msg: serde_json::Value = match ws.read().expect("a message") {
            tungstenite::Message::Text(t) => serde_json::from_str(&t).unwrap(),
            _ => continue,
        };
        if msg["type"] == "result" {
            result = Some(msg);
        }
    }
    let result = result.unwrap();
    assert_eq!(result["data"]["symbol"], "AAPL", "{result}");
    assert_eq!(result["data"]["seq"], 1, "{result}");
}

/// A snapshot far larger than the 64 KiB of plaintext rustls takes at once. A write that
/// rustls cut short once read as a full socket, so the reactor waited for a `WRITABLE`
/// event that never came and the rest of the reply stayed in the out buffer.
#[test]
fn a_reply_larger_than_rustls_takes_at_once_arrives_whole() {
    let (server, config) = tls_server();
    let n = 2000;
    for i in 0..n {
        server.push(result_of(&format!("S{i:04}")));
    }
    eventually("every result published", || {
        tls_metric(server.addr, &config, "scanstream_events_published_total") >= f64::from(n)
    });
    let tls = connect_tls(server.addr, &config);
    let url = format!("ws://localhost:{}/stream", server.addr.port());
    let (mut ws, _) = tungstenite::client(url, tls).expect("websocket over TLS");
    ws.send(tungstenite::Message::text(
        json!({"type": "subscribe", "data": {"snapshot": true}}).to_string(),
    ))
    .unwrap();
    let snapshot = loop {
        let text = match ws.read().expect("the whole snapshot") {
            tungstenite::Message::Text(t) => t,
            _ => continue,
        };
        let msg: serde_json::Value = serde_json::from_str(&text).unwrap();
        if msg["type"] == "snapshot" {
            assert!(text.len() > 4 * 64 * 1024, "{} bytes", text.len());
            break msg;
        }
    };
    let rows = snapshot["data"]["results"].as_array().unwrap().len();
    assert_eq!(rows, n as usize);
}

#[test]
fn plain_tcp_and_a_bad_handshake_are_refused_and_others_are_served() {
    let (server, config) = tls_server();
    // Plain HTTP on the TLS port: no HTTP comes back, and the connection ends.
    let mut plain = TcpStream::connect(server.addr).unwrap();
    plain.set_read_timeout(Some(TIMEOUT)).unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let ended = plain.read_to_end(&mut answer);
    assert!(ended.is_ok(), "the connection hung: {ended:?}");
    assert!(!answer.starts_with(b"HTTP/"), "plain HTTP was answered");
    // A TLS alert record, if anything: content type 21.
    assert!(answer.is_empty() || answer[0] == 21, "{answer:?}");

    // A handshake that goes wrong halfway: a record header, then garbage.
    let mut bad = TcpStream::connect(server.addr).unwrap();
    bad.set_read_timeout(Some(TIMEOUT)).unwrap();
    bad.write_all(&[22, 3, 1, 0, 8, 1, 0, 0, 4, 0xde, 0xad, 0xbe, 0xef])
        .unwrap();
    let mut rest = Vec::new();
    assert!(bad.read_to_end(&mut rest).is_ok(), "the bad handshake hung");

    // Everyone else is served as before, and the failures are counted.
    assert!(healthy_over(server.addr, &config));
    let failures = r#"scanstream_tls_handshake_failures_total{reason="invalid_message"}"#;
    assert_eq!(tls_metric(server.addr, &config, failures), 2.0);
}

#[test]
fn sighup_reloads_the_certificate_for_new_connections_and_keeps_it_on_a_bad_pair() {
    let dir = TempDir::new();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let first = new_certificate(&cert, &key);
    let (cert_arg, key_arg) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let server = BinaryServer::start(&[
        "--source",
        "firehose:0",
        "--tls-cert",
        cert_arg,
        "--tls-key",
        key_arg,
    ]);
    assert!(healthy_over(server.addr, &first));

    // Renewed on disk, as an ACME client does, then SIGHUP.
    let second = new_certificate(&cert, &key);
    assert!(
        !healthy_over(server.addr, &second),
        "the new one before the reload"
    );
    server.hangup();
    server.wait_for_log("TLS certificate and key reloaded");
    assert!(healthy_over(server.addr, &second));
    assert!(
        !healthy_over(server.addr, &first),
        "the old one after the reload"
    );

    // A broken key: logged, and the certificate in use stays.
    std::fs::write(&key, "not a key").unwrap();
    server.hangup();
    server.wait_for_log("TLS reload failed");
    assert!(healthy_over(server.addr, &second));
}

fn result_of(symbol: &str) -> scanstream::ScanResult {
    result(symbol, Scan::PriceChange, EventKind::New)
}
