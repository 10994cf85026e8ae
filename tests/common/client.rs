//! The client library as the tests start it: quick reconnects and an events channel.

use crossbeam_channel::Receiver;
use scanstream::client::{Backoff, Client, ClientConfig, Event};
use std::time::Duration;

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
