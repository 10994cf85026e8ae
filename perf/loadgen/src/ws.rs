//! The client side of RFC 6455 framing, by hand: the hot path of the load generator reads
//! millions of frames a second, so parsing borrows from the read buffer and never allocates.

/// One parsed frame; the payload borrows from the read buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A text frame; `fin` false opens a fragmented message.
    Text {
        fin: bool,
        payload: &'a [u8],
    },
    Binary {
        fin: bool,
        payload: &'a [u8],
    },
    Continuation {
        fin: bool,
        payload: &'a [u8],
    },
    Ping(&'a [u8]),
    Pong(&'a [u8]),
    /// The status code, when the close frame carries one.
    Close(Option<u16>),
}

/// What `parse` found at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// A whole frame and the bytes it took.
    Frame(Frame<'a>, usize),
    /// Not enough bytes yet; `need` is the whole frame's size when the header is complete,
    /// else the header's, so a caller knows how large its buffer must grow.
    Incomplete { need: usize },
}

/// Frames a client must not accept; each maps to the close code RFC 6455 prescribes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsError {
    /// Reserved bits, a reserved opcode, a masked server frame or a bad control frame.
    Protocol(&'static str),
    /// A frame larger than the configured limit.
    TooBig(u64),
}

impl WsError {
    pub fn close_code(self) -> u16 {
        match self {
            WsError::Protocol(_) => 1002,
            WsError::TooBig(_) => 1009,
        }
    }
}

impl std::fmt::Display for WsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WsError::Protocol(why) => write!(f, "protocol error: {why}"),
            WsError::TooBig(n) => write!(f, "frame of {n} bytes over the limit"),
        }
    }
}

/// Parses the frame at the start of `buf`; frames whose payload exceeds `max_payload`
/// are refused before their bytes arrive.
#[inline]
pub fn parse(buf: &[u8], max_payload: usize) -> Result<Parsed<'_>, WsError> {
    if buf.len() < 2 {
        return Ok(Parsed::Incomplete { need: 2 });
    }
    let b0 = buf[0];
    let b1 = buf[1];
    let fin = b0 & 0x80 != 0;
    if b0 & 0x70 != 0 {
        // No extension is ever negotiated, so the RSV bits must be clear.
        return Err(WsError::Protocol("reserved bits set"));
    }
    if b1 & 0x80 != 0 {
        // "A client MUST close a connection if it detects a masked frame."
        return Err(WsError::Protocol("masked frame from the server"));
    }
    let opcode = b0 & 0x0F;
    let (len, header) = match b1 & 0x7F {
        126 => {
            if buf.len() < 4 {
                return Ok(Parsed::Incomplete { need: 4 });
            }
            (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(Parsed::Incomplete { need: 10 });
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(b), 10)
        }
        n => (u64::from(n), 2),
    };
    if len > max_payload as u64 {
        return Err(WsError::TooBig(len));
    }
    // Cannot overflow: len <= max_payload, a usize.
    let total = header + len as usize;
    if buf.len() < total {
        return Ok(Parsed::Incomplete { need: total });
    }
    let payload = &buf[header..total];
    if opcode >= 8 && (!fin || len > 125) {
        return Err(WsError::Protocol("fragmented or oversized control frame"));
    }
    let frame = match opcode {
        0 => Frame::Continuation { fin, payload },
        1 => Frame::Text { fin, payload },
        2 => Frame::Binary { fin, payload },
        8 => match payload.len() {
            0 => Frame::Close(None),
            1 => return Err(WsError::Protocol("close frame with a 1-byte payload")),
            _ => Frame::Close(Some(u16::from_be_bytes([payload[0], payload[1]]))),
        },
        9 => Frame::Ping(payload),
        10 => Frame::Pong(payload),
        _ => return Err(WsError::Protocol("reserved opcode")),
    };
    Ok(Parsed::Frame(frame, total))
}

pub const OP_TEXT: u8 = 1;
pub const OP_CLOSE: u8 = 8;
pub const OP_PONG: u8 = 10;

/// Appends one final, masked client frame (clients must mask every frame).
pub fn write_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: [u8; 4]) {
    out.push(0x80 | opcode);
    let n = payload.len();
    if n < 126 {
        out.push(0x80 | n as u8);
    } else if n <= 0xFFFF {
        out.push(0x80 | 126);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(n as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
}

/// Appends a masked close frame carrying `code`.
pub fn write_close(out: &mut Vec<u8>, code: u16, mask: [u8; 4]) {
    write_frame(out, OP_CLOSE, &code.to_be_bytes(), mask);
}

/// A whole unmasked server frame (`fin` false for a fragment), for tests that play the
/// server.
pub fn server_frame(opcode: u8, payload: &[u8], fin: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 10);
    write_server_header(&mut out, opcode, payload.len());
    if !fin {
        out[0] &= 0x7F;
    }
    out.extend_from_slice(payload);
    out
}

/// Appends an unmasked server frame header, for the self-test's in-process sender.
pub fn write_server_header(out: &mut Vec<u8>, opcode: u8, len: usize) {
    out.push(0x80 | opcode);
    if len < 126 {
        out.push(len as u8);
    } else if len <= 0xFFFF {
        out.push(126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
}

/// `Sec-WebSocket-Accept` for a key: base64(SHA-1(key + GUID)).
pub fn accept_key(key: &[u8]) -> String {
    use sha1::{Digest, Sha1};
    let mut h = Sha1::new();
    h.update(key);
    h.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    data_encoding::BASE64.encode(&h.finalize())
}

/// A test server's side of the upgrade: reads the request's head, answers `101`.
#[cfg(test)]
pub fn answer_upgrade(s: &mut (impl std::io::Read + std::io::Write)) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut b)?;
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let key = head
        .lines()
        .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
        .unwrap_or_default();
    write!(
        s,
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        accept_key(key.as_bytes())
    )
}

/// A `Sec-WebSocket-Key` from 16 bytes of the caller's choosing.
pub fn client_key(nonce: [u8; 16]) -> String {
    data_encoding::BASE64.encode(&nonce)
}

/// The upgrade request for `path` (path and query) on `host`, with `key` from
/// [`client_key`].
pub fn upgrade_request(host: &str, path: &str, key: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// Writes `out` to `sock` until it is empty or the socket would block; what is written
/// leaves `out`.
pub fn flush(sock: &mut impl std::io::Write, out: &mut Vec<u8>) -> std::io::Result<()> {
    use std::io::ErrorKind;
    while !out.is_empty() {
        match sock.write(out) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => {
                out.drain(..n);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Bytes of a server's handshake response head at most.
pub const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// Reads the answer to an upgrade request from `sock` into `partial` until its head is
/// whole and checked against `accept`. Bytes after the head (early frames) stay in
/// `partial`. `Ok(false)`: more is needed and the socket has nothing now.
pub fn read_handshake(
    sock: &mut impl std::io::Read,
    partial: &mut Vec<u8>,
    accept: &str,
) -> Result<bool, String> {
    use std::io::ErrorKind;
    let mut tmp = [0u8; 4096];
    loop {
        match sock.read(&mut tmp) {
            Ok(0) => return Err("connection closed during the handshake".to_string()),
            Ok(n) => partial.extend_from_slice(&tmp[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.to_string()),
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(partial) {
            Ok(httparse::Status::Partial) if partial.len() > MAX_RESPONSE_HEAD => {
                return Err("response head too large".to_string());
            }
            Ok(httparse::Status::Partial) => {}
            Err(e) => return Err(format!("bad HTTP response: {e}")),
            Ok(httparse::Status::Complete(head)) => {
                if resp.code != Some(101) {
                    return Err(format!("HTTP {}", resp.code.unwrap_or(0)));
                }
                let got = resp
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-accept"))
                    .map(|h| h.value);
                if got != Some(accept.as_bytes()) {
                    return Err("wrong Sec-WebSocket-Accept".to_string());
                }
                partial.drain(..head);
                return Ok(true);
            }
        }
    }
}

/// Reads one masked client frame whole, as a test's server does: its opcode and
/// unmasked payload.
#[cfg(test)]
pub(crate) fn read_client_frame(s: &mut impl std::io::Read) -> std::io::Result<(u8, Vec<u8>)> {
    let mut h = [0u8; 2];
    s.read_exact(&mut h)?;
    let len = match h[1] & 0x7F {
        126 => {
            let mut b = [0u8; 2];
            s.read_exact(&mut b)?;
            u64::from(u16::from_be_bytes(b))
        }
        127 => {
            let mut b = [0u8; 8];
            s.read_exact(&mut b)?;
            u64::from_be_bytes(b)
        }
        n => u64::from(n),
    };
    let mut mask = [0u8; 4];
    s.read_exact(&mut mask)?;
    let mut payload = vec![0u8; len as usize];
    s.read_exact(&mut payload)?;
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
    Ok((h[0] & 0x0F, payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write_server_header(&mut out, opcode, payload.len());
        if !fin {
            out[0] &= 0x7F;
        }
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn several_frames_in_one_buffer() {
        let mut buf = server_frame(1, true, b"hello");
        buf.extend(server_frame(9, true, b"p"));
        buf.extend(server_frame(1, true, b"world"));
        let mut pos = 0;
        let mut got = Vec::new();
        while let Ok(Parsed::Frame(f, n)) = parse(&buf[pos..], 1 << 20) {
            got.push(format!("{f:?}"));
            pos += n;
        }
        assert_eq!(pos, buf.len());
        assert_eq!(got.len(), 3);
        assert_eq!(
            parse(&buf, 1 << 20),
            Ok(Parsed::Frame(
                Frame::Text {
                    fin: true,
                    payload: b"hello"
                },
                7
            ))
        );
        assert_eq!(
            parse(&buf[7..], 1 << 20),
            Ok(Parsed::Frame(Frame::Ping(b"p"), 3))
        );
    }

    #[test]
    fn a_frame_split_across_reads_is_incomplete_until_whole() {
        let payload = vec![b'x'; 300];
        let buf = server_frame(1, true, &payload);
        assert_eq!(buf.len(), 304);
        assert_eq!(
            parse(&buf[..1], 1 << 20),
            Ok(Parsed::Incomplete { need: 2 })
        );
        assert_eq!(
            parse(&buf[..3], 1 << 20),
            Ok(Parsed::Incomplete { need: 4 })
        );
        for cut in 4..buf.len() {
            assert_eq!(
                parse(&buf[..cut], 1 << 20),
                Ok(Parsed::Incomplete { need: 304 }),
                "cut at {cut}"
            );
        }
        assert_eq!(
            parse(&buf, 1 << 20),
            Ok(Parsed::Frame(
                Frame::Text {
                    fin: true,
                    payload: &payload
                },
                304
            ))
        );
    }

    #[test]
    fn lengths_7_16_and_64_bit() {
        for (n, header) in [
            (125usize, 2usize),
            (126, 4),
            (65535, 4),
            (65536, 10),
            (70000, 10),
        ] {
            let payload = vec![b'a'; n];
            let buf = server_frame(1, true, &payload);
            assert_eq!(buf.len(), header + n, "header for {n}");
            match parse(&buf, 1 << 20) {
                Ok(Parsed::Frame(Frame::Text { payload: p, .. }, used)) => {
                    assert_eq!(p.len(), n);
                    assert_eq!(used, buf.len());
                }
                other => panic!("{n}: {other:?}"),
            }
            assert_eq!(
                parse(&buf[..header - 1], 1 << 20),
                Ok(Parsed::Incomplete { need: header })
            );
        }
    }

    #[test]
    fn too_big_is_refused_from_the_header_alone() {
        let mut buf = vec![0x81, 127];
        buf.extend_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(parse(&buf, 1 << 20), Err(WsError::TooBig(u64::MAX)));
        assert_eq!(WsError::TooBig(1).close_code(), 1009);
    }

    #[test]
    fn ping_close_and_bad_frames() {
        let buf = server_frame(8, true, &[0x03, 0xE9, b'b', b'y', b'e']);
        assert_eq!(
            parse(&buf, 64),
            Ok(Parsed::Frame(Frame::Close(Some(1001)), 7))
        );
        let buf = server_frame(8, true, b"");
        assert_eq!(parse(&buf, 64), Ok(Parsed::Frame(Frame::Close(None), 2)));
        assert!(parse(&server_frame(8, true, b"x"), 64).is_err());
        assert_eq!(
            parse(&server_frame(9, true, b"abc"), 64),
            Ok(Parsed::Frame(Frame::Ping(b"abc"), 5))
        );
        // A fragmented ping, a reserved opcode, RSV bits, a masked frame.
        assert!(parse(&server_frame(9, false, b"abc"), 64).is_err());
        assert!(parse(&server_frame(3, true, b"abc"), 64).is_err());
        assert!(parse(&[0xC1, 0x00], 64).is_err());
        assert!(parse(&[0x81, 0x80, 1, 2, 3, 4], 64).is_err());
        // Fragments parse; reassembly is the caller's business.
        assert_eq!(
            parse(&server_frame(1, false, b"ab"), 64),
            Ok(Parsed::Frame(
                Frame::Text {
                    fin: false,
                    payload: b"ab"
                },
                4
            ))
        );
        assert_eq!(
            parse(&server_frame(0, true, b"c"), 64),
            Ok(Parsed::Frame(
                Frame::Continuation {
                    fin: true,
                    payload: b"c"
                },
                3
            ))
        );
    }

    #[test]
    fn client_frames_are_masked() {
        let mut out = Vec::new();
        write_frame(&mut out, OP_PONG, b"hi", [1, 2, 3, 4]);
        assert_eq!(out, [0x8A, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2]);
        let mut out = Vec::new();
        write_frame(&mut out, OP_TEXT, &[0u8; 200], [0, 0, 0, 0]);
        assert_eq!(&out[..4], &[0x81, 0xFE, 0, 200]);
        assert_eq!(out.len(), 4 + 4 + 200);
    }

    #[test]
    fn accept_key_matches_rfc_6455_example() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(client_key(*b"the sample nonce"), "dGhlIHNhbXBsZSBub25jZQ==");
    }

    #[test]
    fn upgrade_request_is_a_whole_http_head() {
        let req = upgrade_request("h:1", "/stream?token=x", "k==");
        assert!(req.starts_with("GET /stream?token=x HTTP/1.1\r\nHost: h:1\r\n"));
        assert!(req.contains("\r\nSec-WebSocket-Key: k==\r\n"));
        assert!(req.ends_with("Sec-WebSocket-Version: 13\r\n\r\n"));
    }
}
