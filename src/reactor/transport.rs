//! A connection's byte stream: plain TCP, or TLS over it.
//!
//! rustls is sans-IO: the reactor still owns the socket, reads go socket → TLS → the same
//! HTTP and WebSocket path, and a flush hands the whole out buffer to TLS at once, so it
//! is encrypted once per flush (a few records), not once per frame. TLS bytes the socket
//! did not take wait in rustls until the next flush; [`Transport::has_pending`] tells
//! the reactor to keep asking for `WRITABLE` meanwhile.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::{ServerConfig, ServerConnection};

/// The socket, and its TLS state when the server speaks TLS.
pub struct Transport {
    socket: TcpStream,
    tls: Option<Box<ServerConnection>>,
    /// Why the TLS handshake failed, for `/metrics`.
    failure: Option<&'static str>,
}

impl Transport {
    /// Plain TCP.
    pub fn plain(socket: TcpStream) -> Transport {
        Transport {
            socket,
            tls: None,
            failure: None,
        }
    }

    /// TLS with `config`; the handshake runs as bytes arrive.
    pub fn tls(socket: TcpStream, config: Arc<ServerConfig>) -> io::Result<Transport> {
        let tls = ServerConnection::new(config).map_err(io::Error::other)?;
        Ok(Transport {
            socket,
            tls: Some(Box::new(tls)),
            failure: None,
        })
    }

    /// The socket, to register with the poll.
    pub fn socket_mut(&mut self) -> &mut TcpStream {
        &mut self.socket
    }

    /// Why the handshake failed: a rustls error's kind, or `incomplete` for a connection
    /// that ends before its handshake is done (the peer left, or the head deadline came).
    pub fn handshake_failure(&self) -> Option<&'static str> {
        let tls = self.tls.as_ref()?;
        self.failure
            .or(tls.is_handshaking().then_some("incomplete"))
    }

    /// TLS bytes wait for the socket to take them.
    pub fn has_pending(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.wants_write())
    }

    /// Ends our side: TLS says `close_notify` first (what the socket takes of it).
    pub fn shutdown_write(&mut self) {
        if let Some(tls) = &mut self.tls {
            tls.send_close_notify();
            let _ = push(tls, &mut self.socket);
        }
        let _ = self.socket.shutdown(Shutdown::Write);
    }
}

/// Every reason a handshake fails, as `/metrics` labels it.
pub const FAILURES: [&str; 6] = [
    "invalid_message",
    "incompatible",
    "alert_received",
    "misbehaved",
    "other",
    "incomplete",
];

/// The label of a rustls error (plain HTTP on the TLS port is an `invalid_message`).
fn failure_kind(e: &rustls::Error) -> &'static str {
    match e {
        rustls::Error::InvalidMessage(_) => FAILURES[0],
        rustls::Error::PeerIncompatible(_) => FAILURES[1],
        rustls::Error::AlertReceived(_) => FAILURES[2],
        rustls::Error::PeerMisbehaved(_) => FAILURES[3],
        _ => FAILURES[4],
    }
}

/// How far [`push`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pushed {
    /// The socket took every TLS byte.
    All,
    /// The socket would block; the rest waits in rustls for `WRITABLE`.
    Blocked,
}

/// Writes what TLS has for the socket until it is empty or the socket would block.
fn push(tls: &mut ServerConnection, socket: &mut TcpStream) -> io::Result<Pushed> {
    while tls.wants_write() {
        match tls.write_tls(socket) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Pushed::Blocked),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Pushed::All)
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(tls) = &mut self.tls else {
            return self.socket.read(buf);
        };
        loop {
            match tls.reader().read(buf) {
                // 0 after the peer's close_notify: the end of its stream.
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            // No plaintext waiting: take more TLS bytes (WouldBlock goes to the caller).
            if tls.read_tls(&mut self.socket)? == 0 {
                return Ok(0);
            }
            let processed = tls.process_new_packets();
            // Handshake replies, or the alert that explains a failure, go out now.
            push(tls, &mut self.socket)?;
            if let Err(e) = processed {
                if tls.is_handshaking() {
                    self.failure = Some(failure_kind(&e));
                }
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Some(tls) = &mut self.tls else {
            return self.socket.write(buf);
        };
        // rustls takes at most its buffer limit (64 KiB) of plaintext at a time: hand it
        // more as the socket drains, so a short write means the socket is full (and a
        // `WRITABLE` event will come), never only that rustls' buffer was.
        let mut taken = 0;
        // What an earlier flush left in rustls goes first.
        while push(tls, &mut self.socket)? == Pushed::All && taken < buf.len() {
            // Before the handshake is done rustls holds this plaintext and sends it after,
            // up to its limit.
            let n = tls.writer().write(&buf[taken..])?;
            if n == 0 {
                break;
            }
            taken += n;
        }
        if taken == 0 {
            // rustls is full and the socket would block: not a peer that went away.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.tls {
            Some(tls) => push(tls, &mut self.socket).map(|_| ()),
            None => Ok(()),
        }
    }
}
