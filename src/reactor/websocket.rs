//! The WebSocket side of a connection that the reactor keeps to itself: the opening
//! handshake (RFC 6455 section 4.2), server frame headers for ready-made frames, and the
//! mapping from tungstenite's errors to close codes.
//!
//! Inbound frames, fragmentation, control frames, UTF-8 and the close handshake are
//! tungstenite's job; nothing here parses frames.

use tungstenite::Error as WsError;
use tungstenite::error::ProtocolError;
use tungstenite::handshake::derive_accept_key;
use tungstenite::protocol::{Role, WebSocketConfig, WebSocketContext};

use super::http::{Request, Response};
use crate::protocol::ErrorCode;
use crate::protocol::close;

/// Checks an upgrade request; the `Sec-WebSocket-Accept` value when it is good.
pub fn check_upgrade(req: &Request<'_, '_>) -> Result<String, Response> {
    // "The method of the request MUST be GET, and the HTTP version MUST be at least 1.1."
    if req.method != "GET" {
        let e = Response::error(
            405,
            ErrorCode::MethodNotAllowed,
            "use GET to open the stream",
        );
        return Err(e.with_header("Allow", "GET"));
    }
    if req.header("Upgrade").is_none() {
        return Err(upgrade_required("this endpoint speaks WebSocket only"));
    }
    if !req.has_token("Upgrade", "websocket") || !req.has_token("Connection", "upgrade") {
        return Err(bad(
            "Upgrade: websocket and Connection: Upgrade are required",
        ));
    }
    if req.minor_version < 1 {
        return Err(bad("WebSocket needs HTTP/1.1"));
    }
    // "If this version does not match a version understood by the server, the server
    // MUST abort the WebSocket handshake ... and send ... Sec-WebSocket-Version."
    if req.header("Sec-WebSocket-Version") != Some(b"13") {
        return Err(upgrade_required("Sec-WebSocket-Version must be 13"));
    }
    // "A |Sec-WebSocket-Key| header field with a base64-encoded value that, when
    // decoded, is 16 bytes in length."
    match req.header("Sec-WebSocket-Key") {
        Some(key) if is_nonce(key) => Ok(derive_accept_key(key)),
        Some(_) => Err(bad("Sec-WebSocket-Key must be 16 bytes in base64")),
        None => Err(bad("Sec-WebSocket-Key is missing")),
    }
}

/// The 101 response.
pub fn write_accept(out: &mut Vec<u8>, accept: &str) {
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ",
    );
    out.extend_from_slice(accept.as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
}

/// A base64 encoding of 16 bytes: 22 alphabet characters and `==`.
fn is_nonce(key: &[u8]) -> bool {
    let key = key.trim_ascii();
    key.len() == 24
        && key[22..] == *b"=="
        && key[..22]
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/')
}

fn bad(message: &'static str) -> Response {
    Response::error(400, ErrorCode::BadRequest, message)
}

fn upgrade_required(message: &'static str) -> Response {
    Response::error(426, ErrorCode::UpgradeRequired, message)
        .with_header("Upgrade", "websocket")
        .with_header("Sec-WebSocket-Version", "13")
}

/// tungstenite's state machine for a freshly upgraded connection; `early` holds bytes
/// that arrived behind the HTTP head.
pub fn context(early: Vec<u8>, read_buffer: usize, max_message: usize) -> WebSocketContext {
    let config = WebSocketConfig::default()
        .read_buffer_size(read_buffer)
        // Frames go straight into our out buffer; tungstenite keeps none of its own.
        .write_buffer_size(0)
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message));
    WebSocketContext::from_partially_read(early, Role::Server, Some(config))
}

/// Longest frame header: two bytes and a 64-bit length.
pub const MAX_HEADER: usize = 10;

/// The header of an unmasked, final text frame with a payload of `len` bytes, as a buffer
/// and the length of the header in it.
pub fn text_frame_header(len: usize) -> ([u8; MAX_HEADER], usize) {
    let mut h = [0; MAX_HEADER];
    h[0] = 0x81;
    let used = if len < 126 {
        h[1] = len as u8;
        2
    } else if let Ok(len) = u16::try_from(len) {
        h[1] = 126;
        h[2..4].copy_from_slice(&len.to_be_bytes());
        4
    } else {
        h[1] = 127;
        h[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    };
    (h, used)
}

/// Appends a text frame whose payload `body` writes, without knowing its length up front.
pub fn text_frame(out: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>)) {
    // Reserve the longest header, write the payload, then close the gap.
    let start = out.len();
    out.extend_from_slice(&[0; MAX_HEADER]);
    body(out);
    let len = out.len() - start - MAX_HEADER;
    let (header, used) = text_frame_header(len);
    out.copy_within(start + MAX_HEADER.., start + used);
    out.truncate(out.len() - (MAX_HEADER - used));
    out[start..start + used].copy_from_slice(&header[..used]);
}

/// What to do after tungstenite reports an error on read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadFault {
    /// Nothing more to read now.
    WouldBlock,
    /// The connection is finished or gone: close it without a frame.
    Gone,
    /// Close it with this code.
    Close(u16, &'static str),
}

/// Maps a read error to what the reactor does next.
pub fn read_fault(e: &WsError) -> ReadFault {
    match e {
        WsError::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock => ReadFault::WouldBlock,
        WsError::Io(_) | WsError::ConnectionClosed | WsError::AlreadyClosed => ReadFault::Gone,
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => ReadFault::Gone,
        WsError::Capacity(_) => ReadFault::Close(close::TOO_BIG, "message too big"),
        WsError::Utf8(_) => ReadFault::Close(close::INVALID_PAYLOAD, "invalid UTF-8"),
        _ => ReadFault::Close(close::PROTOCOL, "protocol error"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reactor::http::{Limits, MAX_HEADERS, Parsed, parse};

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn check(head: &str) -> Result<String, u16> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let limits = Limits {
            max_head: 4096,
            max_body: 0,
        };
        let Parsed::Complete(req, _) = parse(head.as_bytes(), &mut headers, limits) else {
            panic!("not a request: {head}")
        };
        check_upgrade(&req).map_err(|r| r.status)
    }

    fn upgrade(extra: &str) -> String {
        format!("GET /stream HTTP/1.1\r\nHost: x\r\n{extra}\r\n")
    }

    #[test]
    fn handshake_table() {
        let good = format!(
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\n"
        );
        // RFC 6455 section 1.3's worked example.
        assert_eq!(
            check(&upgrade(&good)),
            Ok("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".into())
        );
        let cases = [
            (upgrade(""), 426),
            (upgrade(&good.replace("Version: 13", "Version: 8")), 426),
            (upgrade(&good.replace(KEY, "short")), 400),
            (
                upgrade(&good.replace(&format!("Sec-WebSocket-Key: {KEY}\r\n"), "")),
                400,
            ),
            (
                upgrade(&good.replace("Connection: Upgrade", "Connection: keep-alive")),
                400,
            ),
            (
                upgrade(&good.replace("Upgrade: websocket", "Upgrade: h2c")),
                400,
            ),
            (upgrade(&good).replace("GET", "POST"), 405),
            (upgrade(&good).replace("HTTP/1.1", "HTTP/1.0"), 400),
        ];
        for (head, want) in cases {
            assert_eq!(check(&head), Err(want), "{head}");
        }
    }

    #[test]
    fn frame_headers_for_every_length_class() {
        for (len, header_len) in [(0, 2), (125, 2), (126, 4), (65_535, 4), (65_536, 10)] {
            let mut out = vec![7];
            text_frame(&mut out, |b| b.extend(std::iter::repeat_n(b'x', len)));
            assert_eq!(out.len(), 1 + header_len + len, "len {len}");
            assert_eq!(out[1], 0x81);
            let (direct, used) = text_frame_header(len);
            assert_eq!(&out[1..1 + header_len], &direct[..used]);
        }
    }
}
