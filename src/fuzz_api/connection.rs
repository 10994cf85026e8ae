//! The inbound path of one connection, fuzzed over loopback: bytes go to a real server,
//! shared by the whole fuzzing process, over plain TCP or TLS, and what comes back must
//! be something a server may send, and the server must close and live on.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::ClientConfig;

use super::{FUZZ_TOKEN, check_server_bytes, check_tls_records, tls};
use crate::config::Config;

/// The inbound path of one connection: `data` goes to a real server over loopback (its
/// first byte picks how, below), the writing side is shut, and everything the server
/// sends back until it closes must be well-formed HTTP responses, then, after a `101`,
/// well-formed server frames. A server that does not close within the read timeout
/// after the client's end of input fails too.
///
/// - `0`: the rest as raw bytes;
/// - `1`: a valid upgrade request, then the rest as raw bytes (frames, masked or not);
/// - `2`: a valid upgrade request, then the rest split at `0xFF` bytes into messages,
///   each a masked frame whose opcode is its first byte's low nibble (FIN unless bit
///   `0x10` is set) and whose payload is the remainder, so a fuzzer can write JSON.
pub fn connection(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let input = plaintext(mode, rest);
    let server = plain_server();
    let mut stream = connect(server.addr);
    // A reset (the server closing with our bytes unread) is an answer too.
    let _ = stream.write_all(&input);
    let _ = stream.shutdown(Shutdown::Write);
    let out = read_until_closed(&mut stream);
    check_answer(server, &input, &out, Expect::Http);
}

/// [`connection`] on a server that speaks TLS, with the same first byte:
///
/// - `0`: the rest as raw bytes on the socket where a client's handshake belongs: the
///   server must answer with TLS records only (an alert, say) and close;
/// - `1`, `2`: a client that trusts the server's certificate completes the handshake and
///   sends what [`connection`] sends, encrypted; what it decrypts meets the same checks.
pub fn connection_tls(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let input = plaintext(mode, rest);
    let (server, trust) = tls_server();
    let mut socket = connect(server.addr);
    if mode % 3 == 0 {
        let _ = socket.write_all(&input);
        let _ = socket.shutdown(Shutdown::Write);
        let out = read_until_closed(&mut socket);
        check_answer(server, &input, &out, Expect::TlsRecords);
        return;
    }
    let mut client = tls::client(trust, socket);
    tls::send_and_finish(&mut client, &input);
    let out = read_until_closed(&mut tls::Plaintext(&mut client));
    assert!(
        !client.conn.is_handshaking(),
        "the handshake failed for a client that trusts the certificate"
    );
    check_answer(server, &input, &out, Expect::Http);
}

/// The bytes a client sends in `mode` (see [`connection`]).
fn plaintext(mode: u8, rest: &[u8]) -> Vec<u8> {
    let mut input = Vec::with_capacity(rest.len() + 256);
    match mode % 3 {
        0 => input.extend_from_slice(rest),
        1 => {
            input.extend_from_slice(UPGRADE);
            input.extend_from_slice(rest);
        }
        _ => {
            input.extend_from_slice(UPGRADE);
            for chunk in rest.split(|&b| b == 0xFF) {
                let Some((&head, payload)) = chunk.split_first() else {
                    continue;
                };
                masked_frame(&mut input, head, payload);
            }
        }
    }
    input
}

const UPGRADE: &[u8] = b"GET /stream HTTP/1.1\r\nHost: fuzz\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Authorization: Bearer fuzz-token-123\r\nSec-WebSocket-Version: 13\r\n\r\n";

fn masked_frame(out: &mut Vec<u8>, head: u8, payload: &[u8]) {
    let fin = if head & 0x10 == 0 { 0x80 } else { 0 };
    out.push(fin | (head & 0x0F));
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= usize::from(u16::MAX) {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    let mask = [0x37, 0xFA, 0x21, 0x3D];
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect to the fuzz server");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    stream
}

/// Everything the server sends until it closes. A reset ends it too, and so does a TLS
/// server's FIN without `close_notify`: the server may cut a client off, as long as it
/// does not hang.
fn read_until_closed(from: &mut impl Read) -> Vec<u8> {
    let mut out = Vec::new();
    match from.read_to_end(&mut out) {
        Ok(_) => {}
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::ConnectionReset | ErrorKind::UnexpectedEof
            ) => {}
        Err(e) => panic!("no clean end after the client's end of input: {e}"),
    }
    out
}

/// What a client may get back.
#[derive(Clone, Copy)]
enum Expect {
    /// HTTP, then WebSocket after a `101`: the bytes in the clear or decrypted.
    Http,
    /// TLS records, to a client that never completed a handshake.
    TlsRecords,
}

/// The checks on every answer: the server lives, `out` is what `expect` says, nothing
/// was upgraded without the token, and the valid upgrade was.
fn check_answer(server: &FuzzServer, input: &[u8], out: &[u8], expect: Expect) {
    // A panic on the server's thread shows here, on the input that caused it.
    assert!(!server.thread.is_finished(), "the server's thread ended");
    let checked = match expect {
        Expect::Http => check_server_bytes(out),
        Expect::TlsRecords => check_tls_records(out),
    };
    if let Err(why) = checked {
        panic!(
            "{why}\ninput: {input:?}\noutput: {:?}",
            String::from_utf8_lossy(out)
        );
    }
    let has_token = input
        .windows(FUZZ_TOKEN.len())
        .any(|w| w == FUZZ_TOKEN.as_bytes());
    if !has_token && out.starts_with(b"HTTP/1.1 101") {
        panic!("an upgrade without the token\ninput: {input:?}");
    }
    // Else modes 1 and 2 would fuzz nothing past the HTTP head, as they did while the
    // server refused the fuzz `Host`. A reset may cut the answer short.
    const UPGRADED: &[u8] = b"HTTP/1.1 101 ";
    if matches!(expect, Expect::Http) && input.starts_with(UPGRADE) {
        let first = &out[..out.len().min(UPGRADED.len())];
        assert!(
            UPGRADED.starts_with(first),
            "the valid upgrade was refused: {:?}",
            String::from_utf8_lossy(out)
        );
    }
}

type ServerThread = std::thread::JoinHandle<Result<(), crate::ServerError>>;

/// A server running for the whole fuzzing process.
struct FuzzServer {
    addr: SocketAddr,
    thread: ServerThread,
}

impl FuzzServer {
    /// With a token and an origin list, streaming a few results a second so
    /// subscriptions get frames too; `tls` adds the certificate and key.
    fn start(tls: impl FnOnce(&mut Config)) -> FuzzServer {
        let mut config = Config {
            listen: ([127, 0, 0, 1], 0).into(),
            source: crate::SourceSpec::Firehose { rate: 200 },
            token: FUZZ_TOKEN.parse().ok(),
            // The `Host` of the valid upgrade: a loopback server answers no other name.
            allow_host: vec!["fuzz".parse().expect("host")],
            allow_origin: vec!["https://desk.example.com".parse().expect("origin")],
            ..Config::default()
        };
        tls(&mut config);
        let server = crate::Server::bind(config).expect("bind the fuzz server");
        let addr = server.local_addr();
        FuzzServer {
            addr,
            thread: std::thread::spawn(move || server.run()),
        }
    }
}

fn plain_server() -> &'static FuzzServer {
    static SERVER: OnceLock<FuzzServer> = OnceLock::new();
    SERVER.get_or_init(|| FuzzServer::start(|_| {}))
}

/// The TLS server, and a client configuration that trusts its certificate.
fn tls_server() -> (&'static FuzzServer, &'static Arc<ClientConfig>) {
    static SERVER: OnceLock<(FuzzServer, Arc<ClientConfig>)> = OnceLock::new();
    let (server, trust) = SERVER.get_or_init(|| {
        tls::with_test_pair(|cert, key| {
            FuzzServer::start(|c| {
                c.tls_cert = Some(cert);
                c.tls_key = Some(key);
            })
        })
    });
    (server, trust)
}
