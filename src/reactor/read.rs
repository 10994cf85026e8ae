//! The read side of the loop: bytes in, answers out, per phase.
//!
//! HTTP requests are parsed from the connection's buffer and answered in order
//! (pipelining); an upgrade hands the bytes behind the head to tungstenite; WebSocket
//! messages go to the session; a closing connection's input is read and discarded.

use std::io::{self, Read};
use std::time::Instant;

use tungstenite::Message;

use super::api::{self, Action};
use super::app::Caller;
use super::conn::{Awaiting, Phase};
use super::conns::ConnId;
use super::http::{self, Limits, MAX_HEADERS, Parsed};
use super::outbuf::WsIo;
use super::session::WsSession;
use super::websocket::{self, ReadFault};
use super::{Next, Reactor};
use crate::protocol::{ErrorCode, close};

/// Bytes read into an HTTP buffer per `read` call.
const HTTP_CHUNK: usize = 4096;
/// `read` calls on one HTTP connection per readiness event at most; the rest wait for
/// the next turn.
const HTTP_READS: usize = 16;
/// WebSocket messages handled per connection per readiness event at most; the rest wait
/// for the next turn so one busy client cannot hold the loop.
const READ_BUDGET: usize = 64;

/// How reading an HTTP connection ended.
enum Served {
    /// Wait for more bytes.
    More,
    /// Too much unsent: stop until the flush drains it.
    Paused,
    /// The phase changed (upgrade, close) or the connection is gone.
    Done,
}

impl Reactor {
    pub(super) fn on_readable(&mut self, key: usize, now: Instant) {
        let Some(conn) = self.conns.get(key) else {
            return;
        };
        match conn.phase {
            Phase::Http { .. } => self.read_http(key, now),
            Phase::WebSocket(_) => self.read_ws(key, now),
            Phase::Closing { .. } => self.read_closing(key),
        }
    }

    /// Reads connections that stopped at the read budget last turn.
    pub(super) fn retry_reads(&mut self, now: Instant) {
        let pending = std::mem::take(&mut self.conns.pending_reads);
        for id in pending {
            if self.conns.is_live(id) {
                self.on_readable(id.key, now);
            }
        }
    }

    fn read_http(&mut self, key: usize, now: Instant) {
        let limit = self.config.max_head_bytes + self.config.max_body_bytes;
        for _ in 0..HTTP_READS {
            // Requests already buffered first: after a pause they wait there.
            match self.serve_requests(key, now) {
                Served::More => {}
                Served::Paused | Served::Done => return,
            }
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            let Phase::Http { buf, .. } = &mut conn.phase else {
                return;
            };
            let start = buf.len();
            // A full buffer always parses to a request or a refusal, so there is room.
            let room = HTTP_CHUNK.min((limit + 1).saturating_sub(start));
            if room == 0 {
                return self.drop_conn(key);
            }
            buf.resize(start + room, 0);
            let read = conn.transport.read(&mut buf[start..]);
            buf.truncate(start + *read.as_ref().unwrap_or(&0));
            match read {
                Ok(0) => {
                    // The client is done sending; answers already queued still go out.
                    conn.peer_done = true;
                    return if conn.out.is_empty() {
                        self.drop_conn(key)
                    } else {
                        self.close_conn(key, close::NORMAL, "", now)
                    };
                }
                Ok(_) => conn.last_recv = now,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.drop_conn(key),
            }
        }
        // Budget spent with more perhaps waiting: go on next turn.
        if let Some(id) = self.conns.id(key) {
            self.conns.pending_reads.push(id);
        }
    }

    /// Answers every complete request in the buffer, in order.
    fn serve_requests(&mut self, key: usize, now: Instant) -> Served {
        let limits = Limits {
            max_head: self.config.max_head_bytes,
            max_body: self.config.max_body_bytes,
        };
        loop {
            let Some(conn) = self.conns.get_mut(key) else {
                return Served::Done;
            };
            if conn.out.pending() > super::HTTP_OUT_CAP {
                conn.read_paused = true;
                return Served::Paused;
            }
            if conn.awaiting.is_some() {
                return Served::Paused;
            }
            let Phase::Http { buf, deadline } = &mut conn.phase else {
                return Served::Done;
            };
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let (action, keep_alive, http10, used) = match http::parse(buf, &mut headers, limits) {
                Parsed::Partial => return Served::More,
                Parsed::Error(e) => {
                    let response = http::Response::from(e);
                    self.app.metrics.count_http(response.status);
                    response.write(conn.out.vec(), false);
                    self.close_conn(key, close::NORMAL, "", now);
                    return Served::Done;
                }
                Parsed::Complete(req, used) => {
                    let http10 = req.minor_version == 0;
                    (
                        api::route(&req, &mut self.app),
                        req.keep_alive(),
                        http10,
                        used,
                    )
                }
            };
            *deadline = now + self.config.head_timeout.0;
            let rest = buf.split_off(used);
            let response = match action {
                Action::Respond(response) => response,
                Action::Metrics => {
                    let body = self.render_metrics();
                    http::Response::text(200, "text/plain; version=0.0.4; charset=utf-8", body)
                }
                Action::Upgrade(accept) => return self.upgrade(key, &accept, rest, now),
                Action::Ack(alert_id) => match self.ask_ack(key, alert_id) {
                    Ok(()) => {
                        if let Some(conn) = self.conns.get_mut(key) {
                            conn.awaiting = Some(Awaiting { keep_alive, http10 });
                            if let Phase::Http { buf, .. } = &mut conn.phase {
                                *buf = rest;
                            }
                        }
                        return Served::Paused;
                    }
                    Err(response) => response,
                },
            };
            let Some(conn) = self.conns.get_mut(key) else {
                return Served::Done;
            };
            let Phase::Http { buf, .. } = &mut conn.phase else {
                return Served::Done;
            };
            *buf = rest;
            self.app.metrics.count_http(response.status);
            response.write_for(conn.out.vec(), keep_alive, http10);
            self.conns.mark_dirty(key);
            if !keep_alive {
                self.close_conn(key, close::NORMAL, "", now);
                return Served::Done;
            }
        }
    }

    /// Sends the producer an acknowledgment for connection `key`; the 503 to answer when
    /// it cannot take it.
    fn ask_ack(&mut self, key: usize, alert_id: String) -> Result<(), http::Response> {
        self.app
            .ask_ack(alert_id, self.conns.id(key), None)
            .map_err(|_| {
                http::Response::error(503, ErrorCode::Unavailable, "the scanner is not running")
            })
    }

    /// Answers the HTTP request that waited for the producer, then reads on.
    pub(super) fn answer_waiting(&mut self, key: usize, response: http::Response, now: Instant) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let Some(Awaiting { keep_alive, http10 }) = conn.awaiting.take() else {
            return;
        };
        self.app.metrics.count_http(response.status);
        response.write_for(conn.out.vec(), keep_alive, http10);
        if let Phase::Http { deadline, .. } = &mut conn.phase {
            *deadline = now + self.config.head_timeout.0;
        }
        self.conns.mark_dirty(key);
        if !keep_alive {
            self.close_conn(key, close::NORMAL, "", now);
        } else if let Some(id) = self.conns.id(key) {
            // Requests pipelined behind it wait in the buffer or the socket.
            self.conns.pending_reads.push(id);
        }
    }

    fn upgrade(&mut self, key: usize, accept: &str, early: Vec<u8>, now: Instant) -> Served {
        let Some(conn) = self.conns.get_mut(key) else {
            return Served::Done;
        };
        self.app.metrics.count_http(101);
        self.app.metrics.upgrades.inc();
        websocket::write_accept(conn.out.vec(), accept);
        let ctx = websocket::context(
            early,
            self.config.ws_read_buffer,
            self.config.max_message_bytes,
        );
        conn.phase = Phase::WebSocket(Box::new(WsSession::new(
            ctx,
            now,
            self.config.message_burst,
        )));
        self.conns.mark_dirty(key);
        // Frames may already wait behind the head, or in the socket.
        self.read_ws(key, now);
        Served::Done
    }

    fn read_ws(&mut self, key: usize, now: Instant) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let Phase::WebSocket(session) = &mut conn.phase else {
            return;
        };
        let id = ConnId {
            key,
            generation: conn.generation,
        };
        let mut caller = Caller::new(id, conn.subscriber);
        let mut next = Next::Keep;
        let mut fault = None;
        let mut budget_left = true;
        for _ in 0..READ_BUDGET {
            let mut io = WsIo {
                read: &mut conn.transport,
                out: &mut conn.out,
            };
            match session.ctx.read(&mut io) {
                Ok(Message::Text(text)) => {
                    conn.last_recv = now;
                    next = session.on_text(&text, conn.out.vec(), &mut self.app, &mut caller, now);
                }
                Ok(Message::Binary(_)) => {
                    next =
                        Next::Close(close::UNSUPPORTED_DATA, "binary messages are not supported");
                }
                Ok(Message::Close(_)) => {
                    // tungstenite queued the reply; write it out, then close our side.
                    conn.last_recv = now;
                    let _ = session.ctx.flush(&mut io);
                    fault = Some(ReadFault::Gone);
                }
                Ok(_) => conn.last_recv = now,
                Err(e) => fault = Some(websocket::read_fault(&e)),
            }
            if next != Next::Keep || fault.is_some() {
                budget_left = false;
                break;
            }
        }
        match (next, fault) {
            (Next::Close(code, reason), _) | (_, Some(ReadFault::Close(code, reason))) => {
                tracing::debug!(key, code, reason, "closing websocket");
                self.close_conn(key, code, reason, now);
            }
            (_, Some(ReadFault::Gone)) => {
                if conn.out.is_empty() {
                    self.drop_conn(key);
                } else {
                    // Our close reply (or last frames) still go out before the socket closes.
                    conn.phase = Phase::Closing {
                        deadline: now + self.config.close_timeout.0,
                    };
                    self.sync_subscriber(key);
                    self.conns.mark_dirty(key);
                }
            }
            _ => {
                // Pongs tungstenite queued while reading.
                let mut io = WsIo {
                    read: &mut io::empty(),
                    out: &mut conn.out,
                };
                let _ = session.ctx.flush(&mut io);
                let has_output = !conn.out.is_empty();
                self.sync_subscriber(key);
                if has_output {
                    self.conns.mark_dirty(key);
                }
            }
        }
        // Budget spent with more perhaps waiting (and nothing closed it): go on next turn.
        if budget_left {
            self.conns.pending_reads.push(id);
        }
    }

    /// Discards input of a closing connection until the peer finishes.
    fn read_closing(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let mut sink = [0u8; 4096];
        loop {
            match conn.transport.read(&mut sink) {
                Ok(0) if conn.out.is_empty() => return self.drop_conn(key),
                Ok(0) => {
                    // Our last bytes still go out; the flush that empties them closes.
                    conn.peer_done = true;
                    return;
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.drop_conn(key),
            }
        }
    }
}
