//! Entry points for the fuzz targets in `fuzz/` (another crate) and their regression
//! tests; not an API. Each takes arbitrary bytes, runs them through the same code the
//! server runs on input from the network or from files, and panics only when an
//! invariant breaks (a panic is what the fuzzer reports).

use std::time::{Instant, SystemTime};

use crate::config::Config;
use crate::event::{EventKind, Scan, ScanEvent, ScanResult};
use crate::protocol::{ClientMessage, Filter, parse_request};
use crate::reactor::access::Access;
use crate::reactor::http::{self, Limits, MAX_HEADERS, Parsed, Response};
use crate::reactor::websocket::check_upgrade;
use crate::scanner::{CsvReplay, Speed, parse_line};

const LIMITS: Limits = Limits {
    max_head: 16 * 1024,
    max_body: 64 * 1024,
};

/// One HTTP request head (and body) as the reactor parses it, then the checks a request
/// meets before routing: host, origin, token, upgrade. Every answer must encode as HTTP.
pub fn http_head(data: &[u8]) {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let response = match http::parse(data, &mut headers, LIMITS) {
        Parsed::Partial => {
            assert!(data.len() <= LIMITS.max_head + LIMITS.max_body);
            return;
        }
        Parsed::Error(e) => {
            assert!(matches!(e.status, 400 | 413 | 431 | 501 | 505), "{e:?}");
            Response::from(e)
        }
        Parsed::Complete(req, used) => {
            assert!(used <= data.len() && used > 0);
            assert!(req.body.len() <= LIMITS.max_body);
            let _ = req.keep_alive();
            let access = Access::new(&Config {
                token: FUZZ_TOKEN.parse().ok(),
                allow_origin: vec!["https://desk.example.com".parse().expect("origin")],
                ..Config::default()
            });
            if let Some(refusal) = access.check_host(&req) {
                assert_eq!(refusal.status, 403);
                refusal
            } else if let Some(refusal) = access.check_origin(&req) {
                refusal
            } else if let Some(refusal) = access.check_token(&req, true) {
                refusal
            } else {
                match check_upgrade(&req) {
                    Ok(accept) => {
                        assert_eq!(accept.len(), 28, "base64 of a SHA-1");
                        return;
                    }
                    Err(response) => response,
                }
            }
        }
    };
    let mut out = Vec::new();
    response.write(&mut out, false);
    let mut parsed = [httparse::EMPTY_HEADER; 16];
    let mut res = httparse::Response::new(&mut parsed);
    assert!(
        matches!(res.parse(&out), Ok(httparse::Status::Complete(_))),
        "the answer is not HTTP: {}",
        String::from_utf8_lossy(&out)
    );
}

/// One client text message as a WebSocket session decodes it; a subscribe's filter is
/// then matched against a result, and a filter read on its own must agree.
pub fn client_message(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return; // The WebSocket layer closes with 1007 before a message gets here.
    };
    if let Ok(req) = parse_request(text, 1024) {
        if let ClientMessage::Subscribe(sub) = req.message {
            let _ = sub.filter.matches(&sample_event());
        }
    }
    let value = serde_json::from_slice(data).ok();
    if let Ok(filter) = Filter::from_json(value, 1024) {
        let _ = filter.matches(&sample_event());
    }
}

fn sample_event() -> ScanEvent {
    let result = ScanResult {
        symbol: "AAPL".into(),
        scan: Scan::PriceChange,
        event: EventKind::New,
        score: 3.0,
        price: 190.0,
        change_pct: -4.0,
        volume: 1000,
        volume_ratio: 2.0,
        rsi: Some(40.0),
        source_ts: None,
        adhoc: false,
    };
    ScanEvent::publish(&result, 1, SystemTime::UNIX_EPOCH)
}

/// A CSV file as the replay feed reads it: bad rows are counted, never fatal.
pub fn csv_file(data: &[u8]) {
    let _ = CsvReplay::from_reader("fuzz.csv", data, Speed::Max, Instant::now());
}

/// One JSONL line as the JSONL feed reads it.
pub fn jsonl_line(data: &[u8]) {
    if let Ok(line) = std::str::from_utf8(data) {
        if let Ok(tick) = parse_line(line) {
            assert!(tick.price.is_finite() && tick.price > 0.0);
        }
    }
}

/// A config file: parsed, merged over the defaults, range-checked, rules compiled.
pub fn config_file(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Config::from_text(text);
    }
}

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
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpStream};

    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut input = Vec::with_capacity(data.len() + 256);
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
    let (addr, alive) = fuzz_server();
    let mut stream = TcpStream::connect(addr).expect("connect to the fuzz server");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .expect("timeout");
    // A reset (the server closing with our bytes unread) is an answer too.
    let _ = stream.write_all(&input);
    let _ = stream.shutdown(Shutdown::Write);
    let mut out = Vec::new();
    match stream.read_to_end(&mut out) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the server did not close after the client's end of input: {e}"),
    }
    // A panic on the server's thread shows here, on the input that caused it.
    assert!(alive(), "the server's thread ended");
    if let Err(why) = check_server_bytes(&out) {
        panic!(
            "{why}\ninput: {input:?}\noutput: {:?}",
            String::from_utf8_lossy(&out)
        );
    }
    // Without the token, nothing may be let through.
    let has_token = input
        .windows(FUZZ_TOKEN.len())
        .any(|w| w == FUZZ_TOKEN.as_bytes());
    if !has_token && out.starts_with(b"HTTP/1.1 101") {
        panic!("an upgrade without the token\ninput: {input:?}");
    }
}

/// The fuzz server's token: the valid upgrade carries it, and nothing without it may be
/// upgraded.
const FUZZ_TOKEN: &str = "fuzz-token-123";

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

type ServerThread = std::thread::JoinHandle<Result<(), crate::ServerError>>;

/// One server for the whole fuzzing process, with a token and an origin list, streaming a
/// few results a second so subscriptions get frames too. Returns its address and whether
/// its thread still runs.
fn fuzz_server() -> (std::net::SocketAddr, impl Fn() -> bool) {
    static SERVER: std::sync::OnceLock<(std::net::SocketAddr, ServerThread)> =
        std::sync::OnceLock::new();
    let (addr, thread) = SERVER.get_or_init(|| {
        let config = Config {
            listen: ([127, 0, 0, 1], 0).into(),
            source: crate::SourceSpec::Firehose { rate: 200 },
            token: FUZZ_TOKEN.parse().ok(),
            allow_origin: vec!["https://desk.example.com".parse().expect("origin")],
            ..Config::default()
        };
        let server = crate::Server::bind(config).expect("bind the fuzz server");
        let addr = server.local_addr();
        (addr, std::thread::spawn(move || server.run()))
    });
    (*addr, move || !thread.is_finished())
}

/// What a server may send: HTTP responses (each with `Content-Length`), and after a
/// `101` only unmasked, well-formed frames, ending with a close frame or not at all. The
/// server may stop anywhere once the client has gone, so a cut-off last response or
/// frame is accepted.
pub fn check_server_bytes(mut out: &[u8]) -> Result<(), String> {
    while !out.is_empty() {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut res = httparse::Response::new(&mut headers);
        let head = match res.parse(out) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(()),
            Err(e) => return Err(format!("not an HTTP response: {e}")),
        };
        let status = res.code.unwrap_or(0);
        if status == 101 {
            return check_frames(&out[head..]);
        }
        if !(200..600).contains(&status) {
            return Err(format!("status {status}"));
        }
        let len = res
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .and_then(|h| std::str::from_utf8(h.value).ok()?.parse::<usize>().ok())
            .ok_or("a response without Content-Length")?;
        if status >= 400 {
            let body = out.get(head..head + len).unwrap_or(&out[head..]);
            if body.len() == len {
                let v: serde_json::Value =
                    serde_json::from_slice(body).map_err(|e| format!("error body: {e}"))?;
                if !v["code"].is_string() || !v["message"].is_string() {
                    return Err(format!("error body without code and message: {v}"));
                }
            }
        }
        out = out.get(head + len..).unwrap_or_default();
    }
    Ok(())
}

fn check_frames(mut out: &[u8]) -> Result<(), String> {
    while out.len() >= 2 {
        let (b0, b1) = (out[0], out[1]);
        if b0 & 0x70 != 0 {
            return Err(format!("reserved bits set: {b0:#04x}"));
        }
        if b1 & 0x80 != 0 {
            return Err("a masked server frame".to_owned());
        }
        let opcode = b0 & 0x0F;
        let (len, at): (usize, usize) = match b1 & 0x7F {
            126 if out.len() >= 4 => (usize::from(u16::from_be_bytes([out[2], out[3]])), 4),
            127 if out.len() >= 10 => {
                let mut n = [0; 8];
                n.copy_from_slice(&out[2..10]);
                (
                    usize::try_from(u64::from_be_bytes(n)).unwrap_or(usize::MAX),
                    10,
                )
            }
            126 | 127 => return Ok(()),
            n => (usize::from(n), 2),
        };
        let Some(payload) = out.get(at..at.saturating_add(len)) else {
            return Ok(()); // cut off
        };
        match opcode {
            0x1 if b0 & 0x80 != 0 => {
                let text = std::str::from_utf8(payload).map_err(|e| format!("text frame: {e}"))?;
                let v: serde_json::Value =
                    serde_json::from_str(text).map_err(|e| format!("text frame: {e}: {text}"))?;
                if !v["type"].is_string() {
                    return Err(format!("a message without a type: {text}"));
                }
            }
            0x8 => {
                if len == 1 || len > 125 {
                    return Err(format!("close frame of {len} bytes"));
                }
                if len >= 2 {
                    let code = u16::from_be_bytes([payload[0], payload[1]]);
                    let valid = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
                    if !valid {
                        return Err(format!("close code {code}"));
                    }
                    std::str::from_utf8(&payload[2..]).map_err(|e| format!("close reason: {e}"))?;
                }
                if out.len() > at + len {
                    return Err("bytes after the close frame".to_owned());
                }
            }
            0x9 | 0xA if len > 125 || b0 & 0x80 == 0 => {
                return Err("a fragmented or long control frame".to_owned());
            }
            0x9 | 0xA => {}
            _ => return Err(format!("opcode {opcode:#x} from the server")),
        }
        out = &out[at + len..];
    }
    Ok(())
}
