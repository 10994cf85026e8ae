//! Overload (PROTOCOL.md): an edge whose input waits longer than `max_lag` skips the
//! results a later event of their key supersedes, and a table kept from what it
//! delivers still equals a fresh snapshot, even one taken in the middle of a backlog;
//! with `max_lag = 0` it delivers everything.
//!
//! The edge is held back the way a busy one is: a scripted source publishes a burst
//! far faster than the edge can fan it out to its many subscribers, each a client
//! library connection keeping a table.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::tables::*;
use common::*;
use crossbeam_channel::Receiver;
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use scanstream::client::{Client, Event, TableHandle};
use scanstream::config::Dur;
use scanstream::protocol::FilterSpec;
use scanstream::{EventKind, Scan};
use serde_json::{Value, json};

/// Results in a burst.
const BURST: u64 = 4_000;
/// Bursts, each followed by a check of every table.
const ROUNDS: usize = 5;
/// Clients, each with a table.
const CLIENTS: usize = 16;

/// A server whose edge skips what waited longer than `max_lag` (never with 0).
fn server(max_lag: Duration) -> TestServer {
    TestServer::scripted_with(|c| {
        c.max_lag = Dur(max_lag);
        c.history_size = 2 * ROUNDS * BURST as usize;
        // The clients read as fast as they can; no one is closed for being slow.
        c.out_buffer_cap = 64 << 20;
        // A client asks for a snapshot after every slice of a burst.
        c.message_rate = 10_000;
    })
}

/// What each client does: its filters, and the table it keeps.
struct Reader {
    filters: Value,
    /// Kept open while the test reads.
    _client: Client,
    events: Receiver<Event>,
    table: TableHandle,
}

fn readers(server: &TestServer) -> Vec<Reader> {
    (0..CLIENTS)
        .map(|i| {
            // Half filter by score, so updates leave them.
            let filters = if i % 2 == 0 {
                json!({})
            } else {
                json!({"min_score": 2})
            };
            let (client, events) = client(server);
            let spec: FilterSpec = serde_json::from_value(filters.clone()).unwrap();
            let table = subscribe_table(&client, "t", spec);
            wait_for(&events, "the snapshot", |ev| {
                matches!(ev, Event::Snapshot { .. }).then_some(())
            });
            Reader {
                filters,
                _client: client,
                events,
                table,
            }
        })
        .collect()
}

/// The scripted source's side: the conditions open now, and the results published.
struct Feed {
    rng: Xoshiro256PlusPlus,
    /// Per symbol: is its condition open?
    open: Vec<bool>,
    published: u64,
    /// Every result published, `seq` 1 first: (symbol, event, score).
    log: Vec<(String, EventKind, f64)>,
}

impl Feed {
    /// A feed over `symbols` symbols.
    fn new(symbols: usize) -> Feed {
        Feed {
            rng: Xoshiro256PlusPlus::seed_from_u64(19),
            open: vec![false; symbols],
            published: 0,
            log: Vec::new(),
        }
    }

    /// Publishes `n` results over its symbols, each condition opening, moving up and
    /// down across `min_score` 2 and closing; then one more, a `new` nothing supersedes
    /// and every filter takes, whose `seq` it returns.
    fn burst(&mut self, server: &TestServer, n: u64) -> u64 {
        for _ in 0..n {
            let rng = &mut self.rng;
            let i = rng.random_range(0..self.open.len());
            let kind = match self.open[i] {
                false => EventKind::New,
                true if rng.random_bool(0.15) => EventKind::Clear,
                true => EventKind::Update,
            };
            self.open[i] = kind != EventKind::Clear;
            let score = [1.0, 2.5, 4.0][rng.random_range(0..3)];
            self.push(server, format!("S{i}"), kind, score);
        }
        let last = format!("LAST{}", self.published + 1);
        self.push(server, last, EventKind::New, 5.0);
        self.published
    }

    fn push(&mut self, server: &TestServer, symbol: String, kind: EventKind, score: f64) {
        let mut r = result(&symbol, Scan::VolumeSpike, kind);
        r.score = score;
        server.push(r);
        self.log.push((symbol, kind, score));
        self.published += 1;
    }

    /// The rows open after result `seq`, as (`seq`, score) by symbol.
    fn rows_at(&self, seq: u64) -> Rows {
        let mut rows = Rows::new();
        for (at, (symbol, kind, score)) in (1..=seq).zip(&self.log) {
            match kind {
                EventKind::Clear => rows.remove(symbol),
                _ => rows.insert(symbol.clone(), (at, *score)),
            };
        }
        rows
    }
}

/// A row's (`seq`, score).
type Row = (u64, f64);

/// A table's rows by symbol (every result is of one scan).
type Rows = HashMap<String, Row>;

/// A `snapshot` message's rows.
fn snapshot_of(msg: &Value) -> Rows {
    rows_of_snapshot(msg)
        .into_iter()
        .map(|((symbol, _), r)| (symbol, (r["seq"].as_u64().unwrap(), score(&r))))
        .collect()
}

/// Applies a `result` message to the table of subscription `name`.
fn apply(rows: &mut Rows, msg: &Value, name: &str) {
    let d = &msg["data"];
    let names = |k: &str| d[k].as_array().is_some_and(|a| a.iter().any(|n| n == name));
    let symbol = d["symbol"].as_str().expect("a symbol").to_owned();
    if names("left") || (names("subscriptions") && d["event"] == "clear") {
        rows.remove(&symbol);
    } else if names("subscriptions") {
        rows.insert(symbol, (d["seq"].as_u64().unwrap(), score(d)));
    }
}

/// The first few rows where `a` and `b` differ: (symbol, row in a, row in b).
fn differences(a: &Rows, b: &Rows) -> Vec<(String, Option<Row>, Option<Row>)> {
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .take(5)
        .map(|k| (k.clone(), a.get(k).copied(), b.get(k).copied()))
        .collect()
}

fn score(v: &Value) -> f64 {
    v["score"].as_f64().expect("a score")
}

/// Reads a client's events up to result `last`; the `seq`s it was sent, in order.
#[track_caller]
fn seqs_up_to(events: &Receiver<Event>, last: u64) -> Vec<u64> {
    let mut seqs = Vec::new();
    while seqs.last() != Some(&last) {
        let seq = wait_for(events, &format!("result {last}"), |ev| match ev {
            Event::Result(r) => Some(r.seq),
            Event::Disconnected { .. } => panic!("disconnected: {ev:?}"),
            _ => None,
        });
        seqs.push(seq);
    }
    seqs
}

/// Checks every reader against a fresh snapshot after the burst; the `seq`s each read.
fn read_and_check(server: &TestServer, readers: &[Reader], last: u64) -> Vec<Vec<u64>> {
    readers
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let seqs = seqs_up_to(&r.events, last);
            assert!(
                seqs.windows(2).all(|w| w[0] < w[1]),
                "client {i}: a seq twice or out of order"
            );
            assert_eq!(
                rows_of(&r.table),
                snapshot_values(server, r.filters.clone()),
                "client {i}'s table ({})",
                r.filters
            );
            seqs
        })
        .collect()
}

#[test]
fn a_lagging_edge_conflates_and_every_table_still_equals_a_fresh_snapshot() {
    let server = server(Duration::from_millis(2));
    let readers = readers(&server);
    let mut feed = Feed::new(12);
    let mut read = 0;
    let mut last = 0;
    for _ in 0..ROUNDS {
        last = feed.burst(&server, BURST);
        read += read_and_check(&server, &readers, last)[0].len();
    }
    let conflated = metric(server.addr, "scanstream_results_conflated_total");
    assert!(conflated > 0.0, "the edge never lagged: it tests nothing");
    // An unfiltered client misses exactly the skipped results.
    assert_eq!(read as f64 + conflated, last as f64);
    // The history keeps every one: a resume from the start replays them all.
    let mut ws = connect(&server);
    subscribe(&mut ws, json!({"subscription": "r", "since": 0}));
    let mut replayed = 0;
    while replayed < last {
        let msg = next_non_status(&mut ws);
        if msg["type"] == "result" {
            replayed += 1;
            assert_eq!(msg["data"]["seq"], replayed);
        }
    }
}

#[test]
fn with_max_lag_zero_every_result_is_delivered() {
    let server = server(Duration::ZERO);
    let readers = readers(&server);
    let mut feed = Feed::new(12);
    let mut first = 1;
    for _ in 0..ROUNDS {
        let last = feed.burst(&server, BURST);
        for (i, seqs) in read_and_check(&server, &readers, last).iter().enumerate() {
            if i % 2 == 0 {
                assert!(
                    seqs.iter().copied().eq(first..=last),
                    "client {i} missed some"
                );
            }
        }
        first = last + 1;
    }
    assert_eq!(
        metric(server.addr, "scanstream_results_conflated_total"),
        0.0
    );
}

/// While the edge sends a backlog, a result it skipped is already in the history but
/// what supersedes it is not yet sent. A snapshot asked for then, on the connection that
/// keeps a table, equals that table all the same: it shows the rows as live subscribers
/// hold them.
#[test]
fn a_snapshot_taken_while_a_backlog_goes_out_equals_the_live_table() {
    let server = server(Duration::from_millis(2));
    // The fan-out that holds the edge back.
    let _load = readers(&server);
    let mut ws = connect(&server);
    subscribe(&mut ws, json!({"subscription": "live", "snapshot": true}));
    let mut table = snapshot_of(&expect_message(&mut ws, "snapshot"));
    // More keys than one turn sends once conflated, so the edge reads its sockets while
    // a backlog is half sent.
    let mut feed = Feed::new(3_000);
    // Snapshots compared, and those taken while the stream was behind the history.
    let (mut checks, mut behind) = (0, 0);
    for _ in 0..ROUNDS {
        let last = feed.burst(&server, 2 * BURST);
        let (mut seen, mut since_asked, mut asking) = (0, 0, false);
        while seen < last || asking {
            let msg = next_non_status(&mut ws);
            match msg["type"].as_str() {
                Some("result") => {
                    apply(&mut table, &msg, "live");
                    seen = msg["data"]["seq"].as_u64().unwrap();
                    since_asked += 1;
                    if !asking && since_asked >= 20 {
                        let data = json!({"subscription": "check", "snapshot": true});
                        send(&mut ws, json!({"type": "subscribe", "data": data}));
                        asking = true;
                    }
                }
                Some("snapshot") => {
                    let at = msg["data"]["seq"].as_u64().unwrap();
                    let diff = differences(&table, &snapshot_of(&msg));
                    assert!(
                        diff.is_empty(),
                        "the live table at {at}, against the snapshot: {diff:?}"
                    );
                    behind += usize::from(table != feed.rows_at(at));
                    checks += 1;
                    let data = json!({"subscription": "check"});
                    send(&mut ws, json!({"type": "unsubscribe", "data": data}));
                    (since_asked, asking) = (0, false);
                }
                Some("subscribed" | "unsubscribed" | "alert") => {}
                _ => panic!("unexpected {msg}"),
            }
        }
    }
    assert!(
        behind > 0,
        "none of {checks} snapshots came while skipped results waited: it tests nothing"
    );
}
