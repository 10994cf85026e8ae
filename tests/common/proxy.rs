//! A TCP proxy between a client and a server, which a test can cut, freeze, make refuse,
//! or switch to another server, and which records the text messages clients send.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use super::{Frame, parse_client_frame};

/// The proxy's open connections: the client side, and whether it is frozen.
type Conns = Arc<Mutex<Vec<(TcpStream, Arc<AtomicBool>)>>>;

/// A TCP proxy in front of a server, which a test can cut, freeze or make refuse, and
/// which records the text messages clients send through it.
pub struct Proxy {
    pub addr: SocketAddr,
    /// Where new connections go.
    upstream: Arc<Mutex<SocketAddr>>,
    conns: Conns,
    /// Set: new connections are dropped at once.
    pub refuse: Arc<AtomicBool>,
    sent: Arc<Mutex<Vec<String>>>,
}

impl Proxy {
    pub fn new(upstream: SocketAddr) -> Proxy {
        let upstream = Arc::new(Mutex::new(upstream));
        let to = Arc::clone(&upstream);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let conns: Conns = Arc::default();
        let refuse = Arc::new(AtomicBool::new(false));
        let sent: Arc<Mutex<Vec<String>>> = Arc::default();
        let (c, r, s) = (conns.clone(), refuse.clone(), sent.clone());
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if r.load(Ordering::SeqCst) {
                    continue; // dropped: the client sees the connection close
                }
                let at = *to.lock().unwrap();
                let Ok(server) = TcpStream::connect(at) else {
                    continue;
                };
                let frozen = Arc::new(AtomicBool::new(false));
                c.lock()
                    .unwrap()
                    .push((client.try_clone().unwrap(), frozen.clone()));
                let (client2, server2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let s = s.clone();
                thread::spawn(move || upstream_copy(client, server, s));
                thread::spawn(move || downstream_copy(server2, client2, frozen));
            }
        });
        Proxy {
            addr,
            upstream,
            conns,
            refuse,
            sent,
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/stream", self.addr)
    }

    /// Sends new connections to `upstream` and cuts the open ones: a load balancer that
    /// moved its clients to another server.
    pub fn switch_to(&self, upstream: SocketAddr) {
        *self.upstream.lock().unwrap() = upstream;
        self.cut();
    }

    /// Cuts every connection through the proxy.
    pub fn cut(&self) {
        for (conn, _) in self.conns.lock().unwrap().drain(..) {
            let _ = conn.shutdown(Shutdown::Both);
        }
    }

    /// Stops forwarding the server's bytes on the open connections, leaving them open:
    /// a server that went silent.
    pub fn freeze(&self) {
        for (_, frozen) in self.conns.lock().unwrap().iter() {
            frozen.store(true, Ordering::SeqCst);
        }
    }

    /// The client messages' types, in order.
    pub fn sent_types(&self) -> Vec<serde_json::Value> {
        self.sent
            .lock()
            .unwrap()
            .iter()
            .map(|t| serde_json::from_str(t).unwrap())
            .collect()
    }
}

/// Client to server: decodes the client's (masked) text frames and forwards the bytes.
fn upstream_copy(mut from: TcpStream, mut to: TcpStream, sent: Arc<Mutex<Vec<String>>>) {
    let mut buf = [0u8; 16 * 1024];
    let mut pending = Vec::new();
    let mut in_frames = false;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buf[..n]);
        if !in_frames {
            if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                pending.drain(..end + 4);
                in_frames = true;
            }
        }
        if in_frames {
            // Recorded before forwarded: a message the server has answered is in `sent`.
            while let Some((frame, used)) = parse_client_frame(&pending) {
                // Bytes that only look like a frame (TLS records) are not recorded.
                if let Frame::Text(text) = frame {
                    if let Ok(text) = String::from_utf8(text) {
                        sent.lock().unwrap().push(text);
                    }
                }
                pending.drain(..used);
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

/// Server to client, unless frozen.
fn downstream_copy(mut from: TcpStream, mut to: TcpStream, frozen: Arc<AtomicBool>) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if frozen.load(Ordering::SeqCst) {
            continue;
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}
