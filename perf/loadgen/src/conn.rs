//! One client connection over mio, for the benchmark engine and the soak driver alike:
//! the non-blocking `connect`, the upgrade request, the `101` answer, frames read through
//! a buffer all connections share, pings answered, queued bytes written out, the close;
//! on `wss://` all of it through TLS ([`crate::transport`]). A [`Conn`] owns its socket
//! and the bytes in flight; what a frame means (a result to time, a reply to match)
//! belongs to the caller, who passes a function per frame. It registers its own socket
//! and never touches the `Poll` otherwise; it counts nothing.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::Instant;

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use crate::rng::Rng;
use crate::sys;
use crate::tls::Tls;
use crate::transport::Transport;
use crate::ws::{self, Frame, Parsed, WsError};

/// Reads per connection per turn before the others get theirs; edge-triggered, so a
/// connection cut short must be read again before the next poll.
pub const READ_BUDGET: usize = 8;

/// Where a connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// `connect` is issued; the socket turns writable once it is done.
    Connecting,
    /// The upgrade request is queued or sent; its `101` is awaited.
    Handshaking,
    Open,
    /// Our close frame went out at `since`; the server is to close the TCP connection.
    /// `answered`: its close frame came, and only its EOF is awaited.
    Closing {
        since: Instant,
        answered: bool,
    },
}

/// Why an open connection ended.
#[derive(Debug)]
pub enum End {
    /// The server sent a close frame (code, or none).
    CloseFrame(Option<u16>),
    /// EOF or a socket error without a close frame: recorded as 1006.
    Abrupt,
    /// The server broke the protocol; the answer is a close with the matching code.
    Protocol(WsError),
}

/// How far a step of the opening got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Nothing more to do until the socket's next event.
    Waiting,
    /// The step is done: the request is sent, or the connection is open.
    Done,
}

/// Why a connection never opened.
#[derive(Debug)]
pub enum OpenError {
    /// The TCP connect failed: count it and try again later.
    Connect(io::Error),
    /// The upgrade request could not be sent, or the answer was not a right `101`.
    Handshake(String),
}

impl OpenError {
    /// The step that failed, `connect` or `handshake`, for reports that group by it.
    pub fn step(&self) -> &'static str {
        match self {
            OpenError::Connect(_) => "connect",
            OpenError::Handshake(_) => "handshake",
        }
    }
}

/// The reason alone, without the step.
impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::Connect(e) => e.fmt(f),
            OpenError::Handshake(why) => f.write_str(why),
        }
    }
}

/// Bytes queued for the server, and the masks of the frames among them.
#[derive(Debug)]
pub struct Outbox {
    bytes: Vec<u8>,
    masks: Rng,
}

impl Outbox {
    /// An empty outbox whose masks come from `seed`.
    pub fn new(seed: u64) -> Outbox {
        Outbox {
            bytes: Vec::new(),
            masks: Rng::new(seed),
        }
    }

    /// Queues one final frame, masked as a client's must be.
    pub fn frame(&mut self, opcode: u8, payload: &[u8]) {
        let mask = self.masks.mask();
        ws::write_frame(&mut self.bytes, opcode, payload, mask);
    }

    /// Queues a text message.
    pub fn text(&mut self, payload: &[u8]) {
        self.frame(ws::OP_TEXT, payload);
    }

    /// Queues a close frame carrying `code`.
    pub fn close(&mut self, code: u16) {
        let mask = self.masks.mask();
        ws::write_close(&mut self.bytes, code, mask);
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// What is queued, as it will go out.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    fn flush(&mut self, io: &mut Transport) -> io::Result<()> {
        ws::flush(io, &mut self.bytes)
    }
}

/// What [`frames`] did with a buffer.
#[derive(Debug)]
pub struct Handled {
    /// Bytes of whole frames consumed; the rest waits for more.
    pub used: usize,
    /// The size the buffer must reach for the next frame to be whole (0 after an end).
    pub need: usize,
    /// A frame ended the connection.
    pub end: Option<End>,
}

/// Handles every whole frame at the start of `buf`. Pings are answered into `out`; a close
/// frame, an unreadable frame or one over `max_frame` ends the connection; text, binary,
/// continuation and pong frames go to `on_frame`, which may refuse one as a protocol
/// error. Nothing the server sends can make it panic.
///
/// Out of line, with the caller's `on_frame` inlined into it: the whole per-frame path is
/// one function, which LLVM optimises best. (Under cachegrind, the self-test's receiver
/// spends about 1,680 instructions per result so, and 1,800 when `on_frame` stays a call.)
#[inline(never)]
pub fn frames<F>(buf: &[u8], max_frame: usize, out: &mut Outbox, mut on_frame: F) -> Handled
where
    F: FnMut(Frame<'_>) -> Result<(), WsError>,
{
    let mut pos = 0;
    let end = |used, e| Handled {
        used,
        need: 0,
        end: Some(e),
    };
    loop {
        let (frame, used) = match ws::parse(&buf[pos..], max_frame) {
            Ok(Parsed::Frame(f, used)) => (f, used),
            Ok(Parsed::Incomplete { need }) => {
                return Handled {
                    used: pos,
                    need,
                    end: None,
                };
            }
            Err(e) => return end(pos, End::Protocol(e)),
        };
        pos += used;
        match frame {
            // RFC 6455 5.5.2: "Upon receipt of a Ping frame, an endpoint MUST send a Pong
            // frame in response", with the same application data.
            Frame::Ping(payload) => out.frame(ws::OP_PONG, payload),
            Frame::Close(code) => return end(pos, End::CloseFrame(code)),
            frame => {
                if let Err(e) = on_frame(frame) {
                    return end(pos, End::Protocol(e));
                }
            }
        }
    }
}

/// The read buffer one thread's connections share: a connection keeps only the bytes of
/// a frame not yet whole, so idle connections cost little more than their sockets.
#[derive(Debug)]
pub struct ReadBuf {
    buf: Vec<u8>,
    /// Bytes per `read` call: at least half of this, at most all of it.
    chunk: usize,
    /// A read that leaves room in the buffer emptied the socket, so the read that would
    /// only say `WouldBlock` is skipped (see [`Conn::read_frames`]).
    skip_last_read: bool,
}

impl ReadBuf {
    pub fn new(chunk: usize, skip_last_read: bool) -> ReadBuf {
        ReadBuf {
            buf: vec![0; chunk],
            chunk,
            skip_last_read,
        }
    }
}

/// What one turn of reading an open or closing connection came to.
#[derive(Debug)]
pub struct Reading {
    /// Bytes read from the socket, frame headers included.
    pub bytes: u64,
    /// The budget ran out with bytes perhaps left: read it again before the next poll.
    pub more: bool,
    /// The connection ended; not for the close frame that answers ours.
    pub end: Option<End>,
    /// The server's close frame answered ours, with this code (1005: none).
    pub answered: Option<u16>,
}

/// One client connection: its socket (with TLS over it on `wss://`), its phase and the
/// bytes in flight.
#[derive(Debug)]
pub struct Conn {
    io: Transport,
    phase: Phase,
    /// When `connect` was issued: handshake deadlines and churn cycles count from it.
    opened: Instant,
    /// Bytes carried to the next read: the HTTP answer so far, then a frame not yet whole.
    partial: Vec<u8>,
    out: Outbox,
    /// The `Sec-WebSocket-Accept` the server must answer with.
    accept: String,
    /// Draws the handshake nonce.
    nonces: Rng,
}

impl Conn {
    /// Issues a non-blocking `connect` at `now`, to speak TLS over it when `tls` is given;
    /// `seed` seeds the masks and the nonce.
    pub fn connect(
        addr: SocketAddr,
        tls: Option<&Tls>,
        seed: u64,
        now: Instant,
    ) -> io::Result<Conn> {
        let tls = tls.map(Tls::connection).transpose()?;
        let sock = TcpStream::connect(addr)?;
        let mut nonces = Rng::new(seed);
        Ok(Conn {
            io: Transport::new(sock, tls),
            phase: Phase::Connecting,
            opened: now,
            partial: Vec::new(),
            out: Outbox::new(nonces.next_u64()),
            accept: String::new(),
            nonces,
        })
    }

    /// Registers the socket for reads and writes, edge-triggered, under `token`.
    pub fn register(&mut self, reg: &Registry, token: Token) -> io::Result<()> {
        reg.register(
            self.io.socket_mut(),
            token,
            Interest::READABLE | Interest::WRITABLE,
        )
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// When `connect` was issued.
    pub fn opened(&self) -> Instant {
        self.opened
    }

    pub fn is_open(&self) -> bool {
        self.phase == Phase::Open
    }

    /// Open or closing: frames may come.
    pub fn is_reading_frames(&self) -> bool {
        matches!(self.phase, Phase::Open | Phase::Closing { .. })
    }

    /// The bytes queued for the server.
    pub fn out(&mut self) -> &mut Outbox {
        &mut self.out
    }

    /// The socket turned writable while connecting: checks the connect and sends the
    /// upgrade request for `path` on `host` (over TLS, after the ClientHello; rustls
    /// holds the request until its handshake is done). `Waiting`: not connected yet, a
    /// spurious wake-up.
    pub fn send_upgrade(&mut self, host: &str, path: &str) -> Result<Progress, OpenError> {
        let err = match self.io.socket().take_error() {
            Ok(Some(e)) | Err(e) => Some(e),
            Ok(None) => match self.io.socket().peer_addr() {
                Ok(_) => None,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(Progress::Waiting),
                Err(e) => Some(e),
            },
        };
        if let Some(e) = err {
            return Err(OpenError::Connect(e));
        }
        // A different nonce per connection; the server checks only its form.
        let key = ws::client_key(self.nonces.nonce());
        self.accept = ws::accept_key(key.as_bytes());
        self.out
            .bytes
            .extend_from_slice(ws::upgrade_request(host, path, &key).as_bytes());
        self.phase = Phase::Handshaking;
        self.flush()
            .map_err(|e| OpenError::Handshake(e.to_string()))?;
        Ok(Progress::Done)
    }

    /// Reads the answer to the upgrade request. `Done`: the `101` is whole and right, and
    /// the connection is open; frames that came with it wait for [`Conn::early_frames`].
    /// `Waiting`: more is needed and the socket has nothing now.
    pub fn read_upgrade(&mut self) -> Result<Progress, OpenError> {
        match ws::read_handshake(&mut self.io, &mut self.partial, &self.accept) {
            Ok(false) => Ok(Progress::Waiting),
            Ok(true) => {
                self.phase = Phase::Open;
                Ok(Progress::Done)
            }
            Err(why) => Err(OpenError::Handshake(why)),
        }
    }

    /// Handles the frames that came with the `101` as [`Conn::read_frames`] does, all at
    /// one receive time; the socket may hold more, for [`Conn::read_frames`].
    pub fn early_frames<F>(&mut self, max_frame: usize, mut on_frame: F) -> Option<End>
    where
        F: FnMut(Frame<'_>, i64) -> Result<(), WsError>,
    {
        let now_ns = sys::wall_ns();
        let early = std::mem::take(&mut self.partial);
        let h = frames(&early, max_frame, &mut self.out, |f| on_frame(f, now_ns));
        self.partial.extend_from_slice(&early[h.used..]);
        h.end
    }

    /// Reads an open or closing connection until `WouldBlock` or [`READ_BUDGET`] reads,
    /// handing every whole frame to `on_frame` with the wall-clock time of its read, then
    /// writes what is queued. A close frame that answers ours is not an end: the read
    /// goes on to the server's EOF, so that the server, closing first, holds the
    /// TIME_WAIT and not this side.
    pub fn read_frames<F>(&mut self, rb: &mut ReadBuf, max_frame: usize, mut on_frame: F) -> Reading
    where
        F: FnMut(Frame<'_>, i64) -> Result<(), WsError>,
    {
        let mut r = Reading {
            bytes: 0,
            more: false,
            end: None,
            answered: None,
        };
        for _ in 0..READ_BUDGET {
            r.more = true;
            let k = self.partial.len();
            if rb.buf.len() < k + rb.chunk / 2 {
                rb.buf.resize(k + rb.chunk, 0);
            }
            rb.buf[..k].copy_from_slice(&self.partial);
            self.partial.clear();
            let room = rb.buf.len() - k;
            let n = match self.io.read(&mut rb.buf[k..]) {
                Ok(0) => {
                    r.end = Some(End::Abrupt);
                    break;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.partial.extend_from_slice(&rb.buf[..k]);
                    r.more = false;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    self.partial.extend_from_slice(&rb.buf[..k]);
                    continue;
                }
                Err(_) => {
                    r.end = Some(End::Abrupt);
                    break;
                }
            };
            // One clock read per read call: every message in it gets the same receive time.
            let now_ns = sys::wall_ns();
            r.bytes += n as u64;
            let filled = k + n;
            let closing = match self.phase {
                Phase::Closing { answered: true, .. } => {
                    // After the server's close frame only its EOF matters.
                    continue;
                }
                Phase::Closing { .. } => true,
                _ => false,
            };
            let h = frames(&rb.buf[..filled], max_frame, &mut self.out, |f| {
                on_frame(f, now_ns)
            });
            self.partial.extend_from_slice(&rb.buf[h.used..filled]);
            match h.end {
                Some(End::CloseFrame(code)) if closing => {
                    if let Phase::Closing { answered, .. } = &mut self.phase {
                        *answered = true;
                    }
                    r.answered = Some(code.unwrap_or(1005));
                    self.partial.clear();
                }
                Some(e) => {
                    r.end = Some(e);
                    break;
                }
                None => {}
            }
            if h.need > rb.buf.len() {
                // A frame larger than the buffer (a big snapshot): grow to hold it whole.
                rb.buf.resize(h.need + rb.chunk / 2, 0);
            }
            if rb.skip_last_read && n < room && self.io.emptied_socket() && !closing {
                // A short read emptied the socket (the room it had counts, not the room
                // the buffer may have grown to since). Linux epoll wakes an edge-triggered
                // waiter on every arrival, so the read that would only say WouldBlock can
                // be skipped: with a server writing one small frame at a time it is half
                // of all syscalls. Not while closing: a FIN that came with the last bytes
                // raises no new edge, and its EOF is what ends the close. Over TLS the
                // socket read under it must have come back short too.
                r.more = false;
                break;
            }
        }
        if r.end.is_none() && self.flush().is_err() {
            r.end = Some(End::Abrupt);
        }
        r
    }

    /// Writes what is queued until done or `WouldBlock`; over TLS, then the TLS bytes
    /// the socket did not take before. What is left goes at the next writable edge.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush(&mut self.io)?;
        self.io.flush()
    }

    /// Queues our close frame (1000), moves to closing at `now` and writes it out.
    pub fn start_close(&mut self, now: Instant) -> io::Result<()> {
        self.out.close(1000);
        self.phase = Phase::Closing {
            since: now,
            answered: false,
        };
        self.flush()
    }

    /// Takes the socket out of `reg` and closes it; with `reset`, by SO_LINGER 0, so that
    /// no TIME_WAIT stays on this side. Writes nothing: queue and flush a close first.
    pub fn close(mut self, reg: &Registry, reset: bool) {
        let _ = reg.deregister(self.io.socket_mut());
        if reset {
            sys::set_linger_zero(self.io.socket());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn server_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        ws::write_server_header(&mut out, opcode, payload.len());
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn pings_are_answered_and_a_close_ends() {
        let mut out = Outbox::new(1);
        let mut buf = server_frame(ws::OP_TEXT, b"a");
        buf.extend(server_frame(9, b"hb"));
        buf.extend(server_frame(10, b"p"));
        buf.extend(server_frame(ws::OP_CLOSE, &4000u16.to_be_bytes()));
        buf.extend(server_frame(ws::OP_TEXT, b"after"));
        let mut seen = Vec::new();
        let h = frames(&buf, 64, &mut out, |f| {
            seen.push(format!("{f:?}"));
            Ok(())
        });
        assert!(matches!(h.end, Some(End::CloseFrame(Some(4000)))));
        assert_eq!(h.used, buf.len() - 7);
        assert_eq!(seen.len(), 2, "{seen:?}");
        // The pong is masked and carries the ping's payload.
        let b = out.bytes();
        assert_eq!(&b[..2], &[0x8A, 0x82]);
        assert_eq!([b[6] ^ b[2], b[7] ^ b[3]], *b"hb");
    }

    #[test]
    fn an_incomplete_frame_says_how_much_it_needs() {
        let mut out = Outbox::new(1);
        let buf = server_frame(ws::OP_TEXT, &[b'x'; 300]);
        for cut in [0, 1, 3, 100, 303] {
            let h = frames(&buf[..cut], 1 << 20, &mut out, |_| Ok(()));
            assert_eq!(h.used, 0);
            assert!(h.end.is_none());
            assert!(h.need > cut && h.need <= 304, "cut {cut}: need {}", h.need);
        }
        let h = frames(&buf, 100, &mut out, |_| Ok(()));
        assert!(matches!(h.end, Some(End::Protocol(WsError::TooBig(300)))));
    }

    /// An open connection over loopback, and the server's end of it.
    fn open_pair() -> (Conn, std::net::TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (server, _) = l.accept().unwrap();
        client.set_nonblocking(true).unwrap();
        let conn = Conn {
            io: Transport::new(TcpStream::from_std(client), None),
            phase: Phase::Open,
            opened: Instant::now(),
            partial: Vec::new(),
            out: Outbox::new(1),
            accept: String::new(),
            nonces: Rng::new(2),
        };
        (conn, server)
    }

    #[test]
    fn a_frame_larger_than_the_buffer_is_read_whole_without_a_new_edge() {
        // The read that filled the buffer was once taken for a short read after the
        // buffer had grown for the frame, and the rest of the frame waited for the
        // server's next write.
        let (mut conn, mut server) = open_pair();
        let big = server_frame(ws::OP_TEXT, &[b'x'; 5000]);
        server.write_all(&big).unwrap();
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        while conn.io.socket().peek(&mut [0; 8192]).unwrap_or(0) < big.len() {
            assert!(Instant::now() < deadline, "the bytes never arrived");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let mut rb = ReadBuf::new(1024, true);
        let mut texts = 0;
        let r = conn.read_frames(&mut rb, 1 << 20, |f, _| {
            texts += usize::from(matches!(f, Frame::Text { fin: true, .. }));
            Ok(())
        });
        assert!(r.end.is_none());
        assert_eq!(r.bytes, big.len() as u64);
        assert_eq!(texts, 1, "the frame was not read whole");
    }

    #[test]
    fn a_refused_frame_is_a_protocol_error() {
        let mut out = Outbox::new(1);
        let buf = server_frame(2, b"bin");
        let h = frames(&buf, 64, &mut out, |_| Err(WsError::Protocol("no binary")));
        assert_eq!(h.used, buf.len());
        assert!(matches!(
            h.end,
            Some(End::Protocol(WsError::Protocol("no binary")))
        ));
        assert!(out.is_empty());
    }
}
