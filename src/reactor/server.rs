//! The server: one producer thread and `--threads` edges, each a reactor with its own
//! poll, listener, connections and buffers. With more than one edge every listener binds
//! the same port with `SO_REUSEPORT`, and the kernel spreads new connections over them.
//!
//! The first edge runs on the thread that calls [`Server::run`], the others on threads of
//! their own; the producer ends when the last of them lets go of the bus.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;

use mio::net::TcpListener;
use mio::{Interest, Poll, Waker};
use socket2::{Domain, Protocol, Socket, Type};

use super::mirror::AlertMirror;
use super::shared::Shared;
use super::{LISTENER, Reactor, ServerError, ShutdownHandle, Start, WAKER};
use crate::alerts::Alerts;
use crate::bus::local as local_bus;
use crate::bus::redis as bus_redis;
use crate::config::Config;
use crate::history::History;
use crate::scanner::{self, ProducerThread, ScannerOptions, Source};
use crate::tls;

/// Connections waiting to be accepted per listener, as `mio` asks of its own listeners.
const BACKLOG: i32 = 1024;

/// An edge's poll, its registered listener and its waker.
pub(super) type Listening = (Poll, TcpListener, Arc<Waker>);

/// A bound server: its edges, and the producer they serve from.
pub struct Server {
    edges: Vec<Reactor>,
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    /// Joined after every edge has let go of the bus.
    producer: Option<ProducerThread>,
    /// Attaches more edges to the producer.
    attacher: Option<local_bus::Attacher>,
    /// The bridge to a Redis bus, finished once the edges are (it writes what the
    /// producer sent, then lets go of it so that it ends).
    bridge: Option<bus_redis::producer::Bridge>,
    config: Config,
}

impl Server {
    /// Binds the listeners and starts the scanner over the configured source; or, for
    /// `--role edge`, the bridge that serves from the bus.
    pub fn bind(config: Config) -> Result<Server, ServerError> {
        if !config.role.produces() {
            return Server::bind_edge(config);
        }
        let source =
            scanner::source_for(&config.source, &config.source_settings()).map_err(|source| {
                ServerError::Source {
                    spec: config.source.to_string(),
                    source,
                }
            })?;
        Server::bind_with(config, source)
    }

    /// Binds the listeners and starts the scanner over `source`.
    pub fn bind_with(config: Config, source: Box<dyn Source>) -> Result<Server, ServerError> {
        // On a Redis bus: the lease first (a standby waits here), then the deployment's
        // epoch and results to go on from.
        let redis = match config.redis_bus() {
            Some(bus) => {
                let start = bus_redis::producer::start(&bus, new_epoch())?;
                Some((bus, start))
            }
            None => None,
        };
        let listening = listen(config.listen, config.edges())?;
        let wakers: Vec<Arc<Waker>> = listening.iter().map(|l| Arc::clone(&l.2)).collect();
        let shared = Arc::new(Shared::new(wakers.clone(), tls_of(&config)?));
        // Symbols known up front can be asked for from the first request on.
        let mut names = Vec::new();
        let mut source = source;
        source.new_symbols(&mut names);
        let mut alerts = Alerts::start(&config.alert_settings(), config.data_dir.as_deref())?;
        if let Some((_, start)) = &redis {
            alerts.restore(start.alerts.clone());
        }
        // The edges start from the history the producer loaded from its journal.
        let journaled: Vec<_> = alerts.log().iter().cloned().collect();
        // Every ad-hoc request holds a symbol at least, so the bound on symbols waiting
        // bounds the scans waiting too.
        // The bridge to a Redis bus is one more edge, there from the first result on.
        let mut ends: Vec<Option<Arc<Waker>>> = wakers.iter().cloned().map(Some).collect();
        if redis.is_some() {
            ends.push(None);
        }
        let (producer_link, mut links, attacher) = local_bus::bus(
            &ends,
            scanner::EVENT_CHANNEL,
            scanner::CONTROL_COMMANDS + config.adhoc_queue.max(1),
        );
        let history = match &redis {
            Some((_, start)) => start.history.clone(),
            None => History::new(config.history_size, new_epoch()),
        };
        let options = ScannerOptions {
            progress_interval: config.progress_interval.0,
            history: history.clone(),
            symbols: names.clone(),
        };
        let bridge = match redis {
            Some(redis) => links.pop().map(|link| (redis, link)),
            None => None,
        };
        let producer = scanner::spawn(source, alerts, producer_link, options)?;
        let bridge = match bridge {
            Some(((bus, start), link)) => {
                let health = Arc::clone(&shared.bus);
                let symbols = names.clone();
                Some(bus_redis::producer::spawn(
                    bus, start, link, symbols, health,
                )?)
            }
            None => None,
        };
        let mut edges = make_edges(&config, listening, links, &shared, || Start {
            history: history.clone(),
            alerts: AlertMirror::new(config.alert_history, journaled.iter().cloned()),
        })?;
        for edge in &mut edges {
            edge.app.adhoc.learn(&names);
        }
        let mut server = Server::assemble(edges, shared, Some(producer), Some(attacher), config)?;
        server.bridge = bridge;
        Ok(server)
    }

    /// Edges alone (`--role edge`), fed from the bus by a bridge thread.
    fn bind_edge(config: Config) -> Result<Server, ServerError> {
        let bus = config
            .redis_bus()
            .ok_or_else(|| io::Error::other("--role edge needs --bus redis://..."))?;
        let listening = listen(config.listen, config.edges())?;
        let wakers: Vec<Arc<Waker>> = listening.iter().map(|l| Arc::clone(&l.2)).collect();
        let shared = Arc::new(Shared::new(wakers.clone(), tls_of(&config)?));
        let ends: Vec<Option<Arc<Waker>>> = wakers.iter().cloned().map(Some).collect();
        let (producer_link, links, _) = local_bus::bus(
            &ends,
            scanner::EVENT_CHANNEL,
            scanner::CONTROL_COMMANDS + config.adhoc_queue.max(1),
        );
        // Tells this process's answers from other edge processes' on the bus.
        let node = rand::random::<u64>();
        let health = Arc::clone(&shared.bus);
        let (_, cut) = bus_redis::edge::spawn(bus, producer_link, node, health)?;
        tracing::info!("waiting for the deployment's state on the bus");
        // The bridge only ends (and drops the sender) when the edges are gone.
        let _ = cut.recv();
        // Empty until the cut arrives, the first thing the bridge sends.
        let edges = make_edges(&config, listening, links, &shared, || Start {
            history: History::new(config.history_size, String::new()),
            alerts: AlertMirror::new(config.alert_history, Vec::new()),
        })?;
        Server::assemble(edges, shared, None, None, config)
    }

    fn assemble(
        edges: Vec<Reactor>,
        shared: Arc<Shared>,
        producer: Option<ProducerThread>,
        attacher: Option<local_bus::Attacher>,
        config: Config,
    ) -> Result<Server, ServerError> {
        let first = edges
            .first()
            .ok_or_else(|| io::Error::other("a server without edges"))?;
        let local_addr = first.local_addr();
        let epoch = first.app.history.epoch().to_owned();
        // The epoch last: the browser tests read it off the end of this line.
        tracing::info!(%local_addr, source = %config.source, edges = edges.len(), %epoch, "listening");
        Ok(Server {
            edges,
            shared,
            local_addr,
            producer,
            attacher,
            bridge: None,
            config,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A handle that stops every edge gracefully.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Something that reads the TLS certificate and key again (on `SIGHUP`), when the
    /// server speaks TLS.
    pub fn tls_reload(&self) -> Option<TlsReload> {
        Some(TlsReload {
            shared: Arc::clone(&self.shared),
            cert: self.config.tls_cert.clone()?,
            key: self.config.tls_key.clone()?,
        })
    }

    /// Something that attaches more edges to this server's producer, from any thread.
    /// The producer ends when every edge and every maker is gone: drop it before
    /// waiting for [`run`](Server::run) to return.
    pub fn edge_maker(&self) -> Option<EdgeMaker> {
        Some(EdgeMaker {
            attacher: self.attacher.clone()?,
            config: self.config.clone(),
        })
    }

    /// Runs every edge until shut down, then waits for the producer. Only poll failures
    /// end it with an error; one edge failing shuts the others down.
    pub fn run(self) -> Result<(), ServerError> {
        let Server {
            mut edges,
            shared,
            producer,
            attacher,
            bridge,
            ..
        } = self;
        let mut others: Vec<JoinHandle<Result<(), ServerError>>> = Vec::new();
        let mut outcome = Ok(());
        let first = edges.remove(0);
        for edge in edges {
            let all = Arc::clone(&shared);
            let spawned = std::thread::Builder::new()
                .name(format!("edge-{}", edge.app.edge))
                .spawn(move || {
                    let ran = edge.run();
                    if ran.is_err() {
                        all.shutdown();
                    }
                    ran
                });
            match spawned {
                Ok(handle) => others.push(handle),
                Err(e) => {
                    // The edges already running are stopped: a server is whole or not at all.
                    shared.shutdown();
                    outcome = Err(e.into());
                    break;
                }
            }
        }
        let ran = first.run();
        if ran.is_err() {
            shared.shutdown();
        }
        outcome = outcome.and(ran);
        for handle in others {
            let ran = handle
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("an edge thread panicked").into()));
            outcome = outcome.and(ran);
        }
        // Every edge has let go of the bus; the bridge writes what is left and lets go
        // too; letting go of the attacher ends the producer (unless a maker still holds
        // one); then wait for it.
        if let Some(bridge) = bridge {
            bridge.finish();
        }
        drop(attacher);
        if let Some(producer) = producer {
            producer.join();
        }
        outcome
    }
}

/// An edge on each listener and bus link, all of `shared`, each serving from `start()`.
fn make_edges(
    config: &Config,
    listening: Vec<Listening>,
    links: Vec<local_bus::EdgeLink>,
    shared: &Arc<Shared>,
    start: impl Fn() -> Start,
) -> Result<Vec<Reactor>, ServerError> {
    listening
        .into_iter()
        .zip(links)
        .enumerate()
        .map(|(index, (listening, bus))| {
            let metrics = Arc::clone(&shared.metrics[index]);
            let shared = Arc::clone(shared);
            Reactor::edge(
                config.clone(),
                index,
                listening,
                bus,
                start(),
                shared,
                metrics,
            )
        })
        .collect()
}

/// `edges` polls, each with a listener on `addr` registered with it, and a waker. More
/// than one share the port with `SO_REUSEPORT`; port 0 takes the port the first gets.
fn listen(addr: SocketAddr, edges: usize) -> Result<Vec<Listening>, ServerError> {
    let mut listening = Vec::with_capacity(edges);
    let mut at = addr;
    for _ in 0..edges {
        let bound = if edges == 1 {
            TcpListener::bind(at)
        } else {
            reuse_port_listener(at).map(TcpListener::from_std)
        };
        let mut listener = bound.map_err(|source| ServerError::Bind { addr, source })?;
        at = listener.local_addr()?;
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        listening.push((poll, listener, waker));
    }
    Ok(listening)
}

/// Reads a server's TLS certificate and key again, from any thread: renewed certificates
/// (an ACME client's) are taken without a restart.
#[derive(Clone)]
pub struct TlsReload {
    shared: Arc<Shared>,
    cert: PathBuf,
    key: PathBuf,
}

impl TlsReload {
    /// New connections get the pair on disk now; a bad pair is logged and the one in use
    /// kept.
    pub fn reload(&self) {
        match tls::server_config(&self.cert, &self.key) {
            Ok(config) => {
                self.shared.set_tls(config);
                tracing::info!(cert = %self.cert.display(), "TLS certificate and key reloaded");
            }
            Err(e) => {
                tracing::error!(error = %e, "TLS reload failed; keeping the certificate in use");
            }
        }
    }
}

/// The TLS settings `config` names, read from their files now.
fn tls_of(config: &Config) -> Result<Option<Arc<rustls::ServerConfig>>, ServerError> {
    match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Ok(Some(tls::server_config(cert, key)?)),
        _ => Ok(None),
    }
}

/// A non-blocking listener on `addr` that other sockets of this user may bind too.
fn reuse_port_listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // As `mio` does for its own listeners: a restart need not wait out TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// Starts more edges on a running server's producer: each attaches, gets the producer's
/// cut (history, active set, alerts, status) and then everything after it.
#[derive(Debug, Clone)]
pub struct EdgeMaker {
    attacher: local_bus::Attacher,
    config: Config,
}

impl EdgeMaker {
    /// A server of one edge, number `index`, listening on `addr`; run it with
    /// [`Server::run`]. It counts its connections and metrics apart from the others.
    pub fn bind(&self, index: usize, addr: SocketAddr) -> Result<Server, ServerError> {
        let mut listening = listen(addr, 1)?;
        let listening = listening
            .pop()
            .ok_or_else(|| io::Error::other("no listener"))?;
        let shared = Arc::new(Shared::new(
            vec![Arc::clone(&listening.2)],
            tls_of(&self.config)?,
        ));
        let bus = self
            .attacher
            .attach(Some(Arc::clone(&listening.2)))
            .map_err(|_| io::Error::other("the producer has ended"))?;
        let config = Config {
            listen: addr,
            ..self.config.clone()
        };
        // Empty until the cut arrives, the first thing the edge reads.
        let start = Start {
            history: History::new(config.history_size, String::new()),
            alerts: AlertMirror::new(config.alert_history, Vec::new()),
        };
        let metrics = Arc::clone(&shared.metrics[0]);
        let edge = Reactor::edge(
            config.clone(),
            index,
            listening,
            bus,
            start,
            Arc::clone(&shared),
            metrics,
        )?;
        Server::assemble(vec![edge], shared, None, None, config)
    }
}

/// A short random identifier for this run, so clients can tell a restart.
fn new_epoch() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..8)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}
