//! A client for scanstream servers that reconnects by itself and loses nothing.
//!
//! The client runs on its own thread. Subscriptions are desired state: on every connect
//! each one is sent again with `since` and `epoch` of the last result it delivered, so the
//! server replays what was missed and nothing arrives twice; when the server cannot
//! (its history no longer reaches back, or it restarted) the subscription reports a
//! [`Event::Gap`]. Requests that are safe to repeat (ad-hoc scans, acknowledgments) wait
//! in a bounded queue while disconnected, and are sent again after a reconnect until
//! answered, no faster than the server's message limit takes them
//! ([`ClientConfig::message_rate`]). Reconnects follow the close codes
//! ([`should_reconnect`]) with exponential backoff and full jitter ([`Backoff`]).
//!
//! ```no_run
//! use scanstream::client::{Client, ClientConfig, Event, SubscriptionOptions};
//! use scanstream::protocol::FilterSpec;
//!
//! let mut config = ClientConfig::new("ws://127.0.0.1:8080/stream");
//! config.events = Some(1024);
//! let client = Client::start(config)?;
//! let filters = FilterSpec {
//!     scans: Some(vec!["volume_spike".into()]),
//!     min_score: Some(2.0),
//!     ..FilterSpec::default()
//! };
//! let table = client.subscribe("main", filters, SubscriptionOptions::table())?;
//! for event in client.events().expect("asked for events") {
//!     match event {
//!         Event::Result(r) => println!("{} {} {} {:.2}", r.seq, r.symbol, r.scan, r.score),
//!         Event::Gap { subscription, .. } => eprintln!("{subscription}: results were lost"),
//!         Event::State(state) => eprintln!("{state:?}"),
//!         _ => {}
//!     }
//!     if let Some(table) = &table {
//!         let _open = table.lock().len();
//!     }
//! }
//! # Ok::<(), scanstream::client::ClientError>(())
//! ```

mod backoff;
mod message;
mod outbox;
mod pacing;
mod subs;
mod table;
mod worker;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, bounded, unbounded};
use mio::{Poll, Waker};
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use serde_json::json;
use tungstenite::client::IntoClientRequest;

pub use backoff::{Backoff, Clock, ManualClock, SystemClock};
pub use message::{Event, ResultMessage, State, Subscribed};
pub use subs::{Callback, SubscriptionManager};
pub use table::{Table, TableHandle};
pub use worker::{ABNORMAL, describe, should_reconnect};

use crate::protocol::{FilterError, FilterSpec};
pub use crate::tls::Trust;
use crate::tls::{self, TlsError};
use outbox::{Outbox, Request};
use pacing::Pacing;
use worker::{Command, WAKER, Worker};

/// A caller's lifecycle callback; runs on the client thread.
pub type StateCallback = Box<dyn FnMut(&State) + Send>;

/// How a client connects and behaves.
pub struct ClientConfig {
    /// `ws://host:port/stream`, or `wss://` for TLS.
    pub url: String,
    /// Sent as `Authorization: Bearer` when set.
    pub token: Option<String>,
    /// Reconnect delays. Their ceilings, without jitter, also space the retries of a
    /// request the server refused as `rate_limited`.
    pub backoff: Backoff,
    /// Limit on the TCP connect and on the handshake (default 5 s).
    pub connect_timeout: Duration,
    /// Requests (scans, acks) that may be owed at once, waiting to be sent or sent and
    /// not yet answered (default 1024). A request past it is refused with
    /// [`ClientError::QueueFull`].
    pub queue_capacity: usize,
    /// Messages a second the server takes on one connection (default 50, the server's
    /// default; PROTOCOL.md, "Limits"). Queued requests go out no faster, so a long
    /// queue drains after an outage without being refused; set it and
    /// [`message_burst`](Self::message_burst) to what a differently configured server
    /// takes. Subscription messages are never held back, but count against it. 0 is
    /// taken as 1.
    pub message_rate: u32,
    /// Messages the server takes at once on a fresh connection (default 100). Queued
    /// requests leave a tenth of it unused, for subscription changes and timing slack.
    /// 0 is taken as 1.
    pub message_burst: u32,
    /// How often the server pings (PROTOCOL.md: 25 s).
    pub server_ping_interval: Duration,
    /// How long past a missed ping the connection is given up as dead (default 10 s).
    pub liveness_margin: Duration,
    /// Capacity of the events channel; `None` (the default) opens none. A full channel
    /// holds the client thread back (and so the server's stream), never drops events.
    pub events: Option<usize>,
    /// Seed of the jitter; `None` seeds from the OS.
    pub jitter_seed: Option<u64>,
    /// The clock the client waits by.
    pub clock: Arc<dyn Clock>,
    /// Called on every state change.
    pub on_state: Option<StateCallback>,
    /// Which servers a `wss://` URL may reach (default: the system's trust roots).
    pub trust: Trust,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "…"))
            .field("backoff", &self.backoff)
            .field("connect_timeout", &self.connect_timeout)
            .field("queue_capacity", &self.queue_capacity)
            .field("message_rate", &self.message_rate)
            .field("message_burst", &self.message_burst)
            .field("server_ping_interval", &self.server_ping_interval)
            .field("liveness_margin", &self.liveness_margin)
            .field("events", &self.events)
            .field("trust", &self.trust)
            .finish_non_exhaustive()
    }
}

impl ClientConfig {
    /// Defaults for `url`.
    pub fn new(url: impl Into<String>) -> ClientConfig {
        ClientConfig {
            url: url.into(),
            token: None,
            backoff: Backoff::default(),
            connect_timeout: Duration::from_secs(5),
            queue_capacity: 1024,
            message_rate: 50,
            message_burst: 100,
            server_ping_interval: Duration::from_secs(25),
            liveness_margin: Duration::from_secs(10),
            events: None,
            jitter_seed: None,
            clock: Arc::new(SystemClock),
            on_state: None,
            trust: Trust::System,
        }
    }
}

/// Options of a subscription.
#[derive(Default)]
pub struct SubscriptionOptions {
    /// Keep a live table of the active opportunities.
    pub table: bool,
    /// Called, on the client thread, with every event of this subscription.
    pub callback: Option<Callback>,
}

impl SubscriptionOptions {
    /// With a live table.
    pub fn table() -> SubscriptionOptions {
        SubscriptionOptions {
            table: true,
            callback: None,
        }
    }

    /// With a callback.
    pub fn callback(f: impl FnMut(&Event) + Send + 'static) -> SubscriptionOptions {
        SubscriptionOptions {
            table: false,
            callback: Some(Box::new(f)),
        }
    }
}

impl std::fmt::Debug for SubscriptionOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscriptionOptions")
            .field("table", &self.table)
            .field("callback", &self.callback.is_some())
            .finish()
    }
}

/// What a client call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL is not a `ws://` or `wss://` URL the client can use.
    #[error("url `{url}`: {reason}")]
    Url {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The offline queue is full (requests waiting and unanswered); the request was not
    /// taken.
    #[error("the request queue is full ({capacity} waiting or unanswered)")]
    QueueFull {
        /// The queue's capacity.
        capacity: usize,
    },
    /// The filters would be refused by the server.
    #[error("filters: {0}")]
    Filter(#[from] FilterError),
    /// The client has closed.
    #[error("the client is closed")]
    Closed,
    /// The TLS settings cannot be made (a CA file that does not read, no system roots).
    #[error("tls: {0}")]
    Tls(#[from] TlsError),
    /// The client thread could not start.
    #[error("client thread: {0}")]
    Io(#[from] std::io::Error),
}

/// A running client. Dropping it closes the connection and ends its thread.
pub struct Client {
    commands: Sender<Command>,
    waker: Arc<Waker>,
    outbox: Arc<Mutex<Outbox>>,
    state: Arc<Mutex<State>>,
    events: Option<Receiver<Event>>,
    next_id: AtomicU64,
    close_asked: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Starts the client thread, which connects at once and keeps connecting.
    pub fn start(mut config: ClientConfig) -> Result<Client, ClientError> {
        let tls = match check_url(&config.url)? {
            Scheme::Ws => None,
            // Once per client: the roots are read and parsed here, not on each reconnect.
            Scheme::Wss => Some(tls::client_config(&config.trust)?),
        };
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (commands_tx, commands_rx) = unbounded();
        let (events_tx, events_rx) = match config.events {
            Some(cap) => {
                let (tx, rx) = bounded(cap.max(1));
                (Some(tx), Some(rx))
            }
            None => (None, None),
        };
        let outbox = Arc::new(Mutex::new(Outbox::new(config.queue_capacity)));
        let pacing = Pacing::new(
            config.message_rate,
            config.message_burst,
            config.backoff,
            config.clock.now(),
        );
        let state = Arc::new(Mutex::new(State::Connecting));
        let close_asked = Arc::new(AtomicBool::new(false));
        let rng: Box<dyn rand::RngCore + Send> = match config.jitter_seed {
            Some(seed) => Box::new(Xoshiro256PlusPlus::seed_from_u64(seed)),
            None => Box::new(Xoshiro256PlusPlus::from_rng(&mut rand::rng())),
        };
        let worker = Worker {
            on_state: config.on_state.take(),
            config,
            commands: commands_rx,
            outbox: Arc::clone(&outbox),
            state: Arc::clone(&state),
            events: events_tx,
            poll,
            rng,
            subs: SubscriptionManager::new(),
            pacing,
            closing: false,
            close_asked: Arc::clone(&close_asked),
            tls,
        };
        let thread = std::thread::Builder::new()
            .name("scanstream-client".into())
            .spawn(move || worker.run())?;
        Ok(Client {
            commands: commands_tx,
            waker,
            outbox,
            state,
            events: events_rx,
            next_id: AtomicU64::new(0),
            close_asked,
            thread: Some(thread),
        })
    }

    /// The events channel, when the config asked for one.
    pub fn events(&self) -> Option<&Receiver<Event>> {
        self.events.as_ref()
    }

    /// The connection state now.
    pub fn state(&self) -> State {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Adds subscription `name` (or replaces it, keeping its position). Returns its
    /// live table when `options.table` asks for one.
    pub fn subscribe(
        &self,
        name: &str,
        filters: FilterSpec,
        options: SubscriptionOptions,
    ) -> Result<Option<TableHandle>, ClientError> {
        SubscriptionManager::new().check(&filters)?;
        let table = options.table.then(TableHandle::default);
        self.command(Command::Add {
            name: name.to_owned(),
            filters,
            table: table.clone(),
            callback: options.callback,
        })?;
        Ok(table)
    }

    /// Changes the filters of subscription `name`.
    pub fn set_filters(&self, name: &str, filters: FilterSpec) -> Result<(), ClientError> {
        SubscriptionManager::new().check(&filters)?;
        self.command(Command::SetFilters {
            name: name.to_owned(),
            filters,
        })
    }

    /// Removes subscription `name`.
    pub fn unsubscribe(&self, name: &str) -> Result<(), ClientError> {
        self.command(Command::Remove {
            name: name.to_owned(),
        })
    }

    /// Requests an ad-hoc scan of `symbols`; returns the request id its replies carry
    /// ([`Event::Reply`]). Queued while disconnected.
    pub fn scan<S: AsRef<str>>(&self, symbols: &[S]) -> Result<u64, ClientError> {
        let symbols: Vec<&str> = symbols.iter().map(AsRef::as_ref).collect();
        self.request("scan", json!({ "symbols": symbols }))
    }

    /// Acknowledges alert `alert_id`; returns the request id. Queued while disconnected.
    pub fn ack(&self, alert_id: &str) -> Result<u64, ClientError> {
        self.request("ack", json!({ "alert_id": alert_id }))
    }

    /// Closes the connection (code 1000) and waits for the client thread to end.
    pub fn close(mut self) {
        self.shutdown();
    }

    fn request(&self, kind: &'static str, data: serde_json::Value) -> Result<u64, ClientError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        {
            let mut outbox = self.outbox.lock().unwrap_or_else(|e| e.into_inner());
            let req = Request {
                id,
                kind,
                data,
                round: 0,
            };
            if outbox.push(req).is_err() {
                return Err(ClientError::QueueFull {
                    capacity: outbox.capacity(),
                });
            }
        }
        self.command(Command::Send)?;
        Ok(id)
    }

    fn command(&self, cmd: Command) -> Result<(), ClientError> {
        self.commands.send(cmd).map_err(|_| ClientError::Closed)?;
        // A waker that fails has a closed poll: the thread is gone, and the send above
        // would have said so.
        let _ = self.waker.wake();
        Ok(())
    }

    fn shutdown(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.close_asked.store(true, Ordering::SeqCst);
            let _ = self.command(Command::Close);
            let _ = thread.join();
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A URL's scheme.
enum Scheme {
    Ws,
    Wss,
}

/// Refuses at once what can never connect.
fn check_url(url: &str) -> Result<Scheme, ClientError> {
    let bad = |reason: &str| ClientError::Url {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let request = url.into_client_request().map_err(|e| bad(&e.to_string()))?;
    match request.uri().scheme_str() {
        Some("ws") => Ok(Scheme::Ws),
        Some("wss") => Ok(Scheme::Wss),
        _ => Err(bad("expected ws://host:port/stream or wss://")),
    }
}
