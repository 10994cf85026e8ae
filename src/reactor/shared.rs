//! What the edges of one process share: the shutdown flag and every edge's waker, the
//! counts that the limits and the status take over the whole process (open connections,
//! subscribers, ad-hoc symbols waiting), every edge's counters for `/metrics`, and the
//! health of the bus between processes.
//!
//! Each count changes when a connection opens, subscribes or leaves, or a request is
//! queued: rare beside deliveries, which touch nothing here.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use mio::Waker;

use crate::bus::health::BusHealth;
use crate::metrics::Metrics;

/// One process's edges, as each of them sees the others.
#[derive(Debug)]
pub struct Shared {
    shutdown: AtomicBool,
    wakers: Vec<Arc<Waker>>,
    /// Open connections on every edge, against `max_connections`.
    pub open: AtomicUsize,
    /// Connections holding a subscription on every edge, for `status.subscribers`.
    pub subscribers: AtomicUsize,
    /// Symbols in ad-hoc requests sent and not yet answered, against `adhoc_queue`.
    pub adhoc_pending: AtomicUsize,
    /// Each edge's counters, by edge.
    pub metrics: Vec<Arc<Metrics>>,
    /// The bus between processes, as its bridges see it (well when there is none).
    pub bus: Arc<BusHealth>,
    /// TLS settings, when the port speaks TLS; replaced on `SIGHUP`. Edges take a copy
    /// and look here again only when `tls_generation` moves, so the lock is touched once
    /// per reload, not per connection.
    tls: Mutex<Option<Arc<rustls::ServerConfig>>>,
    tls_generation: AtomicU64,
}

impl Shared {
    /// Shared by the edges woken through `wakers`, one each, speaking TLS with `tls`.
    pub fn new(wakers: Vec<Arc<Waker>>, tls: Option<Arc<rustls::ServerConfig>>) -> Shared {
        Shared {
            shutdown: AtomicBool::new(false),
            metrics: wakers.iter().map(|_| Arc::default()).collect(),
            wakers,
            open: AtomicUsize::new(0),
            subscribers: AtomicUsize::new(0),
            adhoc_pending: AtomicUsize::new(0),
            bus: Arc::default(),
            tls: Mutex::new(tls),
            tls_generation: AtomicU64::new(0),
        }
    }

    /// The TLS settings as of generation `seen`: `None` when they have not changed since,
    /// else the generation now and the settings.
    pub fn tls_since(&self, seen: u64) -> Option<(u64, Option<Arc<rustls::ServerConfig>>)> {
        let now = self.tls_generation.load(Ordering::Acquire);
        if now == seen {
            return None;
        }
        let tls = self.tls.lock().map_or(None, |t| t.clone());
        Some((now, tls))
    }

    /// New TLS settings for new connections (open ones keep theirs).
    pub fn set_tls(&self, tls: Arc<rustls::ServerConfig>) {
        if let Ok(mut t) = self.tls.lock() {
            *t = Some(tls);
        }
        self.tls_generation.fetch_add(1, Ordering::Release);
    }

    /// Starts the graceful shutdown of every edge.
    pub fn shutdown(&self) {
        self.shutdown.store(true, Ordering::SeqCst);
        for waker in &self.wakers {
            // If the wake fails that poll is already gone, which is the goal.
            let _ = waker.wake();
        }
    }

    /// Has shutdown begun?
    pub fn shutting_down(&self) -> bool {
        self.shutdown.load(Ordering::SeqCst)
    }

    /// Takes `n` from a count (saturating: a count never wraps below zero).
    pub fn release(count: &AtomicUsize, n: usize) {
        let _ = count.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
            Some(v.saturating_sub(n))
        });
    }

    /// Adds `n` to `count` if that keeps it at most `cap`; the count before, or `Err` with
    /// the count that left no room.
    pub fn reserve(count: &AtomicUsize, n: usize, cap: usize) -> Result<usize, usize> {
        count.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
            (v + n <= cap).then_some(v + n)
        })
    }
}
