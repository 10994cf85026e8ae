//! Access control over real sockets: the token on POST, `/alerts` and `/stream`, the
//! origin allow-list on upgrades, and what stays open.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use scanstream::client::{Client, ClientConfig, Event, State};
use scanstream::config::{AllowedHost, Config};
use serde_json::json;

const TOKEN: &str = "s3cret-token-0123";

fn with_token() -> TestServer {
    TestServer::scripted_with(|c| c.token = Some(TOKEN.parse().unwrap()))
}

/// `METHOD path` with extra header lines.
fn request(addr: SocketAddr, method: &str, path: &str, headers: &str) -> HttpResponse {
    request_to(addr, "localhost", method, path, headers)
}

/// `METHOD path` naming `host` in `Host`.
fn request_to(
    addr: SocketAddr,
    host: &str,
    method: &str,
    path: &str,
    headers: &str,
) -> HttpResponse {
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{headers}Content-Length: 0\r\n\r\n"
    );
    http_raw(addr, req.as_bytes())
}

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}\r\n")
}

/// An upgrade request for `/stream{query}` with extra header lines.
fn upgrade(addr: SocketAddr, query: &str, headers: &str) -> HttpResponse {
    upgrade_to(addr, "localhost", query, headers)
}

/// An upgrade request naming `host` in `Host`.
fn upgrade_to(addr: SocketAddr, host: &str, query: &str, headers: &str) -> HttpResponse {
    let req = format!(
        "GET /stream{query} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{headers}\r\n"
    );
    http_raw(addr, req.as_bytes())
}

#[test]
fn posts_need_the_token() {
    let server = with_token();
    for path in ["/stream/stop", "/stream/start", "/scan", "/alerts/a-1/ack"] {
        let none = request(server.addr, "POST", path, "");
        assert_error(&none, 401, "unauthorized");
        assert_eq!(
            none.header("WWW-Authenticate"),
            Some("Bearer realm=\"scanstream\"")
        );
        assert!(none.json()["message"].as_str().unwrap().contains("Bearer"));
        let wrong = request(server.addr, "POST", path, &bearer("s3cret-token-0124"));
        assert_error(&wrong, 401, "unauthorized");
        assert_eq!(wrong.json()["message"], "wrong token");
        // A prefix of the token is as wrong as anything else.
        let prefix = request(server.addr, "POST", path, &bearer(&TOKEN[..8]));
        assert_error(&prefix, 401, "unauthorized");
        // POSTs take the header only: a token in the URL ends up in logs.
        let query = request(server.addr, "POST", &format!("{path}?token={TOKEN}"), "");
        assert_error(&query, 401, "unauthorized");
    }
    let ok = request(server.addr, "POST", "/stream/stop", &bearer(TOKEN));
    assert_eq!(ok.status, 200);
    assert_eq!(ok.json()["state"], "stopped");
    // The scheme is case-insensitive (RFC 7235).
    let lower = request(
        server.addr,
        "POST",
        "/stream/start",
        &format!("authorization: bearer {TOKEN}\r\n"),
    );
    assert_eq!(lower.status, 200);
    // Past the token, a request is judged as usual.
    let unknown = request(server.addr, "POST", "/alerts/a-1/ack", &bearer(TOKEN));
    assert_error(&unknown, 404, "not_found");
    // Refusals are counted.
    assert!(
        metric(
            server.addr,
            "scanstream_http_responses_total{status=\"401\"}"
        ) >= 16.0
    );
}

#[test]
fn alerts_need_the_token_and_the_open_endpoints_stay_open() {
    let server = with_token();
    assert_error(
        &request(server.addr, "GET", "/alerts", ""),
        401,
        "unauthorized",
    );
    assert_error(
        &request(server.addr, "GET", "/alerts?token=s3cret-token-0123", ""),
        401,
        "unauthorized",
    );
    let ok = request(server.addr, "GET", "/alerts", &bearer(TOKEN));
    assert_eq!(ok.status, 200);
    assert!(ok.json().is_array());
    // `/stream/status` is under `/stream`: only the page, its files, `/healthz` and
    // `/metrics` stay open.
    assert_error(
        &request(server.addr, "GET", "/stream/status", ""),
        401,
        "unauthorized",
    );
    let status = request(server.addr, "GET", "/stream/status", &bearer(TOKEN));
    assert_eq!(status.status, 200);
    for path in [
        "/",
        "/dashboard.js",
        "/dashboard.css",
        "/healthz",
        "/metrics",
    ] {
        assert_eq!(
            request(server.addr, "GET", path, "").status,
            200,
            "{path} stays open"
        );
    }
}

#[test]
fn the_stream_takes_the_token_in_the_header_or_the_query() {
    let server = with_token();
    assert_error(&upgrade(server.addr, "", ""), 401, "unauthorized");
    assert_error(
        &upgrade(server.addr, "?token=s3cret-token-9999", ""),
        401,
        "unauthorized",
    );
    assert_eq!(upgrade(server.addr, "", &bearer(TOKEN)).status, 101);
    assert_eq!(
        upgrade(server.addr, &format!("?token={TOKEN}"), "").status,
        101
    );
    // And a stream opened with it works.
    let url = format!("ws://{}/stream?token={TOKEN}", server.addr);
    let mut ws = connect_url(&url, server.addr);
    let sub = subscribe(&mut ws, json!({"subscription": "s"}));
    assert_eq!(sub["subscription"], "s");
}

#[test]
fn the_origin_allow_list_guards_upgrades() {
    let server = TestServer::scripted_with(|c| {
        c.allow_origin = vec![
            "https://desk.example.com".parse().unwrap(),
            "http://127.0.0.1:8080".parse().unwrap(),
        ];
    });
    let evil = upgrade(server.addr, "", "Origin: https://evil.example\r\n");
    assert_error(&evil, 403, "forbidden");
    assert!(
        evil.json()["message"]
            .as_str()
            .unwrap()
            .contains("https://evil.example")
    );
    // A look-alike is not a match.
    let suffix = upgrade(server.addr, "", "Origin: https://desk.example.com.evil\r\n");
    assert_error(&suffix, 403, "forbidden");
    let listed = upgrade(server.addr, "", "Origin: https://desk.example.com\r\n");
    assert_eq!(listed.status, 101);
    let case = upgrade(server.addr, "", "Origin: HTTP://127.0.0.1:8080\r\n");
    assert_eq!(case.status, 101);
    // Programs send no Origin; the list guards against pages.
    assert_eq!(upgrade(server.addr, "", "").status, 101);
    // Nor may a page elsewhere make a browser POST here.
    let post = request(
        server.addr,
        "POST",
        "/stream/stop",
        "Origin: https://evil.example\r\n",
    );
    assert_error(&post, 403, "forbidden");
    let listed_post = request(
        server.addr,
        "POST",
        "/stream/stop",
        "Origin: https://desk.example.com\r\n",
    );
    assert_eq!(listed_post.status, 200);
    // Reading is left alone: a GET changes nothing.
    let status = request(
        server.addr,
        "GET",
        "/stream/status",
        "Origin: https://evil.example\r\n",
    );
    assert_eq!(status.status, 200);
}

#[test]
fn origin_is_checked_before_the_token() {
    let server = TestServer::scripted_with(|c| {
        c.token = Some(TOKEN.parse().unwrap());
        c.allow_origin = vec!["https://desk.example.com".parse().unwrap()];
    });
    let evil = upgrade(
        server.addr,
        &format!("?token={TOKEN}"),
        "Origin: https://evil.example\r\n",
    );
    assert_error(&evil, 403, "forbidden");
    let listed_without_token = upgrade(server.addr, "", "Origin: https://desk.example.com\r\n");
    assert_error(&listed_without_token, 401, "unauthorized");
    let both = upgrade(
        server.addr,
        &format!("?token={TOKEN}"),
        "Origin: https://desk.example.com\r\n",
    );
    assert_eq!(both.status, 101);
}

#[test]
fn a_guess_of_any_length_is_refused_alike() {
    let server = with_token();
    let longer = format!("{TOKEN}x");
    let huge = "x".repeat(4000);
    // The server compares SHA-256 digests, so neither a prefix, an extension nor a length
    // far from the token's answers any differently from a same-length guess.
    for guess in [
        "s3cret-token-0124",
        &TOKEN[..1],
        &TOKEN[..TOKEN.len() - 1],
        &longer,
        &huge,
    ] {
        for resp in [
            request(server.addr, "POST", "/stream/stop", &bearer(guess)),
            upgrade(server.addr, &format!("?token={guess}"), ""),
        ] {
            assert_error(&resp, 401, "unauthorized");
            assert_eq!(resp.json()["message"], "wrong token", "{}", guess.len());
        }
    }
    let right = request(server.addr, "POST", "/stream/stop", &bearer(TOKEN));
    assert_eq!(right.status, 200);
}

/// Every endpoint refuses `host` with 403 `forbidden`, naming it, the upgrade included.
#[track_caller]
fn assert_host_refused(addr: SocketAddr, host: &str) {
    let name = match host.rsplit_once(':') {
        Some((name, port)) if !port.ends_with(']') => name,
        _ => host,
    };
    for path in [
        "/",
        "/dashboard.js",
        "/healthz",
        "/metrics",
        "/stream/status",
        "/nowhere",
    ] {
        let resp = request_to(addr, host, "GET", path, "");
        assert_error(&resp, 403, "forbidden");
        let message = resp.json()["message"].as_str().unwrap().to_owned();
        assert!(
            message.contains(&format!("`{name}`")),
            "{host} {path}: {message}"
        );
    }
    assert_error(
        &request_to(addr, host, "POST", "/stream/stop", ""),
        403,
        "forbidden",
    );
    assert_error(&upgrade_to(addr, host, "", ""), 403, "forbidden");
}

#[track_caller]
fn assert_host_served(addr: SocketAddr, host: &str) {
    assert_eq!(
        request_to(addr, host, "GET", "/healthz", "").status,
        200,
        "{host}"
    );
    assert_eq!(upgrade_to(addr, host, "", "").status, 101, "{host}");
}

#[test]
fn a_loopback_server_answers_only_loopback_host_names() {
    let server = TestServer::scripted();
    let port = server.addr.port();
    // What a browser sends once a page's own name was rebound to 127.0.0.1.
    for host in [
        "evil.example".to_owned(),
        format!("evil.example:{port}"),
        "localhost.evil.example".to_owned(),
        "192.168.1.10".to_owned(),
        "[::2]".to_owned(),
    ] {
        assert_host_refused(server.addr, &host);
    }
    for host in [
        "localhost".to_owned(),
        format!("localhost:{port}"),
        "LocalHost".to_owned(),
        format!("127.0.0.1:{port}"),
        "127.4.5.6".to_owned(),
        "[::1]".to_owned(),
        format!("[::1]:{port}"),
    ] {
        assert_host_served(server.addr, &host);
    }
    // Programs speaking HTTP/1.0 may send no Host at all.
    let old = http_raw(server.addr, b"GET /healthz HTTP/1.0\r\n\r\n");
    assert_eq!(old.status, 200);
    assert!(
        metric(
            server.addr,
            "scanstream_http_responses_total{status=\"403\"}"
        ) >= 40.0
    );
    // The client library and the CLI name the address they dial, which passes.
    let mut ws = connect(&server);
    subscribe(&mut ws, json!({}));
}

#[test]
fn allow_host_adds_names_and_turns_the_check_on_for_any_address() {
    let allowed = || -> Vec<AllowedHost> {
        vec![
            "scanner.example.com".parse().unwrap(),
            ".desk.example".parse().unwrap(),
        ]
    };
    let listed = TestServer::scripted_with(|c| c.allow_host = allowed());
    for host in [
        "scanner.example.com",
        "Scanner.Example.com:443",
        "desk.example",
        "a.desk.example",
        "localhost",
    ] {
        assert_host_served(listed.addr, host);
    }
    for host in [
        "evil.example",
        "scanner.example.com.evil",
        "evildesk.example",
    ] {
        assert_host_refused(listed.addr, host);
    }

    // On a non-loopback address there is no check unless names are given.
    let open = TestServer::scripted_with(|c| c.listen = "0.0.0.0:0".parse().unwrap());
    let open_addr = SocketAddr::from(([127, 0, 0, 1], open.addr.port()));
    assert_host_served(open_addr, "evil.example");
    let checked = TestServer::scripted_with(|c| {
        c.listen = "0.0.0.0:0".parse().unwrap();
        c.allow_host = allowed();
    });
    let checked_addr = SocketAddr::from(([127, 0, 0, 1], checked.addr.port()));
    assert_host_served(checked_addr, "scanner.example.com");
    assert_host_refused(checked_addr, "evil.example");
}

#[test]
fn the_client_library_presents_its_token() {
    let server = with_token();
    let url = format!("ws://{}/stream", server.addr);

    let mut good = ClientConfig::new(url.as_str());
    good.token = Some(TOKEN.to_owned());
    good.events = Some(1000);
    let client = Client::start(good).unwrap();
    let events = client.events().unwrap();
    let state = events
        .iter()
        .find_map(|ev| match ev {
            Event::State(s @ (State::Connected | State::Closed { .. })) => Some(s),
            _ => None,
        })
        .unwrap();
    assert_eq!(state, State::Connected);
    drop(client);

    // A wrong token is refused with 401, which the client takes as 4500: do not return.
    let mut bad = ClientConfig::new(url.as_str());
    bad.token = Some("not-the-token".to_owned());
    bad.events = Some(1000);
    let client = Client::start(bad).unwrap();
    let events = client.events().unwrap();
    let closed = events
        .recv_timeout(Duration::from_secs(10))
        .into_iter()
        .chain(events.iter())
        .find_map(|ev| match ev {
            Event::State(State::Closed { code, .. }) => Some(code),
            _ => None,
        });
    assert_eq!(closed, Some(Some(4500)));
}

#[test]
fn by_default_the_server_listens_on_loopback_without_a_token() {
    let config = Config::default();
    assert!(config.listen.ip().is_loopback(), "{}", config.listen);
    assert_eq!(config.token, None);
    assert!(config.allow_origin.is_empty());
}

#[test]
fn the_token_comes_from_a_flag_the_environment_or_the_file() {
    let file = Config::parse_file(&format!(
        "token = \"{TOKEN}\"\nallow_origin = [\"https://Desk.Example.com/\"]\n"
    ))
    .unwrap();
    let config = Config::load(None, file).unwrap();
    assert_eq!(config.token, Some(TOKEN.parse().unwrap()));
    assert_eq!(config.allow_origin[0].as_str(), "https://desk.example.com");
    // A configuration in a log line does not give the token away.
    assert!(!format!("{config:?}").contains(TOKEN));

    // Any visible ASCII goes, base64's `+` and `/` included.
    let base64 = Config::from_text("token = \"k3+/x9Q=aZ%&#\"").unwrap();
    assert!(base64.token.is_some());
    for bad in ["short7x", "has space in it", "tab\tin-token"] {
        let err = Config::from_text(&format!("token = \"{bad}\"")).unwrap_err();
        assert!(err.contains("8 to 512 visible ASCII"), "{err}");
        // The message never repeats the secret.
        assert!(!err.contains(bad), "{err}");
    }
    let err = Config::parse_file("allow_origin = [\"desk.example.com\"]").unwrap_err();
    assert!(err.contains("scheme://host"), "{err}");
    let err = Config::parse_file("allow_origin = [\"https://desk.example.com/app\"]").unwrap_err();
    assert!(err.contains("no path"), "{err}");

    // The binary reads SCANSTREAM_TOKEN; a bad one stops it with a clear message.
    let stderr =
        Binary::spawn(scanstream(&["--listen", "127.0.0.1:0"]).env("SCANSTREAM_TOKEN", "short-1"))
            .expect_failure();
    assert!(stderr.contains("token"), "{stderr}");
    assert!(stderr.contains("8 to 512"), "{stderr}");
    assert!(
        !stderr.contains("short-1"),
        "the secret is printed: {stderr}"
    );
}

on_two_edges!(
    posts_need_the_token,
    alerts_need_the_token_and_the_open_endpoints_stay_open,
    the_stream_takes_the_token_in_the_header_or_the_query,
    the_origin_allow_list_guards_upgrades,
    origin_is_checked_before_the_token,
    a_guess_of_any_length_is_refused_alike,
    a_loopback_server_answers_only_loopback_host_names,
    allow_host_adds_names_and_turns_the_check_on_for_any_address,
    the_client_library_presents_its_token,
    by_default_the_server_listens_on_loopback_without_a_token,
    the_token_comes_from_a_flag_the_environment_or_the_file,
);
