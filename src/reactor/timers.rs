//! The timer sweep: one pass over every connection each `sweep_interval` for head
//! deadlines, pings, idle WebSockets and closing deadlines; then the edge's gauges for
//! the other edges' `/metrics`.
//!
//! The decision is a pure function of a connection's phase and times; the reactor
//! carries it out. A coarse sweep is enough at 10k connections (see DESIGN.md).

use std::time::{Duration, Instant};

use tungstenite::{Bytes, Message};

use super::Reactor;
use super::conn::{Conn, Phase};
use super::http::Response;
use super::outbuf::WsIo;
use crate::protocol::ErrorCode;
use crate::protocol::close;

/// Timeouts the sweep enforces.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// WebSocket ping interval.
    pub ping_interval: Duration,
    /// Close a WebSocket silent this long.
    pub idle_timeout: Duration,
}

/// What is due for one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Nothing.
    Nothing,
    /// Close the socket now.
    Drop,
    /// The request did not complete in time: 408, then close.
    RequestTimeout,
    /// Close after what is queued (responses the client has not read yet).
    Linger,
    /// Send a ping.
    Ping,
    /// The peer went silent: close 1001.
    Idle,
}

/// Decides what is due for a connection at `now`.
pub fn due(conn: &Conn, now: Instant, t: Timeouts) -> Due {
    match &conn.phase {
        // The producer's answer is awaited, not the client's bytes.
        Phase::Http { .. } if conn.awaiting.is_some() => Due::Nothing,
        Phase::Http { buf, deadline } if now >= *deadline => {
            // An idle kept-alive connection just ends; a slow request gets told why.
            match (buf.is_empty(), conn.out.is_empty()) {
                (false, _) => Due::RequestTimeout,
                (true, true) => Due::Drop,
                (true, false) => Due::Linger,
            }
        }
        Phase::Http { .. } => Due::Nothing,
        Phase::WebSocket(_) if now.saturating_duration_since(conn.last_recv) >= t.idle_timeout => {
            Due::Idle
        }
        Phase::WebSocket(s) if now.saturating_duration_since(s.last_ping) >= t.ping_interval => {
            Due::Ping
        }
        Phase::WebSocket(_) => Due::Nothing,
        Phase::Closing { deadline } if now >= *deadline => Due::Drop,
        Phase::Closing { .. } => Due::Nothing,
    }
}

impl Reactor {
    pub(super) fn sweep(&mut self, now: Instant) {
        let t = Timeouts {
            ping_interval: self.config.ping_interval.0,
            idle_timeout: self.config.idle_timeout.0,
        };
        let due_now: Vec<(usize, Due)> = self
            .conns
            .iter_mut()
            .map(|(key, conn)| {
                conn.out.release_if_idle();
                (key, due(conn, now, t))
            })
            .filter(|(_, d)| *d != Due::Nothing)
            .collect();
        for (key, due) in due_now {
            match due {
                Due::Nothing => {}
                Due::Drop => self.drop_conn(key),
                Due::RequestTimeout => {
                    let Some(conn) = self.conns.get_mut(key) else {
                        continue;
                    };
                    let response = Response::error(
                        408,
                        ErrorCode::RequestTimeout,
                        "request not completed in time",
                    );
                    self.app.metrics.count_http(408);
                    response.write(conn.out.vec(), false);
                    self.close_conn(key, close::NORMAL, "", now);
                }
                Due::Ping => {
                    let Some(conn) = self.conns.get_mut(key) else {
                        continue;
                    };
                    let Phase::WebSocket(session) = &mut conn.phase else {
                        continue;
                    };
                    session.last_ping = now;
                    let mut io = WsIo {
                        read: &mut std::io::empty(),
                        out: &mut conn.out,
                    };
                    let _ = session.ctx.write(&mut io, Message::Ping(Bytes::new()));
                    self.conns.mark_dirty(key);
                }
                Due::Idle => self.close_conn(key, close::GOING_AWAY, "idle timeout", now),
                Due::Linger => self.close_conn(key, close::NORMAL, "", now),
            }
        }
        self.publish_gauges();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reactor::session::WsSession;
    use crate::reactor::websocket::context;

    fn conn_with(phase: Phase, last_recv: Instant) -> Conn {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let mut conn = Conn::new(
            crate::reactor::transport::Transport::plain(mio::net::TcpStream::from_std(stream)),
            0,
            last_recv,
            Duration::from_secs(1),
        );
        conn.phase = phase;
        conn
    }

    #[test]
    fn due_table() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let t = Timeouts {
            ping_interval: s(25),
            idle_timeout: s(60),
        };
        let http = |buf: &[u8]| Phase::Http {
            buf: buf.to_vec(),
            deadline: t0 + s(10),
        };
        let ws = || {
            Phase::WebSocket(Box::new(WsSession::new(
                context(Vec::new(), 4096, 1024),
                t0,
                10,
            )))
        };
        let cases = [
            (http(b""), t0, t0 + s(9), Due::Nothing),
            (http(b""), t0, t0 + s(10), Due::Drop),
            (http(b"GET / HT"), t0, t0 + s(10), Due::RequestTimeout),
            (ws(), t0, t0 + s(24), Due::Nothing),
            (ws(), t0 + s(20), t0 + s(25), Due::Ping),
            (ws(), t0, t0 + s(60), Due::Idle),
            (
                Phase::Closing {
                    deadline: t0 + s(5),
                },
                t0,
                t0 + s(4),
                Due::Nothing,
            ),
            (
                Phase::Closing {
                    deadline: t0 + s(5),
                },
                t0,
                t0 + s(5),
                Due::Drop,
            ),
        ];
        for (i, (phase, last_recv, now, want)) in cases.into_iter().enumerate() {
            let conn = conn_with(phase, last_recv);
            assert_eq!(due(&conn, now, t), want, "case {i}");
        }
    }
}
