//! Overload (PROTOCOL.md): an edge whose input waits longer than `max_lag` skips the
//! results a later event of their key supersedes, and a table kept from what it
//! delivers still equals a fresh snapshot; with `max_lag = 0` it delivers everything.
//!
//! The edge is held back the way a busy one is: a scripted source publishes a burst
//! far faster than the edge can fan it out to its many subscribers, each a client
//! library connection keeping a table.

mod common;

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
    open: [bool; 12],
    published: u64,
}

impl Feed {
    fn new() -> Feed {
        Feed {
            rng: Xoshiro256PlusPlus::seed_from_u64(19),
            open: [false; 12],
            published: 0,
        }
    }

    /// Publishes `n` results over a dozen symbols, each condition opening, moving up
    /// and down across `min_score` 2 and closing; then one more, a `new` nothing
    /// supersedes and every filter takes, whose `seq` it returns.
    fn burst(&mut self, server: &TestServer, n: u64) -> u64 {
        let rng = &mut self.rng;
        for _ in 0..n {
            let i = rng.random_range(0..self.open.len());
            let kind = match self.open[i] {
                false => EventKind::New,
                true if rng.random_bool(0.15) => EventKind::Clear,
                true => EventKind::Update,
            };
            self.open[i] = kind != EventKind::Clear;
            let mut r = result(&format!("S{i}"), Scan::VolumeSpike, kind);
            r.score = [1.0, 2.5, 4.0][rng.random_range(0..3)];
            server.push(r);
        }
        self.published += n + 1;
        let mut last = result(
            &format!("LAST{}", self.published),
            Scan::VolumeSpike,
            EventKind::New,
        );
        last.score = 5.0;
        server.push(last);
        self.published
    }
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
    let mut feed = Feed::new();
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
    let mut feed = Feed::new();
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
