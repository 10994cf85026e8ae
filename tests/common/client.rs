//! The client library as the tests start it: quick reconnects and an events channel.

use std::thread::{self, JoinHandle};
use std::time::Duration;

use crossbeam_channel::Receiver;
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use scanstream::client::{
    Backoff, Client, ClientConfig, Event, State, Subscribed, SubscriptionOptions,
};
use scanstream::protocol::FilterSpec;

use super::proxy::Proxy;
use super::wait_for;

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

/// Subscribes `name` to everything.
pub fn subscribe_all(client: &Client, name: &str) {
    let options = SubscriptionOptions::default();
    client
        .subscribe(name, FilterSpec::default(), options)
        .unwrap();
}

/// Waits for a subscription to be confirmed.
pub fn subscribed(events: &Receiver<Event>) -> Subscribed {
    wait_for(events, "subscribed", |ev| match ev {
        Event::Subscribed(s) => Some(s.clone()),
        _ => None,
    })
}

/// A client with `config`, subscribed to everything from a busy server behind `proxy`,
/// which cuts its connection 25 times at random: every result arrives once, in order,
/// with no gap.
#[track_caller]
pub fn assert_lossless_across_cuts(proxy: &Proxy, config: ClientConfig) {
    let (client, events) = start_client(config);
    subscribe_all(&client, "all");
    subscribed(&events);

    let collector = collect(events);
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
    let cuts = 25;
    for _ in 0..cuts {
        thread::sleep(Duration::from_millis(rng.random_range(20..200)));
        proxy.cut();
    }
    thread::sleep(Duration::from_millis(500));
    client.close();
    let Collected {
        seqs,
        gaps,
        reconnects,
    } = collector.join().unwrap();

    assert_eq!(gaps, 0, "the history covers every outage");
    assert!(
        reconnects >= cuts / 2,
        "{reconnects} reconnects for {cuts} cuts"
    );
    assert!(seqs.len() > 1000, "{} results", seqs.len());
    assert_contiguous(&seqs);
}

/// Every result once, in order: no gap, no repeat.
#[track_caller]
pub fn assert_contiguous(seqs: &[u64]) {
    for pair in seqs.windows(2) {
        assert_eq!(pair[1], pair[0] + 1, "a gap or a repeat");
    }
}
