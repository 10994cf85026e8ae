//! One connection: its socket, its phase, and its one out buffer.
//!
//! A phase transition consumes the old phase. Nothing here registers with the poll or
//! reaches another connection; the reactor does that with what these methods return.

use std::io;
use std::time::{Duration, Instant};

use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;

use super::outbuf::{OutBuf, WsIo};
use super::session::WsSession;
use super::transport::Transport;

/// What a connection is doing.
pub enum Phase {
    /// Reading HTTP requests; a complete one must arrive by `deadline` (slowloris), also
    /// between kept-alive requests.
    Http {
        /// Bytes read and not yet answered.
        buf: Vec<u8>,
        /// When the request must be complete.
        deadline: Instant,
    },
    /// An open WebSocket.
    WebSocket(Box<WsSession>),
    /// The last bytes are queued; the socket closes once they are written and the peer
    /// has finished, or at `deadline`.
    Closing {
        /// When the socket is dropped whatever the state.
        deadline: Instant,
    },
}

/// A connection in the reactor's slab.
pub struct Conn {
    /// The socket, through TLS when the port speaks it.
    pub transport: Transport,
    /// Generation stamp: events and list entries for an older occupant of this slab slot
    /// carry another one and are ignored.
    pub generation: u32,
    /// What it is doing.
    pub phase: Phase,
    /// Everything waiting to be sent, in order.
    pub out: OutBuf,
    /// `WRITABLE` interest is registered.
    pub wants_write: bool,
    /// Listed for this turn's flush.
    pub dirty: bool,
    /// Result bytes appended this turn, before the flush.
    pub turn_bytes: usize,
    /// Listed in the reactor's subscriber list.
    pub listed: bool,
    /// Counted as a subscriber (has at least one subscription).
    pub subscriber: bool,
    /// Listed for replay pumping.
    pub replay_listed: bool,
    /// Our side of the socket is shut down (FIN sent).
    pub write_shut: bool,
    /// The peer has finished sending (EOF read).
    pub peer_done: bool,
    /// HTTP requests are not read until the responses queued so far drain.
    pub read_paused: bool,
    /// Last time anything arrived.
    pub last_recv: Instant,
    /// An HTTP request waits for the producer's answer; nothing more is read meanwhile,
    /// so responses keep their order.
    pub awaiting: Option<Awaiting>,
}

/// How to answer an HTTP request once the producer has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Awaiting {
    /// Keep the connection open after the response.
    pub keep_alive: bool,
    /// The client speaks HTTP/1.0.
    pub http10: bool,
}

impl Conn {
    /// A fresh connection reading its first request head.
    pub fn new(
        transport: Transport,
        generation: u32,
        now: Instant,
        head_timeout: Duration,
    ) -> Conn {
        Conn {
            transport,
            generation,
            phase: Phase::Http {
                buf: Vec::new(),
                deadline: now + head_timeout,
            },
            out: OutBuf::default(),
            wants_write: false,
            dirty: false,
            turn_bytes: 0,
            listed: false,
            subscriber: false,
            replay_listed: false,
            write_shut: false,
            peer_done: false,
            read_paused: false,
            last_recv: now,
            awaiting: None,
        }
    }

    /// The session, when this is an open WebSocket.
    pub fn session(&mut self) -> Option<&mut WsSession> {
        match &mut self.phase {
            Phase::WebSocket(s) => Some(s),
            _ => None,
        }
    }

    /// Has at least one subscription.
    pub fn has_subscriptions(&self) -> bool {
        matches!(&self.phase, Phase::WebSocket(s) if !s.subs.is_empty())
    }

    /// Starts closing: a WebSocket gets a close frame with `code` first (RFC 6455 section
    /// 7.1.2), everything already queued is still sent.
    pub fn close(&mut self, code: u16, reason: &str, now: Instant, linger: Duration) {
        let phase = std::mem::replace(
            &mut self.phase,
            Phase::Closing {
                deadline: now + linger,
            },
        );
        if let Phase::WebSocket(mut session) = phase {
            let frame = CloseFrame {
                code: CloseCode::from(code),
                reason: reason.into(),
            };
            let mut io = WsIo {
                read: &mut io::empty(),
                out: &mut self.out,
            };
            // Only fails when a close was already sent, which is then enough.
            let _ = session.ctx.close(&mut io, Some(frame));
        }
    }

    /// Shuts down our side once everything is written, so the peer reads all of it
    /// before it sees the end (closing with unread input would reset instead).
    pub fn shut_write_when_flushed(&mut self) {
        if matches!(self.phase, Phase::Closing { .. }) && self.out.is_empty() && !self.write_shut {
            self.write_shut = true;
            self.transport.shutdown_write();
        }
    }
}
