//! The client library against real servers on 127.0.0.1: reconnects, backoff, lossless
//! resume through a proxy that cuts connections, the offline queue and its pacing to the
//! server's message rate, gaps, liveness, the live table, close codes, and a crowd of
//! clients spreading their returns.

mod common;

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::client::{
    assert_lossless_across_cuts, client_config, start_client, subscribe_all, subscribed,
};
use common::proxy::Proxy;
use common::{TIMEOUT, TestServer, metric, result, wait_for};
use crossbeam_channel::Receiver;
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use scanstream::client::{
    Backoff, Client, ClientConfig, ClientError, Event, ManualClock, State, SubscriptionOptions,
};
use scanstream::config::Dur;
use scanstream::protocol::FilterSpec;
use scanstream::{EventKind, Scan, SourceSpec};

/// A URL on a port with nothing behind it (the port was free a moment ago).
fn nothing_listening() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    common::stream_url(listener.local_addr().unwrap())
}

fn state(events: &Receiver<Event>, what: &str, want: impl Fn(&State) -> bool) -> State {
    wait_for(events, what, |ev| match ev {
        Event::State(s) if want(s) => Some(s.clone()),
        _ => None,
    })
}

#[test]
fn reconnects_when_the_server_comes_back_on_the_same_port() {
    let server = TestServer::scripted();
    let addr = server.addr;
    let (client, events) = start_client(client_config(&server.url()));
    subscribe_all(&client, "main");
    state(&events, "connected", |s| *s == State::Connected);
    let first = subscribed(&events);
    server.push(result("AAPL", Scan::PriceChange, EventKind::New));
    let r = wait_for(&events, "a result", |ev| match ev {
        Event::Result(r) => Some(r.clone()),
        _ => None,
    });
    assert_eq!((r.seq, r.symbol.as_str()), (first.seq + 1, "AAPL"));

    server.stop().unwrap();
    let code = wait_for(&events, "disconnected", |ev| match ev {
        Event::Disconnected { code, .. } => Some(*code),
        _ => None,
    });
    assert_eq!(code, 1001, "a server shutting down says going away");
    state(&events, "reconnecting", |s| {
        matches!(s, State::Reconnecting { .. })
    });

    // Refused connections meanwhile grow the backoff; the server then returns.
    thread::sleep(Duration::from_millis(300));
    let server = TestServer::scripted_with(|c| c.listen = addr);
    state(&events, "connected again", |s| *s == State::Connected);
    // A new run: the old position is gone, and the client says so.
    let gap = wait_for(&events, "a gap", |ev| match ev {
        Event::Gap { since, .. } => Some(*since),
        _ => None,
    });
    assert_eq!(gap, r.seq);
    let again = subscribed(&events);
    assert!(!again.recovered);
    server.push(result("MSFT", Scan::NewHigh, EventKind::New));
    let r = wait_for(&events, "a result after the restart", |ev| match ev {
        Event::Result(r) => Some(r.clone()),
        _ => None,
    });
    assert_eq!(r.symbol, "MSFT");
    assert_eq!(r.subscriptions, ["main"]);
    client.close();
    let closed = state(&events, "closed", |s| matches!(s, State::Closed { .. }));
    assert_eq!(
        closed,
        State::Closed {
            code: None,
            reason: "closed by the client".into()
        }
    );
}

#[test]
fn backoff_follows_its_schedule_on_an_injected_clock_and_rng() {
    // Every attempt is refused at once.
    let clock = Arc::new(ManualClock::default());
    let mut c = client_config(&nothing_listening());
    c.backoff = Backoff::default();
    c.jitter_seed = Some(42);
    c.clock = clock.clone();
    let (client, events) = start_client(c);
    let mut delays = Vec::new();
    while delays.len() < 12 {
        if let State::Reconnecting { attempt, delay } = state(&events, "reconnecting", |s| {
            matches!(s, State::Reconnecting { .. })
        }) {
            assert_eq!(attempt as usize, delays.len() + 1);
            delays.push(delay);
        }
    }
    client.close();

    // The same seed drawn by hand gives the same schedule.
    let backoff = Backoff::default();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(42);
    for (i, delay) in delays.iter().enumerate() {
        let attempt = i as u32 + 1;
        assert_eq!(
            *delay,
            backoff.delay(attempt, &mut rng),
            "attempt {attempt}"
        );
        assert!(*delay <= backoff.ceiling(attempt));
    }
    let ceilings: Vec<f64> = (1..=12).map(|n| backoff.ceiling(n).as_secs_f64()).collect();
    assert_eq!(&ceilings[..7], [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 20.0]);
    // The client waited on the injected clock: it moved by at least the first eleven
    // delays (the twelfth may be cut short by the close).
    let waited: Duration = delays[..11].iter().sum();
    assert!(
        clock.elapsed() >= waited,
        "{:?} < {waited:?}",
        clock.elapsed()
    );
}

#[test]
fn resume_is_lossless_across_random_cuts() {
    let server = TestServer::firehose(2000);
    let proxy = Proxy::new(server.addr);
    assert_lossless_across_cuts(&proxy, client_config(&proxy.url()));
}

#[test]
fn offline_requests_wait_in_order_and_subscriptions_are_not_replayed() {
    let server = TestServer::scripted();
    let addr = server.addr;
    let proxy = Proxy::new(addr);
    let mut c = client_config(&proxy.url());
    c.queue_capacity = 3;
    let (client, events) = start_client(c);
    subscribe_all(&client, "main");
    subscribed(&events);
    server.stop().unwrap();
    state(&events, "reconnecting", |s| {
        matches!(s, State::Reconnecting { .. })
    });
    let before = proxy.sent_types().len();

    // Offline: requests queue up to the capacity, then the caller hears it.
    let ack1 = client.ack("a-1").unwrap();
    let scan = client.scan(&["AAPL"]).unwrap();
    let ack2 = client.ack("a-2").unwrap();
    assert!(matches!(
        client.ack("a-3"),
        Err(ClientError::QueueFull { capacity: 3 })
    ));
    // Subscription changes are desired state, not queued commands.
    let narrow = FilterSpec {
        scans: Some(vec!["new_high".into()]),
        ..FilterSpec::default()
    };
    client.set_filters("main", FilterSpec::default()).unwrap();
    client.set_filters("main", narrow.clone()).unwrap();
    subscribe_all(&client, "other");
    client.unsubscribe("other").unwrap();

    let server = TestServer::scripted_with(|c| c.listen = addr);
    // Each is answered: a scan at once (`queued`), an ack once the producer has it, so
    // the answers may come in another order than the requests, which went out in order.
    let mut answered = std::collections::BTreeSet::new();
    while answered.len() < 3 {
        let id = wait_for(&events, "replies", |ev| match ev {
            Event::Reply { id, .. } => Some(*id),
            Event::Error { id: Some(id), .. } => Some(*id),
            _ => None,
        });
        answered.insert(id);
    }
    assert_eq!(
        answered,
        [ack1, scan, ack2].into(),
        "every request answered"
    );

    let after: Vec<_> = proxy.sent_types()[before..].to_vec();
    let types: Vec<&str> = after.iter().map(|m| m["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["subscribe", "ack", "scan", "ack"]);
    let sub = &after[0]["data"];
    assert_eq!(sub["subscription"], "main");
    assert_eq!(sub["filters"], serde_json::to_value(&narrow).unwrap());
    assert!(sub["since"].is_u64() && sub["epoch"].is_string(), "{sub}");
    drop(server);
}

#[test]
fn a_gap_is_reported_when_the_history_is_too_short() {
    let server = TestServer::with(|c| {
        c.source = SourceSpec::Firehose { rate: 2000 };
        c.history_size = 50;
    });
    let proxy = Proxy::new(server.addr);
    let (client, events) = start_client(client_config(&proxy.url()));
    subscribe_all(&client, "all");
    subscribed(&events);
    let last = wait_for(&events, "results", |ev| match ev {
        Event::Result(r) if r.seq > 100 => Some(r.seq),
        _ => None,
    });
    // Away for long enough that far more than 50 results pass.
    proxy.refuse.store(true, Ordering::SeqCst);
    proxy.cut();
    thread::sleep(Duration::from_millis(400));
    proxy.refuse.store(false, Ordering::SeqCst);
    let (since, epoch, server_epoch) = wait_for(&events, "a gap", |ev| match ev {
        Event::Gap {
            since,
            epoch,
            server_epoch,
            ..
        } => Some((*since, epoch.clone(), server_epoch.clone())),
        _ => None,
    });
    assert!(since >= last, "the gap starts after what was delivered");
    assert_eq!(epoch, server_epoch, "same run, too short a history");
    let resumed = subscribed(&events);
    assert!(!resumed.recovered);
    // Results flow again, from the oldest the server kept.
    let next = wait_for(&events, "results after the gap", |ev| match ev {
        Event::Result(r) => Some(r.seq),
        _ => None,
    });
    assert!(
        next > since + 1,
        "{next} should skip what was lost after {since}"
    );
}

#[test]
fn a_silent_server_is_given_up_and_the_connection_replaced() {
    let server = TestServer::with(|c| c.ping_interval = Dur(Duration::from_millis(100)));
    let proxy = Proxy::new(server.addr);
    let mut c = client_config(&proxy.url());
    c.server_ping_interval = Duration::from_millis(100);
    c.liveness_margin = Duration::from_millis(300);
    let (client, events) = start_client(c);
    state(&events, "connected", |s| *s == State::Connected);
    // Pings keep a healthy connection up past the liveness limit.
    thread::sleep(Duration::from_millis(800));
    assert_eq!(client.state(), State::Connected);
    proxy.freeze();
    let (code, reason) = wait_for(&events, "a dead connection", |ev| match ev {
        Event::Disconnected { code, reason } => Some((*code, reason.clone())),
        _ => None,
    });
    assert_eq!(code, 1006);
    assert!(reason.contains("nothing heard"), "{reason}");
    state(&events, "connected again", |s| *s == State::Connected);
}

#[test]
fn the_live_table_follows_the_snapshot_and_events() {
    let server = TestServer::scripted();
    let (client, events) = start_client(client_config(&server.url()));
    // Two opportunities open before the client subscribes.
    server.push(result("AAPL", Scan::PriceChange, EventKind::New));
    server.push(result("MSFT", Scan::VolumeSpike, EventKind::New));
    thread::sleep(Duration::from_millis(100));
    let table = client
        .subscribe("main", FilterSpec::default(), SubscriptionOptions::table())
        .unwrap()
        .unwrap();
    let rows = wait_for(&events, "a snapshot", |ev| match ev {
        Event::Snapshot { results, .. } => Some(results.len()),
        _ => None,
    });
    assert_eq!(rows, 2);
    assert_eq!(table.lock().len(), 2);

    server.push(result("AAPL", Scan::PriceChange, EventKind::Clear));
    let mut update = result("MSFT", Scan::VolumeSpike, EventKind::Update);
    update.score = 9.5;
    server.push(update);
    let last = wait_for(&events, "the update", |ev| match ev {
        Event::Result(r) if r.event == EventKind::Update => Some(r.seq),
        _ => None,
    });
    let t = table.lock();
    assert_eq!(t.len(), 1);
    assert_eq!(t.get("MSFT", "volume_spike").map(|r| r.score), Some(9.5));
    assert_eq!(t.seq, last);
}

#[test]
fn close_codes_decide_whether_to_come_back() {
    // A bare WebSocket server that closes each connection with the next code.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/stream", listener.local_addr().unwrap());
    let codes = [4000u16, 1001, 4499, 4500];
    thread::spawn(move || {
        for (stream, code) in listener.incoming().zip(codes) {
            let mut ws = tungstenite::accept(stream.unwrap()).unwrap();
            let _ = ws.close(Some(tungstenite::protocol::CloseFrame {
                code: code.into(),
                reason: "".into(),
            }));
            while ws.read().is_ok() {}
        }
    });
    let (_client, events) = start_client(client_config(&url));
    let mut seen = Vec::new();
    let end = loop {
        match events.recv_timeout(TIMEOUT).expect("events") {
            Event::Disconnected { code, .. } => seen.push(code),
            Event::State(s @ State::Closed { .. }) => break s,
            _ => {}
        }
    };
    assert_eq!(seen, codes, "reconnected after each code until 4500");
    assert_eq!(
        end,
        State::Closed {
            code: Some(4500),
            reason: "unauthorized".into()
        }
    );
}

#[test]
fn two_hundred_clients_spread_their_return_after_a_restart() {
    const CLIENTS: usize = 200;
    let server = TestServer::scripted();
    let addr = server.addr;
    let url = server.url();
    // Each client records when it came back and the delay it drew.
    let returns: Arc<Mutex<Vec<(Instant, Duration)>>> = Arc::default();
    let up = Arc::new(AtomicUsize::new(0));
    let clients: Vec<Client> = (0..CLIENTS)
        .map(|i| {
            let mut c = ClientConfig::new(url.as_str());
            c.jitter_seed = Some(i as u64);
            let (returns, up) = (returns.clone(), up.clone());
            let mut drawn = None;
            let mut connects = 0;
            c.on_state = Some(Box::new(move |s: &State| match s {
                State::Reconnecting { delay, .. } => drawn = drawn.or(Some(*delay)),
                State::Connected => {
                    connects += 1;
                    if connects == 1 {
                        up.fetch_add(1, Ordering::SeqCst);
                    } else if connects == 2 {
                        let delay = drawn.unwrap_or_default();
                        returns.lock().unwrap().push((Instant::now(), delay));
                    }
                }
                _ => {}
            }));
            Client::start(c).unwrap()
        })
        .collect();
    let deadline = Instant::now() + TIMEOUT;
    while up.load(Ordering::SeqCst) < CLIENTS && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(up.load(Ordering::SeqCst), CLIENTS, "every client connected");
    let down = Instant::now();
    server.stop().unwrap();
    let _server = TestServer::scripted_with(|c| c.listen = addr);
    let deadline = Instant::now() + TIMEOUT;
    while returns.lock().unwrap().len() < CLIENTS && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    let returns = returns.lock().unwrap().clone();
    assert_eq!(returns.len(), CLIENTS, "every client came back");

    let mut back: Vec<f64> = returns
        .iter()
        .map(|(at, _)| at.duration_since(down).as_secs_f64())
        .collect();
    back.sort_by(f64::total_cmp);
    let pct = |p: f64| back[((back.len() - 1) as f64 * p) as usize];
    let drawn: Vec<f64> = returns.iter().map(|(_, d)| d.as_secs_f64()).collect();
    let mean = drawn.iter().sum::<f64>() / drawn.len() as f64;
    let sd = (drawn.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / drawn.len() as f64).sqrt();
    // Saved for the record: the spread the jitter gives a crowd.
    eprintln!(
        "200 clients back after: p10 {:.3} s, p50 {:.3} s, p90 {:.3} s, max {:.3} s; \
         drawn delays mean {mean:.3} s, sd {sd:.3} s",
        pct(0.1),
        pct(0.5),
        pct(0.9),
        pct(1.0)
    );
    // Full jitter over [0, 0.5 s]: uniform, mean 0.25 s and sd 0.144 s.
    assert!(drawn.iter().all(|d| *d <= 0.5));
    assert!((0.2..0.3).contains(&mean), "mean delay {mean}");
    assert!(sd > 0.11, "sd {sd}");
    // Returns follow the delays: a tenth to nine tenths spans most of the window.
    assert!(pct(0.9) - pct(0.1) > 0.25, "returns bunched: {back:?}");
    drop(clients);
}

#[test]
fn closing_does_not_hang_on_a_full_events_channel() {
    // The client keeps reporting reconnects into a one-slot channel nobody reads.
    let mut c = client_config(&nothing_listening());
    c.events = Some(1);
    let client = Client::start(c).unwrap();
    thread::sleep(Duration::from_millis(300));
    let (done_tx, done) = std::sync::mpsc::channel();
    thread::spawn(move || {
        client.close();
        let _ = done_tx.send(());
    });
    done.recv_timeout(TIMEOUT).expect("close returned");
}

/// What became of a batch of requests queued while the client could not connect.
#[derive(Debug, Default)]
struct Drained {
    /// The request ids, in the order they were queued.
    ids: Vec<u64>,
    /// The final answer's type or error code, by request id.
    answered: HashMap<u64, String>,
    /// `rate_limited` refusals the caller was told of, by request id.
    refused: HashMap<u64, usize>,
    /// Close codes of the connections that ended meanwhile.
    closes: Vec<u16>,
    /// How often each request went out on the wire.
    sent: HashMap<u64, usize>,
}

/// Queues `n` acks of unknown alerts (each answered `not_found`) while the proxy keeps
/// the client from the server, behind one subscription, then lets it through. Reads
/// events until every request has an answer other than `rate_limited`, or 30 s pass, or
/// the server closes the connection for its rate.
fn queue_then_connect(proxy: &Proxy, c: ClientConfig, n: usize) -> Drained {
    proxy.refuse.store(true, Ordering::SeqCst);
    let (client, events) = start_client(c);
    // Sent first on the connect, and counted by the server like any message.
    subscribe_all(&client, "main");
    state(&events, "a refused attempt", |s| {
        matches!(s, State::Reconnecting { .. })
    });
    let mut out = Drained {
        ids: (0..n)
            .map(|i| client.ack(&format!("a-{i}")).unwrap())
            .collect(),
        ..Drained::default()
    };
    proxy.refuse.store(false, Ordering::SeqCst);

    let deadline = Instant::now() + Duration::from_secs(30);
    while out.answered.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(ev) = events.recv_timeout(left) else {
            break;
        };
        match ev {
            Event::Error {
                code, id: Some(id), ..
            } if code == "rate_limited" => *out.refused.entry(id).or_default() += 1,
            Event::Error {
                code, id: Some(id), ..
            } => {
                out.answered.insert(id, code);
            }
            Event::Reply { id, kind, .. } => {
                out.answered.insert(id, kind);
            }
            Event::Disconnected { code, .. } => {
                out.closes.push(code);
                if code == 4029 {
                    break;
                }
            }
            _ => {}
        }
    }
    client.close();
    for m in proxy.sent_types() {
        if m["type"] == "ack" {
            *out.sent.entry(m["id"].as_u64().unwrap()).or_default() += 1;
        }
    }
    out
}

/// Every request answered `not_found`, on one connection that was never closed for its
/// rate, and none refused: each went out once, and the server counted no refusal.
#[track_caller]
fn assert_drained_without_refusals(server: &TestServer, d: &Drained) {
    assert!(
        !d.closes.contains(&4029),
        "closed for its rate after {} answers",
        d.answered.len()
    );
    assert!(
        d.refused.is_empty(),
        "{} requests refused as rate_limited (one {} times)",
        d.refused.len(),
        d.refused.values().max().unwrap_or(&0)
    );
    assert_eq!(d.answered.len(), d.ids.len(), "every request answered");
    assert!(d.ids.iter().all(|id| d.answered[id] == "not_found"));
    assert_eq!(
        metric(server.addr, RATE_LIMITED),
        0.0,
        "the server refused nothing"
    );
    assert_eq!(d.sent.len(), d.ids.len());
    assert!(d.sent.values().all(|&k| k == 1), "a request went out twice");
    assert!(d.closes.is_empty(), "connections ended: {:?}", d.closes);
}

/// The server's count of `rate_limited` refusals.
const RATE_LIMITED: &str = "scanstream_protocol_errors_total{code=\"rate_limited\"}";

#[test]
fn a_thousand_queued_requests_drain_at_the_servers_rate_without_refusals() {
    // A faster limit than the default keeps the test short; the client is told the same.
    let server = TestServer::scripted_with(|c| {
        c.message_rate = 250;
        c.message_burst = 50;
    });
    let proxy = Proxy::new(server.addr);
    let mut c = client_config(&proxy.url());
    c.message_rate = 250;
    c.message_burst = 50;
    let drained = queue_then_connect(&proxy, c, 1000);
    assert_drained_without_refusals(&server, &drained);
}

#[test]
fn queued_requests_past_the_default_burst_drain_without_refusals() {
    // The server's defaults (50/s, burst 100) and the client's agree.
    let server = TestServer::scripted();
    let proxy = Proxy::new(server.addr);
    let drained = queue_then_connect(&proxy, client_config(&proxy.url()), 160);
    assert_drained_without_refusals(&server, &drained);
}

#[test]
fn a_request_refused_for_the_rate_is_sent_again_after_a_hold_and_not_reported() {
    // The client believes in a slightly larger burst than the server gives: its first
    // burst overshoots by a few requests, which the server refuses. With 22 requests the
    // refused ones are all that is left to send; with 100 the rest wait behind them.
    for n in [22, 100] {
        // No ping comes within the test's wait: only the client's own pacing timer can
        // send the refused requests again.
        let server = TestServer::scripted_with(|c| {
            c.message_rate = 100;
            c.message_burst = 20;
            c.ping_interval = Dur(Duration::from_secs(60));
        });
        let proxy = Proxy::new(server.addr);
        let mut c = client_config(&proxy.url());
        c.server_ping_interval = Duration::from_secs(60);
        c.message_rate = 100;
        c.message_burst = 25;
        let d = queue_then_connect(&proxy, c, n);
        let refusals = metric(server.addr, RATE_LIMITED);
        assert!(refusals >= 1.0, "{n}: the server refused the overshoot");
        assert_eq!(d.refused, HashMap::new(), "{n}: refusals are not answers");
        assert_eq!(d.answered.len(), n, "{n}: every request answered");
        assert!(d.ids.iter().all(|id| d.answered[id] == "not_found"));
        assert!(
            d.closes.is_empty(),
            "{n}: connections ended: {:?}",
            d.closes
        );
        // Each refused request went out once more, after the hold; none was refused
        // twice.
        let twice = d.sent.values().filter(|&&k| k == 2).count();
        assert_eq!(twice as f64, refusals, "{n}: {:?}", d.sent);
        assert!(d.sent.values().all(|&k| k <= 2), "{n}: {:?}", d.sent);
    }
}
