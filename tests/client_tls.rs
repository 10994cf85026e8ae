//! The client library and `scanstream client` over `wss://`, against a server with a
//! certificate made at test time: resume through a proxy that cuts, the offline queue,
//! a CA file (self-signed, or a private CA's chain), the system's store, a certificate
//! nobody trusts, and skipping verification when asked by name.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::Ordering;

use common::client::{
    assert_lossless_across_cuts, client_config, start_client, subscribe_all, subscribed,
};
use common::proxy::Proxy;
use common::tls::{new_certificate, private_ca};
use common::{Binary, TIMEOUT, TempDir, TestServer, scanstream, wait_for};
use scanstream::SourceSpec;
use scanstream::client::{Client, ClientConfig, ClientError, Event, State, Trust};
use scanstream::config::Config;

/// A fresh certificate in `dir`; returns its PEM file and its key's.
fn certificate(dir: &TempDir, name: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (
        dir.join(&format!("{name}.pem")),
        dir.join(&format!("{name}-key.pem")),
    );
    new_certificate(&cert, &key);
    (cert, key)
}

/// Serves TLS with `cert` (read at bind).
fn tls(cert: &Path, key: &Path) -> impl FnOnce(&mut Config) {
    let (cert, key) = (cert.to_owned(), key.to_owned());
    move |c| {
        c.tls_cert = Some(cert);
        c.tls_key = Some(key);
    }
}

fn wss_url(port: u16) -> String {
    format!("wss://localhost:{port}/stream")
}

/// A test client for `url` that trusts `trust`.
fn config(url: &str, trust: Trust) -> ClientConfig {
    let mut c = client_config(url);
    c.trust = trust;
    c
}

/// The state the client ends in, with every state it went through before.
fn closed(events: &crossbeam_channel::Receiver<Event>) -> (Vec<State>, String) {
    let mut before = Vec::new();
    loop {
        match events.recv_timeout(TIMEOUT).expect("the client to close") {
            Event::State(State::Closed { code: None, reason }) => return (before, reason),
            Event::State(s) => before.push(s),
            _ => {}
        }
    }
}

#[test]
fn resume_over_wss_is_lossless_across_random_cuts() {
    let dir = TempDir::new();
    let (cert, key) = certificate(&dir, "server");
    let tls = tls(&cert, &key);
    let server = TestServer::with(|c| {
        c.source = SourceSpec::Firehose { rate: 2000 };
        tls(c);
    });
    // The proxy passes TLS records through: each cut ends a TLS session mid-stream.
    let proxy = Proxy::new(server.addr);
    let url = wss_url(proxy.addr.port());
    assert_lossless_across_cuts(&proxy, config(&url, Trust::CaFile(cert)));
}

#[test]
fn requests_queued_offline_are_answered_over_wss() {
    let dir = TempDir::new();
    let (cert, key) = certificate(&dir, "server");
    let server = TestServer::scripted_with(tls(&cert, &key));
    let proxy = Proxy::new(server.addr);
    proxy.refuse.store(true, Ordering::SeqCst);
    let url = wss_url(proxy.addr.port());
    let (client, events) = start_client(config(&url, Trust::CaFile(cert)));
    subscribe_all(&client, "main");
    wait_for(&events, "a refused attempt", |ev| {
        matches!(ev, Event::State(State::Reconnecting { .. })).then_some(())
    });
    let scan = client.scan(&["AAPL"]).unwrap();
    let ack = client.ack("a-1").unwrap();
    proxy.refuse.store(false, Ordering::SeqCst);

    subscribed(&events);
    let mut answered = std::collections::BTreeSet::new();
    while answered.len() < 2 {
        answered.insert(wait_for(&events, "answers", |ev| match ev {
            Event::Reply { id, .. } | Event::Error { id: Some(id), .. } => Some(*id),
            _ => None,
        }));
    }
    assert_eq!(answered, [scan, ack].into());
}

#[test]
fn a_ca_file_verifies_a_certificate_its_private_ca_signed() {
    let dir = TempDir::new();
    let ca = private_ca(dir.path());
    let server =
        TestServer::scripted_with(tls(&dir.join("server.pem"), &dir.join("server-key.pem")));
    let url = wss_url(server.addr.port());
    let (client, events) = start_client(config(&url, Trust::CaFile(ca)));
    subscribe_all(&client, "main");
    subscribed(&events);
}

#[test]
fn a_certificate_the_client_does_not_trust_stops_it_with_the_reason() {
    let dir = TempDir::new();
    let (cert, key) = certificate(&dir, "server");
    let (other, _) = certificate(&dir, "other");
    let server = TestServer::scripted_with(tls(&cert, &key));
    let url = wss_url(server.addr.port());
    let (_client, events) = start_client(config(&url, Trust::CaFile(other)));
    let (before, reason) = closed(&events);
    assert!(reason.contains("invalid peer certificate"), "{reason}");
    // Trying again would meet the same certificate.
    assert!(
        !before
            .iter()
            .any(|s| matches!(s, State::Reconnecting { .. })),
        "{before:?}"
    );
}

#[test]
fn skipping_verification_is_asked_for_by_name_and_then_connects() {
    let dir = TempDir::new();
    let (cert, key) = certificate(&dir, "server");
    let server = TestServer::scripted_with(tls(&cert, &key));
    let url = wss_url(server.addr.port());
    let (client, events) = start_client(config(&url, Trust::InsecureSkipVerify));
    subscribe_all(&client, "main");
    subscribed(&events);
}

#[test]
fn a_ca_file_that_cannot_be_read_is_refused_at_start() {
    let c = ClientConfig {
        trust: Trust::CaFile("/nonexistent/ca.pem".into()),
        ..ClientConfig::new("wss://localhost:1/stream")
    };
    let err = Client::start(c).expect_err("no CA file");
    assert!(matches!(err, ClientError::Tls(_)), "{err}");
    assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
}

/// `scanstream client --json` on `url` with `args`, and `SSL_CERT_FILE` when given.
fn client_program(url: &str, args: &[&str], cert_file: Option<&Path>) -> Binary {
    let mut command = scanstream(&["client", "--json", "--url", url]);
    command.args(args).stdout(Stdio::piped());
    if let Some(file) = cert_file {
        command.env("SSL_CERT_FILE", file);
    }
    Binary::spawn(&mut command)
}

fn connects(mut client: Binary) {
    let rx = client.stdout_lines();
    wait_for(&rx, "connected", |line| {
        line.contains(r#""state":"connected""#).then_some(())
    });
}

#[test]
fn the_client_program_trusts_a_ca_file_or_the_system_store() {
    let dir = TempDir::new();
    let (cert, key) = certificate(&dir, "server");
    let (other, _) = certificate(&dir, "other");
    let server = TestServer::scripted_with(tls(&cert, &key));
    let url = wss_url(server.addr.port());
    let ca = cert.to_str().unwrap();

    connects(client_program(&url, &["--ca-file", ca], Some(&other)));
    // The system's store, pointed at the certificate the way OpenSSL's tools are.
    connects(client_program(&url, &[], Some(&cert)));
    connects(client_program(
        &url,
        &["--insecure-skip-verify"],
        Some(&other),
    ));

    let refused = client_program(&url, &[], Some(&other)).expect_failure();
    assert!(refused.contains("invalid peer certificate"), "{refused}");
    let both =
        client_program(&url, &["--ca-file", ca, "--insecure-skip-verify"], None).expect_failure();
    assert!(both.contains("cannot be used with"), "{both}");
}
