//! Tables kept by the client library, and what they are checked against: a fresh
//! snapshot's rows, read once the stream has settled.

use std::collections::HashMap;
use std::thread;
use std::time::Duration;

use crossbeam_channel::Receiver;
use scanstream::client::{Client, ClientConfig, Event, SubscriptionOptions, TableHandle};
use scanstream::protocol::FilterSpec;
use serde_json::Value;

use super::{TestServer, http, snapshot_rows, wait_for};

/// A client with an events channel, connected to `server`.
pub fn client(server: &TestServer) -> (Client, Receiver<Event>) {
    let mut config = ClientConfig::new(server.url());
    config.events = Some(1_000_000);
    let client = Client::start(config).unwrap();
    let events = client.events().unwrap().clone();
    (client, events)
}

pub fn subscribe_table(client: &Client, name: &str, filters: FilterSpec) -> TableHandle {
    client
        .subscribe(name, filters, SubscriptionOptions::table())
        .unwrap()
        .expect("a table")
}

/// Stops the scanner and waits until nothing more is published; the newest `seq`.
pub fn stop_and_settle(server: &TestServer) -> u64 {
    http(server.addr, "POST", "/stream/stop", None);
    let mut last = None;
    loop {
        thread::sleep(Duration::from_millis(300));
        let status = http(server.addr, "GET", "/stream/status", None).json();
        let total = status["results_total"].as_u64().expect("results_total");
        if status["state"] == "stopped" && last == Some(total) {
            return total;
        }
        last = Some(total);
    }
}

/// Reads events until the client has taken result `head`; how many left a filter.
pub fn read_up_to(events: &Receiver<Event>, head: u64) -> usize {
    let mut left = 0;
    let mut seen = 0;
    while seen < head {
        wait_for(events, &format!("result {head}"), |ev| match ev {
            Event::Result(r) => {
                seen = r.seq;
                left += r.left.len();
                Some(())
            }
            Event::Snapshot { seq, .. } => {
                seen = seen.max(*seq);
                Some(())
            }
            _ => None,
        });
    }
    left
}

/// A table's rows as (score, price) by (symbol, scan).
pub fn rows_of(table: &TableHandle) -> HashMap<(String, String), (f64, f64)> {
    table
        .lock()
        .rows()
        .map(|r| ((r.symbol.clone(), r.scan.clone()), (r.score, r.price)))
        .collect()
}

/// A fresh snapshot's rows as (score, price) by (symbol, scan).
pub fn snapshot_values(
    server: &TestServer,
    filters: Value,
) -> HashMap<(String, String), (f64, f64)> {
    snapshot_rows(server, filters)
        .into_iter()
        .map(|(key, r)| {
            (
                key,
                (r["score"].as_f64().unwrap(), r["price"].as_f64().unwrap()),
            )
        })
        .collect()
}
