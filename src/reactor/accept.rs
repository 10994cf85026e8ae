//! Accepting connections: the connection limit, over every edge of the process (503 for
//! a few past it, then plain refusal), and a pause when `accept` fails for lack of
//! descriptors.
//!
//! The listener is edge-triggered: connections left in the backlog are picked up by the
//! retry after a pause, never by spinning on the failing call.

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mio::Interest;
use mio::net::TcpStream;

use super::Reactor;
use super::conn::{Conn, Phase};
use super::http::Response;
use super::shared::Shared;
use super::transport::Transport;
use crate::protocol::ErrorCode;

/// Connections past the limit that are still answered with 503 before closing; beyond
/// these a new connection is dropped at once.
const OVERFLOW: usize = 64;
/// How long accepting pauses after `accept` fails for lack of resources (EMFILE).
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

impl Reactor {
    pub(super) fn accept(&mut self, now: Instant) {
        loop {
            if self.accept_paused_until.is_some() {
                return;
            }
            let Some(listener) = &self.listener else {
                return;
            };
            match listener.accept() {
                Ok((socket, _)) => self.admit(socket, now),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted
                            | io::ErrorKind::ConnectionAborted
                            | io::ErrorKind::ConnectionReset
                    ) => {}
                Err(e) => {
                    // Out of descriptors or memory: the pending connection stays in the
                    // backlog, so pause instead of spinning on the same error.
                    self.app.metrics.accept_errors.inc();
                    tracing::warn!(error = %e, "accept failed; pausing accepts");
                    self.accept_paused_until = Some(now + ACCEPT_PAUSE);
                    return;
                }
            }
        }
    }

    pub(super) fn admit(&mut self, mut socket: TcpStream, now: Instant) {
        self.app.metrics.accepted.inc();
        // Counted before the check, so edges accepting at once cannot both take the last
        // place.
        let open = self.app.shared.open.fetch_add(1, Ordering::Relaxed);
        let full = open >= self.config.max_connections;
        if full && open >= self.config.max_connections + OVERFLOW {
            Shared::release(&self.app.shared.open, 1);
            self.app.metrics.rejected_full.inc();
            return; // dropping the socket closes it
        }
        let _ = socket.set_nodelay(true);
        let id = self.conns.next_id();
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut socket, id.token(), Interest::READABLE)
        {
            tracing::warn!(error = %e, "cannot register a connection");
            Shared::release(&self.app.shared.open, 1);
            return;
        }
        // Settings replaced on SIGHUP reach new connections from here.
        if let Some((generation, tls)) = self.app.shared.tls_since(self.app.tls_generation) {
            self.app.tls_generation = generation;
            self.app.tls = tls;
        }
        let transport = match &self.app.tls {
            None => Transport::plain(socket),
            Some(config) => match Transport::tls(socket, Arc::clone(config)) {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start TLS on a connection");
                    Shared::release(&self.app.shared.open, 1);
                    return;
                }
            },
        };
        let mut conn = Conn::new(transport, id.generation, now, self.config.head_timeout.0);
        if full {
            self.app.metrics.rejected_full.inc();
            self.app.metrics.count_http(503);
            Response::error(
                503,
                ErrorCode::ServerFull,
                "connection limit reached; try again later",
            )
            .with_header("Retry-After", "1")
            .write(conn.out.vec(), false);
            conn.phase = Phase::Closing {
                deadline: now + self.config.close_timeout.0,
            };
        }
        let key = self.conns.insert(conn).key;
        if full {
            self.conns.mark_dirty(key);
        }
    }
}
