//! The TLS side of the connection target: a fixed test certificate for the server, and a
//! client that trusts exactly it. Nothing here may be used outside fuzzing and its tests.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

use crate::tls::{Trust, client_config};

/// A self-signed ECDSA P-256 pair for `localhost`, valid from 1975 to 4096, made once
/// with rcgen's `generate_simple_self_signed` and committed: rcgen is only a
/// dev-dependency, a fixed pair keeps every run of a fuzz input the same, and a fuzz
/// binary built elsewhere (OSS-Fuzz) carries it without the checkout. The key guards
/// nothing but this loopback server.
const CERT: &str = include_str!("../../fuzz/tls/cert.pem");
const KEY: &str = include_str!("../../fuzz/tls/key.pem");

/// Runs `bind` with the test pair's files (the server reads its pair from files, as
/// `--tls-cert` and `--tls-key` give them), and a client configuration that trusts the
/// certificate and nothing else. The files go once both have been read.
pub fn with_test_pair<T>(bind: impl FnOnce(PathBuf, PathBuf) -> T) -> (T, Arc<ClientConfig>) {
    let dir = std::env::temp_dir().join(format!("scanstream-fuzz-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a directory for the test pair");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, CERT).expect("write the test certificate");
    std::fs::write(&key, KEY).expect("write the test key");
    let trust = client_config(&Trust::CaFile(cert.clone())).expect("trust the test certificate");
    let bound = bind(cert, key);
    let _ = std::fs::remove_dir_all(&dir);
    (bound, trust)
}

/// A TLS client on `socket`; the handshake runs on its first write.
pub type Client = StreamOwned<ClientConnection, TcpStream>;

/// A client for the test certificate's name, trusting `config`.
pub fn client(config: &Arc<ClientConfig>, socket: TcpStream) -> Client {
    let name = ServerName::try_from("localhost").expect("a server name");
    let conn = ClientConnection::new(Arc::clone(config), name).expect("a TLS client");
    StreamOwned::new(conn, socket)
}

/// Sends `plaintext` and then the end of it: `close_notify`, then the socket's FIN. A
/// failed write (the server has gone) stops there, as it does over plain TCP.
pub fn send_and_finish(client: &mut Client, plaintext: &[u8]) {
    if client.write_all(plaintext).is_ok() {
        client.conn.send_close_notify();
        let _ = client.flush();
    }
    let _ = client.sock.shutdown(Shutdown::Write);
}

/// The server's plaintext, read without writing anything more: after a failed write,
/// [`StreamOwned`] would retry the write on every read and never reach what the server
/// said.
pub struct Plaintext<'a>(pub &'a mut Client);

impl Read for Plaintext<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let StreamOwned { conn, sock } = &mut *self.0;
        loop {
            // Ok(0) after the server's close_notify, UnexpectedEof after a FIN without it.
            match conn.reader().read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                done => return done,
            }
            conn.read_tls(sock)?;
            conn.process_new_packets()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        }
    }
}
