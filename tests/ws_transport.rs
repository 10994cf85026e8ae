//! The WebSocket transport over real sockets: close codes, framing edge cases, pings,
//! the message rate limit, backpressure (4008) and results held back during replays.

mod common;

use std::io::Write;
use std::time::Duration;

use common::*;
use scanstream::config::Dur;
use scanstream::{EventKind, Scan};
use serde_json::json;
use tungstenite::Message;

#[test]
fn protocol_violations_close_with_their_codes() {
    let server = TestServer::scripted_with(|c| c.max_message_bytes = 1024);
    let cases: [(&str, Vec<u8>, u16); 5] = [
        (
            "unmasked frame",
            unmasked_frame(OP_TEXT, br#"{"type":"ping"}"#),
            1002,
        ),
        ("binary message", client_frame(OP_BINARY, b"\x00\x01"), 1003),
        ("invalid UTF-8", client_frame(OP_TEXT, b"\xff\xfe{}"), 1007),
        (
            "message over the limit",
            client_frame(OP_TEXT, &vec![b' '; 2000]),
            1009,
        ),
        ("reserved opcode", client_frame(0x3, b""), 1002),
    ];
    for (what, frame, code) in cases {
        let mut s = raw_ws(server.addr);
        s.write_all(&frame).unwrap();
        assert_eq!(raw_close_code(&mut s), code, "{what}");
        assert!(closed_by_server(&mut s), "{what}: socket left open");
    }
    assert_eq!(
        metric(
            server.addr,
            "scanstream_protocol_errors_total{code=\"1002\"}"
        ),
        2.0
    );
}

#[test]
fn a_frame_written_one_byte_at_a_time_is_understood() {
    let server = TestServer::scripted();
    let mut s = raw_ws(server.addr);
    s.set_nodelay(true).unwrap();
    for b in client_frame(OP_TEXT, br#"{"type":"ping","id":"slow"}"#) {
        s.write_all(&[b]).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(raw_expect(&mut s, "pong")["id"], "slow");
}

#[test]
fn two_messages_in_one_write_get_two_replies_in_order() {
    let server = TestServer::scripted();
    let mut s = raw_ws(server.addr);
    let mut bytes = client_frame(OP_TEXT, br#"{"type":"ping","id":1}"#);
    bytes.extend(client_frame(OP_TEXT, br#"{"type":"ping","id":2}"#));
    s.write_all(&bytes).unwrap();
    assert_eq!(raw_expect(&mut s, "pong")["id"], 1);
    assert_eq!(raw_expect(&mut s, "pong")["id"], 2);
}

#[test]
fn frames_sent_with_the_handshake_are_not_lost() {
    let server = TestServer::scripted();
    let mut s = raw(server.addr);
    let mut bytes = UPGRADE.to_vec();
    bytes.extend(client_frame(OP_TEXT, br#"{"type":"ping","id":"early"}"#));
    s.write_all(&bytes).unwrap();
    let mut pending = Vec::new();
    assert_eq!(read_response(&mut s, &mut pending).status, 101);
    // The pong may have come in the same read as the 101.
    while !String::from_utf8_lossy(&pending).contains(r#""id":"early""#) {
        let mut chunk = [0; 4096];
        let n = std::io::Read::read(&mut s, &mut chunk).unwrap();
        assert!(n > 0, "closed before the pong");
        pending.extend_from_slice(&chunk[..n]);
    }
    let (frame, _) = parse_frame(&pending).expect("a whole frame");
    assert_eq!(frame.json()["type"], "pong");
}

#[test]
fn client_pings_are_answered_and_close_is_echoed() {
    let server = TestServer::scripted();
    let mut s = raw_ws(server.addr);
    s.write_all(&client_frame(OP_PING, b"hi")).unwrap();
    assert_eq!(read_frame(&mut s), Frame::Pong(b"hi".to_vec()));
    s.write_all(&client_frame(OP_CLOSE, &1000u16.to_be_bytes()))
        .unwrap();
    assert_eq!(raw_close_code(&mut s), 1000);
    assert!(closed_by_server(&mut s));
}

#[test]
fn server_pings_and_closes_a_silent_client() {
    let server = TestServer::scripted_with(|c| {
        c.ping_interval = Dur(Duration::from_millis(200));
        c.idle_timeout = Dur(Duration::from_millis(700));
        c.sweep_interval = Dur(Duration::from_millis(50));
    });
    let mut s = raw_ws(server.addr);
    let frame = read_frame(&mut s);
    assert!(
        matches!(frame, Frame::Ping(_)),
        "expected a ping, got {frame:?}"
    );
    // Never answering: closed with 1001 once idle.
    assert_eq!(raw_close_code(&mut s), 1001);
}

#[test]
fn answering_pings_keeps_a_client_open() {
    let server = TestServer::scripted_with(|c| {
        c.ping_interval = Dur(Duration::from_millis(100));
        c.idle_timeout = Dur(Duration::from_millis(400));
        c.sweep_interval = Dur(Duration::from_millis(20));
    });
    let mut ws = connect(&server);
    // tungstenite answers pings inside read(); reading for 1.2 s spans three idle timeouts.
    ws.get_mut()
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let until = std::time::Instant::now() + Duration::from_millis(1200);
    while std::time::Instant::now() < until {
        match ws.read() {
            Ok(Message::Close(c)) => panic!("closed: {c:?}"),
            Ok(_) => {}
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("{e}"),
        }
        let _ = ws.flush();
    }
    ws.get_mut().set_read_timeout(Some(TIMEOUT)).unwrap();
    send(&mut ws, json!({"type": "ping", "id": "alive"}));
    assert_eq!(expect_message(&mut ws, "pong")["id"], "alive");
}

#[test]
fn message_rate_limit_then_close_4029() {
    let server = TestServer::scripted_with(|c| {
        c.message_rate = 1;
        c.message_burst = 3;
    });
    let mut s = raw_ws(server.addr);
    let mut bytes = Vec::new();
    for i in 0..4 {
        bytes.extend(client_frame(
            OP_TEXT,
            format!(r#"{{"type":"ping","id":{i}}}"#).as_bytes(),
        ));
    }
    s.write_all(&bytes).unwrap();
    for i in 0..3 {
        assert_eq!(raw_expect(&mut s, "pong")["id"], i);
    }
    // The refusal names the request it refuses, so the client knows what to send again.
    let refused = raw_expect(&mut s, "error");
    assert_eq!(refused["data"]["code"], "rate_limited");
    assert_eq!(refused["id"], 3);
    let mut flood = Vec::new();
    for _ in 0..10 {
        flood.extend(client_frame(OP_TEXT, br#"{"type":"ping"}"#));
    }
    s.write_all(&flood).unwrap();
    assert_eq!(raw_close_code(&mut s), 4029);
}

#[test]
fn a_reader_that_stalls_is_closed_4008_while_another_gets_everything() {
    let server = TestServer::scripted_with(|c| {
        c.out_buffer_cap = 256 * 1024;
        c.close_timeout = Dur(Duration::from_secs(30));
    });
    let mut stalled = raw_ws(server.addr);
    stalled
        .write_all(&client_frame(OP_TEXT, br#"{"type":"subscribe"}"#))
        .unwrap();
    raw_skip_to(&mut stalled, "subscribed");
    let mut healthy = connect(&server);
    subscribe(&mut healthy, json!({}));
    // About 18 MB in all: more than loopback's socket buffers hold for the stalled reader.
    let total: u64 = 8000;
    let padding = "X".repeat(2000);
    let mut next_seq = None;
    let mut received = 0;
    let mut read_one = |healthy: &mut Ws| {
        let msg = next_non_status(healthy);
        let seq = msg["data"]["seq"]
            .as_u64()
            .unwrap_or_else(|| panic!("{msg}"));
        assert_eq!(next_seq.unwrap_or(seq), seq, "gap or duplicate");
        next_seq = Some(seq + 1);
    };
    for i in 0..total {
        let mut r = result(
            &format!("S{}{padding}", i % 50),
            Scan::Firehose,
            EventKind::Update,
        );
        r.score = i as f64;
        server.push(r);
        // Keep the healthy reader close behind.
        while received + 5 < i {
            read_one(&mut healthy);
            received += 1;
        }
    }
    while received < total {
        read_one(&mut healthy);
        received += 1;
    }
    eventually("the slow consumer close", || {
        metric(server.addr, "scanstream_slow_consumer_closes_total") == 1.0
    });
    // Reading now: everything queued before the cut, then slow_consumer, then 4008.
    assert_eq!(
        raw_skip_to(&mut stalled, "error")["data"]["code"],
        "slow_consumer"
    );
    assert_eq!(raw_close_code(&mut stalled), 4008);
}

#[test]
fn pongs_to_a_client_that_never_reads_are_capped_with_4008() {
    let server = TestServer::scripted_with(|c| {
        c.out_buffer_cap = 64 * 1024;
        c.message_rate = 1_000_000;
    });
    let mut s = raw_ws(server.addr);
    let mut writer = s.try_clone().unwrap();
    let pinger = std::thread::spawn(move || {
        let ping = client_frame(OP_PING, &[b'p'; 125]);
        let batch: Vec<u8> = ping
            .iter()
            .copied()
            .cycle()
            .take(ping.len() * 256)
            .collect();
        // At most 40 MB, far past loopback's buffers plus the cap; stops when cut off.
        for _ in 0..1200 {
            if writer.write_all(&batch).is_err() {
                return;
            }
        }
    });
    eventually("the slow consumer close", || {
        metric(server.addr, "scanstream_slow_consumer_closes_total") == 1.0
    });
    assert!(metric(server.addr, "scanstream_out_buffer_bytes") < 1024.0 * 1024.0);
    assert_eq!(raw_close_code(&mut s), 4008);
    drop(s);
    pinger.join().unwrap();
}

#[test]
fn a_burst_of_results_does_not_cut_off_a_reader_that_keeps_up() {
    let server = TestServer::scripted_with(|c| c.out_buffer_cap = 64 * 1024);
    let mut ws = connect(&server);
    subscribe(&mut ws, json!({}));
    let n = 5000;
    for i in 0..n {
        server.push(result(
            &format!("B{}", i % 40),
            Scan::NewHigh,
            EventKind::Update,
        ));
    }
    for want in 1..=n {
        let msg = next_non_status(&mut ws);
        assert_eq!(msg["type"], "result", "{msg}");
        assert_eq!(msg["data"]["seq"], want);
    }
    assert_eq!(
        metric(server.addr, "scanstream_slow_consumer_closes_total"),
        0.0
    );
}

#[test]
fn a_result_is_not_sent_twice_while_another_subscription_replays() {
    // A small cap makes the replay take many turns, so live results arrive during it.
    let server = TestServer::scripted_with(|c| c.out_buffer_cap = 64 * 1024);
    let mut ws = connect(&server);
    let epoch = subscribe(&mut ws, json!({"subscription": "a"}))["epoch"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = 2000;
    for i in 0..before {
        server.push(result(
            &format!("R{}", i % 30),
            Scan::NewHigh,
            EventKind::Update,
        ));
    }
    for want in 1..=before {
        assert_eq!(next_non_status(&mut ws)["data"]["seq"], want);
    }
    send(
        &mut ws,
        json!({"type": "subscribe", "data": {"subscription": "b", "since": 0, "epoch": epoch}}),
    );
    let during = 50;
    for i in 0..during {
        server.push(result(&format!("L{i}"), Scan::NewHigh, EventKind::New));
    }
    assert_eq!(
        expect_message(&mut ws, "subscribed")["data"]["replayed"],
        before
    );
    for want in 1..=before + during {
        let msg = next_non_status(&mut ws);
        assert_eq!(msg["data"]["seq"], want, "{msg}");
        let subs = if want <= before {
            json!(["b"])
        } else {
            json!(["a", "b"])
        };
        assert_eq!(msg["data"]["subscriptions"], subs, "{msg}");
    }
}

#[test]
fn replacing_a_subscription_during_a_replay_keeps_its_held_back_results() {
    let server = TestServer::scripted_with(|c| c.out_buffer_cap = 64 * 1024);
    let mut ws = connect(&server);
    let epoch = subscribe(&mut ws, json!({"subscription": "l"}))["epoch"]
        .as_str()
        .unwrap()
        .to_owned();
    // About 11 MB: more than loopback's buffers take while the client does not read.
    let before = 5000;
    let padding = "X".repeat(2000);
    // In steps the reader keeps up with: a burst of 10 MB at a 64 KiB cap would race the
    // reader against the publisher, which is not what this test is about.
    for step in 0..20 {
        for i in step * 250..(step + 1) * 250 {
            let symbol = format!("R{}{padding}", i % 30);
            server.push(result(&symbol, Scan::NewHigh, EventKind::Update));
        }
        for want in step * 250 + 1..=(step + 1) * 250 {
            assert_eq!(next_non_status(&mut ws)["data"]["seq"], want);
        }
    }
    // Not reading from here on stalls the replay, so everything below happens during it.
    send(
        &mut ws,
        json!({"type": "subscribe", "data": {"subscription": "a", "since": 0, "epoch": epoch}}),
    );
    let during = 50;
    for i in 0..during {
        server.push(result(&format!("L{i}"), Scan::NewHigh, EventKind::New));
    }
    eventually("the results published", || {
        metric(server.addr, "scanstream_events_published_total") == (before + during) as f64
    });
    send(
        &mut ws,
        json!({"type": "subscribe", "data": {"subscription": "l"}}),
    );
    let mut replies = Vec::new();
    let mut want = 1;
    while want <= before + during {
        let msg = next_message(&mut ws);
        if msg["type"] != "result" {
            replies.push(msg["type"].as_str().unwrap().to_owned());
            continue;
        }
        assert_eq!(msg["data"]["seq"], want, "{msg}");
        let subs = if want <= before {
            json!(["a"])
        } else {
            json!(["a", "l"])
        };
        assert_eq!(msg["data"]["subscriptions"], subs, "{msg}");
        want += 1;
    }
    // The replacement's status came right after its reply, not after the replay.
    let pos = replies.iter().rposition(|r| r == "subscribed").unwrap();
    assert_eq!(
        replies.get(pos + 1).map(String::as_str),
        Some("status"),
        "{replies:?}"
    );
}

#[test]
fn replacing_the_only_subscription_does_not_count_a_second_subscriber() {
    let server = TestServer::scripted();
    let mut ws = connect(&server);
    for _ in 0..3 {
        subscribe(&mut ws, json!({"subscription": "a"}));
        assert_eq!(expect_message(&mut ws, "status")["data"]["subscribers"], 1);
    }
}

/// xorshift64: reproducible noise without a dependency.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn random_frames_never_hurt_the_server() {
    let server = TestServer::scripted_with(|c| c.max_message_bytes = 4096);
    let mut noise = Noise(0x9e37_79b9_7f4a_7c15);
    for round in 0..300 {
        let mut s = raw_ws(server.addr);
        let mut bytes = Vec::new();
        for _ in 0..(noise.next() % 6) {
            let kind = noise.next() % 4;
            let len = (noise.next() % 300) as usize;
            match kind {
                // A well-formed frame with a random opcode and payload.
                0 => bytes.extend(client_frame((noise.next() % 16) as u8, &noise.bytes(len))),
                // A text frame holding random JSON-ish text.
                1 => {
                    let text: String = noise
                        .bytes(len)
                        .iter()
                        .map(|b| char::from(b' ' + b % 95))
                        .collect();
                    bytes.extend(client_frame(
                        OP_TEXT,
                        format!("{{\"type\":\"{text}\"}}").as_bytes(),
                    ));
                }
                // Raw noise.
                2 => bytes.extend(noise.bytes(len)),
                // A frame cut short.
                _ => {
                    let f = client_frame(OP_TEXT, &noise.bytes(len + 10));
                    bytes.extend_from_slice(&f[..f.len() / 2]);
                }
            }
        }
        let _ = s.write_all(&bytes);
        if round % 2 == 0 {
            // Half of them linger to read what the server says; the rest vanish.
            s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            let _ = std::io::Read::read(&mut s, &mut [0; 4096]);
        }
    }
    assert_eq!(http(server.addr, "GET", "/healthz", None).status, 200);
    let mut ws = connect(&server);
    subscribe(&mut ws, json!({}));
    server.push(result("AFTER", Scan::NewHigh, EventKind::New));
    assert_eq!(next_non_status(&mut ws)["data"]["symbol"], "AFTER");
}

#[test]
fn subscribes_in_one_write_count_the_connection_once() {
    let server = TestServer::scripted();
    let mut s = raw_ws(server.addr);
    let mut bytes = Vec::new();
    for name in ["a", "a", "b"] {
        let msg = format!(r#"{{"type":"subscribe","data":{{"subscription":"{name}"}}}}"#);
        bytes.extend(client_frame(OP_TEXT, msg.as_bytes()));
    }
    bytes.extend(client_frame(
        OP_TEXT,
        br#"{"type":"unsubscribe","data":{"subscription":"a"}}"#,
    ));
    bytes.extend(client_frame(
        OP_TEXT,
        br#"{"type":"unsubscribe","data":{"subscription":"b"}}"#,
    ));
    bytes.extend(client_frame(
        OP_TEXT,
        br#"{"type":"subscribe","data":{"subscription":"c"}}"#,
    ));
    s.write_all(&bytes).unwrap();
    let mut counts = Vec::new();
    while counts.len() < 4 {
        let v = read_frame(&mut s).json();
        if v["type"] == "status" {
            counts.push(v["data"]["subscribers"].as_u64().unwrap());
        }
    }
    assert_eq!(counts, [1, 1, 1, 1]);
}

on_two_edges!(
    protocol_violations_close_with_their_codes,
    a_frame_written_one_byte_at_a_time_is_understood,
    two_messages_in_one_write_get_two_replies_in_order,
    frames_sent_with_the_handshake_are_not_lost,
    client_pings_are_answered_and_close_is_echoed,
    server_pings_and_closes_a_silent_client,
    answering_pings_keeps_a_client_open,
    message_rate_limit_then_close_4029,
    a_reader_that_stalls_is_closed_4008_while_another_gets_everything,
    pongs_to_a_client_that_never_reads_are_capped_with_4008,
    a_burst_of_results_does_not_cut_off_a_reader_that_keeps_up,
    a_result_is_not_sent_twice_while_another_subscription_replays,
    replacing_a_subscription_during_a_replay_keeps_its_held_back_results,
    replacing_the_only_subscription_does_not_count_a_second_subscriber,
    random_frames_never_hurt_the_server,
    subscribes_in_one_write_count_the_connection_once,
);
