//! A connection's byte stream: the bare socket for `ws://`, TLS over it for `wss://`.
//!
//! rustls is sans-IO, as in the server: the connection keeps its socket, reads go
//! socket → TLS → the same WebSocket parsing, and writes go through TLS. TLS bytes the
//! socket did not take wait in rustls; [`Transport::flush`] writes them once the socket
//! turns writable again (connections are registered for `WRITABLE`, edge-triggered, for
//! their whole life). The plain path is the socket's own `read` and `write` behind one
//! branch, with no copy added. It never touches the `Poll`.

use std::io::{self, Read, Write};

use mio::net::TcpStream;
use rustls::ClientConnection;

/// The socket, and its TLS state on a `wss://` connection.
#[derive(Debug)]
pub struct Transport {
    sock: TcpStream,
    tls: Option<Box<ClientConnection>>,
    /// TLS only: a socket read in the last `read` came back short. See
    /// [`Transport::emptied_socket`].
    emptied: bool,
}

impl Transport {
    /// The socket alone (`tls` `None`), or TLS over it.
    pub fn new(sock: TcpStream, tls: Option<Box<ClientConnection>>) -> Transport {
        Transport {
            sock,
            tls,
            emptied: false,
        }
    }

    pub fn socket(&self) -> &TcpStream {
        &self.sock
    }

    /// The socket, to register with the poll.
    pub fn socket_mut(&mut self) -> &mut TcpStream {
        &mut self.sock
    }

    /// Whether the last `read`, which returned less than it was offered, emptied the
    /// socket. On plain TCP a short read does; over TLS a short plaintext read says
    /// nothing of the socket (rustls reads it 4 KiB at a time), so it counts only when
    /// the socket read inside it came back short too.
    #[inline]
    pub fn emptied_socket(&self) -> bool {
        self.tls.is_none() || self.emptied
    }
}

/// The socket, noting whether a read came back short (the socket had no more).
struct Probe<'a> {
    sock: &'a mut TcpStream,
    short: bool,
}

impl Read for Probe<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.sock.read(buf)?;
        self.short = n < buf.len();
        Ok(n)
    }
}

/// Writes what TLS has for the socket until it is empty or the socket would block.
fn push(tls: &mut ClientConnection, sock: &mut TcpStream) -> io::Result<()> {
    while tls.wants_write() {
        match tls.write_tls(sock) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl Read for Transport {
    #[inline]
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(tls) = &mut self.tls else {
            return self.sock.read(buf);
        };
        self.emptied = false;
        loop {
            match tls.reader().read(buf) {
                // 0 after the server's close_notify: the end of its stream.
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            if self.emptied {
                // The socket is empty and what came held no whole record: the next
                // bytes raise an edge of their own.
                self.emptied = false;
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let mut probe = Probe {
                sock: &mut self.sock,
                short: false,
            };
            // No plaintext waiting: take more TLS bytes (WouldBlock goes to the caller).
            if tls.read_tls(&mut probe)? == 0 {
                return Ok(0);
            }
            self.emptied = probe.short;
            let processed = tls.process_new_packets();
            // Handshake messages, or the alert that explains a failure, go out now.
            push(tls, &mut self.sock)?;
            if let Err(e) = processed {
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
        }
    }
}

impl Write for Transport {
    #[inline]
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Some(tls) = &mut self.tls else {
            return self.sock.write(buf);
        };
        // Before the handshake is done rustls holds this plaintext and sends it after.
        let n = tls.writer().write(buf)?;
        push(tls, &mut self.sock)?;
        if n == 0 && !buf.is_empty() {
            // rustls holds all it may (64 KiB): the rest waits for the socket to drain.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }

    /// Writes the TLS bytes the socket did not take before; nothing on plain TCP.
    #[inline]
    fn flush(&mut self) -> io::Result<()> {
        match &mut self.tls {
            Some(tls) => push(tls, &mut self.sock),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::net::{SocketAddr, TcpListener};
    use std::path::PathBuf;
    use std::sync::Arc;
    use std::thread::{self, JoinHandle};
    use std::time::{Duration, Instant};

    use mio::{Events, Poll, Token};
    use rustls::pki_types::PrivateKeyDer;
    use rustls::{ServerConfig, ServerConnection, StreamOwned};

    use crate::conn::{Conn, End, Phase, Progress, ReadBuf};
    use crate::tls::{Tls, Trust};
    use crate::ws::{self, Frame};

    type Server = StreamOwned<ServerConnection, std::net::TcpStream>;

    /// A certificate for 127.0.0.1, its PEM in a file of its own, and a server's settings.
    fn certificate(tag: &str) -> (PathBuf, Arc<ServerConfig>) {
        let c = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
        let pem = std::env::temp_dir().join(format!("loadgen-{}-{tag}.pem", std::process::id()));
        std::fs::write(&pem, c.cert.pem()).unwrap();
        let key = PrivateKeyDer::Pkcs8(c.signing_key.serialize_der().into());
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![c.cert.der().clone()], key)
            .unwrap();
        (pem, Arc::new(config))
    }

    /// A one-connection TLS server on loopback that answers the upgrade, then runs `script`.
    fn serve<F>(config: Arc<ServerConfig>, script: F) -> (SocketAddr, JoinHandle<()>)
    where
        F: FnOnce(&mut Server) -> std::io::Result<()> + Send + 'static,
    {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let t = thread::spawn(move || {
            let (tcp, _) = l.accept().unwrap();
            tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut s = StreamOwned::new(ServerConnection::new(config).unwrap(), tcp);
            let run = |s: &mut Server| -> std::io::Result<()> {
                ws::answer_upgrade(s)?;
                script(s)
            };
            // A client that refuses the certificate ends the script early; its test says so.
            let _ = run(&mut s);
        });
        (addr, t)
    }

    /// What a client saw: the text messages, and how it ended.
    #[derive(Default)]
    struct Seen {
        texts: Vec<Vec<u8>>,
        end: Option<End>,
        failed: Option<String>,
    }

    /// Drives `conn` as the engine does (upgrade when connected, flush when writable, read
    /// when readable) until `done` says so or 10 s pass.
    fn drive(
        conn: &mut Conn,
        poll: &mut Poll,
        seen: &mut Seen,
        done: impl Fn(&Conn, &Seen) -> bool,
    ) {
        let mut events = Events::with_capacity(8);
        let mut rb = ReadBuf::new(64 * 1024, true);
        let deadline = Instant::now() + Duration::from_secs(10);
        let on_frame = |texts: &mut Vec<Vec<u8>>, f: Frame<'_>| {
            if let Frame::Text { payload, .. } = f {
                texts.push(payload.to_vec());
            }
            Ok(())
        };
        while !done(conn, seen) && seen.end.is_none() && seen.failed.is_none() {
            assert!(
                Instant::now() < deadline,
                "timed out: {} texts",
                seen.texts.len()
            );
            poll.poll(&mut events, Some(Duration::from_millis(100)))
                .unwrap();
            if events.is_empty() {
                continue;
            }
            match conn.phase() {
                Phase::Connecting => match conn.send_upgrade("127.0.0.1", "/stream") {
                    Ok(_) => {}
                    Err(e) => seen.failed = Some(e.to_string()),
                },
                Phase::Handshaking => {
                    conn.flush().unwrap();
                    match conn.read_upgrade() {
                        Ok(Progress::Waiting) => {}
                        Ok(Progress::Done) => {
                            let texts = &mut seen.texts;
                            seen.end = conn.early_frames(1 << 20, |f, _| on_frame(texts, f));
                        }
                        Err(e) => seen.failed = Some(e.to_string()),
                    }
                }
                Phase::Open | Phase::Closing { .. } => {}
            }
            if conn.is_reading_frames() {
                conn.flush().unwrap();
                let texts = &mut seen.texts;
                let r = conn.read_frames(&mut rb, 1 << 20, |f, _| on_frame(texts, f));
                seen.end = r.end;
            }
        }
    }

    fn client(addr: SocketAddr, trust: &Trust) -> (Conn, Poll) {
        let tls = Tls::new("127.0.0.1", trust).unwrap();
        let mut conn = Conn::connect(addr, Some(&tls), 7, Instant::now()).unwrap();
        let poll = Poll::new().unwrap();
        conn.register(poll.registry(), Token(0)).unwrap();
        (conn, poll)
    }

    #[test]
    fn wss_frames_arrive_whole_and_pings_are_answered() {
        let (pem, config) = certificate("frames");
        let big = vec![b'x'; 40_000];
        let expect = big.clone();
        let (addr, server) = serve(config, move |s| {
            // What a browser would get from a rustls server.
            let kx = s.conn.negotiated_key_exchange_group().map(|g| g.name());
            assert_eq!(kx, Some(rustls::NamedGroup::X25519));
            let suite = s.conn.negotiated_cipher_suite().map(|c| c.suite());
            assert_eq!(suite, Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256));
            // Frames in the same record as the 101, and a ping to answer.
            let mut out = ws::server_frame(ws::OP_TEXT, b"early", true);
            out.extend(ws::server_frame(9, b"hb", true));
            s.write_all(&out)?;
            assert_eq!(ws::read_client_frame(s)?, (ws::OP_PONG, b"hb".to_vec()));
            // A frame over several TLS records, then many small ones in one write.
            let mut out = ws::server_frame(ws::OP_TEXT, &big, true);
            for i in 0..100 {
                out.extend(ws::server_frame(
                    ws::OP_TEXT,
                    format!("m{i}").as_bytes(),
                    true,
                ));
            }
            out.extend(ws::server_frame(ws::OP_CLOSE, &1000u16.to_be_bytes(), true));
            s.write_all(&out)?;
            s.flush()
        });
        let (mut conn, mut poll) = client(addr, &Trust::CaFile(pem.clone()));
        let mut seen = Seen::default();
        drive(&mut conn, &mut poll, &mut seen, |_, _| false);
        server.join().unwrap();
        let _ = std::fs::remove_file(pem);
        assert_eq!(seen.failed, None);
        assert!(matches!(seen.end, Some(End::CloseFrame(Some(1000)))));
        assert_eq!(seen.texts.len(), 102);
        assert_eq!(seen.texts[0], b"early");
        assert_eq!(seen.texts[1], expect);
        assert_eq!(seen.texts[101], b"m99");
    }

    #[test]
    fn tls_bytes_the_socket_did_not_take_go_out_once_it_drains() {
        let (_, config) = certificate("pending");
        // 16 MiB: more than loopback buffers hold while the server reads nothing.
        const FRAMES: usize = 256;
        const SIZE: usize = 64 * 1024;
        let (addr, server) = serve(config, move |s| {
            thread::sleep(Duration::from_millis(300));
            let mut bytes = 0;
            for i in 0..FRAMES {
                let (op, payload) = ws::read_client_frame(s)?;
                assert_eq!(op, ws::OP_TEXT);
                assert!(payload.iter().all(|&b| b == i as u8), "frame {i} garbled");
                bytes += payload.len();
            }
            let reply = ws::server_frame(ws::OP_TEXT, bytes.to_string().as_bytes(), true);
            s.write_all(&reply)?;
            s.flush()
        });
        let (mut conn, mut poll) = client(addr, &Trust::Insecure);
        let mut seen = Seen::default();
        drive(&mut conn, &mut poll, &mut seen, |c, _| c.is_open());
        for i in 0..FRAMES {
            conn.out().text(&[i as u8; SIZE]);
        }
        conn.flush().unwrap();
        assert!(!conn.out().is_empty(), "the socket took 16 MiB at once");
        drive(&mut conn, &mut poll, &mut seen, |_, s| !s.texts.is_empty());
        server.join().unwrap();
        assert_eq!(seen.failed, None);
        assert_eq!(seen.texts, [(FRAMES * SIZE).to_string().into_bytes()]);
    }

    #[test]
    fn a_certificate_the_client_does_not_trust_fails_the_handshake() {
        let (other, _) = certificate("other");
        let (_, config) = certificate("served");
        let (addr, server) = serve(config, |_| Ok(()));
        let (mut conn, mut poll) = client(addr, &Trust::CaFile(other.clone()));
        let mut seen = Seen::default();
        drive(&mut conn, &mut poll, &mut seen, |_, _| false);
        server.join().unwrap();
        let _ = std::fs::remove_file(other);
        let why = seen.failed.expect("the handshake went through");
        assert!(why.contains("certificate"), "{why}");
    }
}
