//! The client library as the tests start it: quick reconnects and an events channel.

use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::Receiver;
use scanstream::client::{Backoff, Client, ClientConfig, Event, State};

/// A client with an events channel and quick reconnects.
pub fn client_config(url: &str) -> ClientConfig {
    let mut c = ClientConfig::new(url);
    c.events = Some(100_000);
    c.backoff = Backoff {
        initial: Duration::from_millis(20),
        factor: 2.0,
        max: Duration::from_millis(200),
    };
    c.jitter_seed = Some(7);
    c
}

/// A started client and its events.
pub fn start_client(c: ClientConfig) -> (Client, Receiver<Event>) {
    let client = Client::start(c).unwrap();
    let events = client.events().unwrap().clone();
    (client, events)
}

/// What a client went through until it closed.
#[derive(Debug, Default)]
pub struct Collected {
    /// Every result's `seq`, in the order delivered.
    pub seqs: Vec<u64>,
    /// Gaps reported (a resume that could not recover).
    pub gaps: usize,
    /// Connections lost.
    pub reconnects: usize,
}

/// Collects `events` on a thread until the client closes.
pub fn collect(events: Receiver<Event>) -> JoinHandle<Collected> {
    std::thread::spawn(move || {
        let mut c = Collected::default();
        while let Ok(ev) = events.recv() {
            match ev {
                Event::Result(r) => c.seqs.push(r.seq),
                Event::Gap { .. } => c.gaps += 1,
                Event::Disconnected { .. } => c.reconnects += 1,
                Event::State(State::Closed { .. }) => break,
                _ => {}
            }
        }
        c
    })
}
