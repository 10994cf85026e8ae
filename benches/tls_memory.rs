//! What an idle TLS connection holds on the server, part by part: the connection state
//! rustls allocates, what the handshake leaves behind, and the buffers a request and its
//! answer leave allocated. Counted by a global allocator over 1,000 connections, each
//! handshaken in memory against a client (then dropped) with the server's own settings.
//! Run with `cargo bench --bench tls_memory`; figures are in perf/RESULTS.md ("TLS").

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicIsize, Ordering};

use std::sync::Arc;

use rustls::{ClientConfig, ClientConnection, Connection, ServerConfig, ServerConnection};
use scanstream::tls::{Trust, client_config, server_config};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const CONNECTIONS: usize = 1000;

/// An upgrade request and a subscribe frame's worth of bytes; and the answer's.
const REQUEST: usize = 300;
const ANSWER: usize = 400;

/// Moves every TLS byte one side has for the other.
fn pump(from: &mut Connection, to: &mut Connection) {
    let mut wire = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut wire).unwrap();
    }
    let mut rd = &wire[..];
    while !rd.is_empty() {
        to.read_tls(&mut rd).unwrap();
        to.process_new_packets().unwrap();
    }
}

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

fn per_connection(before: isize) -> isize {
    (live() - before) / CONNECTIONS as isize
}

/// `CONNECTIONS` server connections, each handshaken with a client of its own that is
/// then dropped, after a request and an answer when `exchange`.
fn connections(
    server: &Arc<ServerConfig>,
    client: &Arc<ClientConfig>,
    exchange: bool,
) -> Vec<Connection> {
    let mut buf = vec![0u8; 4096];
    (0..CONNECTIONS)
        .map(|_| {
            let mut s: Connection = ServerConnection::new(server.clone()).unwrap().into();
            let name = "localhost".try_into().unwrap();
            let mut c: Connection = ClientConnection::new(client.clone(), name).unwrap().into();
            while s.is_handshaking() || c.is_handshaking() {
                pump(&mut c, &mut s);
                pump(&mut s, &mut c);
            }
            if exchange {
                c.writer().write_all(&[b'x'; REQUEST]).unwrap();
                pump(&mut c, &mut s);
                assert_eq!(s.reader().read(&mut buf).unwrap(), REQUEST);
                s.writer().write_all(&[b'y'; ANSWER]).unwrap();
                pump(&mut s, &mut c);
            }
            s
        })
        .collect()
}

fn main() {
    let dir = std::env::temp_dir().join(format!("tls-memory-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let server = server_config(&cert, &key).unwrap();
    let client = client_config(&Trust::InsecureSkipVerify).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();

    let base = live();
    let fresh: Vec<Connection> = (0..CONNECTIONS)
        .map(|_| ServerConnection::new(server.clone()).unwrap().into())
        .collect();
    let new = per_connection(base);
    drop(fresh);

    let base = live();
    let handshaken = connections(&server, &client, false);
    let after_handshake = per_connection(base);
    drop(handshaken);

    let base = live();
    let idle = connections(&server, &client, true);
    let after_exchange = per_connection(base);
    drop(idle);

    let boxed = std::mem::size_of::<ServerConnection>();
    println!("server-side heap per TLS connection, {CONNECTIONS} connections");
    println!("  ServerConnection itself (boxed in the Transport):  {boxed:>6} B");
    println!("  after ServerConnection::new:                       {new:>6} B");
    println!("  idle after the handshake:                          {after_handshake:>6} B");
    println!(
        "  idle after a {REQUEST} B request and a {ANSWER} B answer:       {after_exchange:>6} B"
    );
}
