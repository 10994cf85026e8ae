//! WebSocket by hand over raw TCP, for tests that misbehave or watch the wire: the
//! handshake, and frames built and parsed with the load generator's framing
//! (`loadgen::ws`). What loadgen has no use for stays here: frames a client must not
//! send (unmasked, cut short), and reading a client's masked frames.

use std::io::{Cursor, Read, Write};
use std::net::{SocketAddr, TcpStream};

use loadgen::ws::{self, Parsed};
use serde_json::Value;
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};

use super::{raw, read_response};

pub const OP_TEXT: u8 = ws::OP_TEXT;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = ws::OP_CLOSE;
pub const OP_PING: u8 = 0x9;

/// A plain upgrade of `/stream`, with RFC 6455's example key.
pub const UPGRADE: &[u8] = b"GET /stream HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
    Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

/// The largest payload a test reads: a garbled length fails instead of allocating.
const MAX_PAYLOAD: usize = 16 << 20;

/// Opens a WebSocket over raw TCP (handshake done, 101 read) for tests that misbehave.
#[track_caller]
pub fn raw_ws(addr: SocketAddr) -> TcpStream {
    let mut s = raw(addr);
    s.write_all(UPGRADE).unwrap();
    let mut pending = Vec::new();
    // The 101 has no body; read_response stops at the blank line.
    let res = read_response(&mut s, &mut pending);
    assert_eq!(res.status, 101);
    assert!(pending.is_empty(), "server sent frames before any request");
    s
}

/// A final client frame, masked as every client frame must be.
pub fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    ws::write_frame(&mut f, opcode, payload, [0x12, 0x34, 0x56, 0x78]);
    f
}

/// A final frame without a mask: what a server sends, and a client must not.
pub fn unmasked_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    ws::write_server_header(&mut f, opcode, payload.len());
    f.extend_from_slice(payload);
    f
}

/// A masked text frame announcing `len` payload bytes, cut off after `sent` of them: a
/// client that stalls or vanishes mid-frame.
pub fn cut_frame(len: usize, sent: usize) -> Vec<u8> {
    let mut f = client_frame(OP_TEXT, &vec![b'x'; len]);
    f.truncate(f.len() - (len - sent));
    f
}

/// A whole frame, owned: loadgen's borrows from its read buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    Text(Vec<u8>),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    /// The status code, when the close frame carries one.
    Close(Option<u16>),
}

impl Frame {
    /// A text frame's JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        match self {
            Frame::Text(text) => serde_json::from_slice(text).expect("JSON"),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// The server frame at the start of `buf` and the bytes it took; `None` until it is whole.
#[track_caller]
pub fn parse_frame(buf: &[u8]) -> Option<(Frame, usize)> {
    parse(buf).ok()
}

/// As `parse_frame`, with the size the frame needs (so far as its header tells) when it
/// is not whole yet.
#[track_caller]
fn parse(buf: &[u8]) -> Result<(Frame, usize), usize> {
    match ws::parse(buf, MAX_PAYLOAD) {
        Ok(Parsed::Frame(frame, used)) => Ok((owned(frame), used)),
        Ok(Parsed::Incomplete { need }) => Err(need),
        Err(e) => panic!("a frame no server may send: {e}"),
    }
}

#[track_caller]
fn owned(frame: ws::Frame<'_>) -> Frame {
    match frame {
        ws::Frame::Text { fin: true, payload } => Frame::Text(payload.to_vec()),
        ws::Frame::Binary { fin: true, payload } => Frame::Binary(payload.to_vec()),
        ws::Frame::Ping(payload) => Frame::Ping(payload.to_vec()),
        ws::Frame::Pong(payload) => Frame::Pong(payload.to_vec()),
        ws::Frame::Close(code) => Frame::Close(code),
        fragment => panic!("the server fragments its messages: {fragment:?}"),
    }
}

/// Reads one server frame from a raw stream, and not a byte past it.
#[track_caller]
pub fn read_frame(s: &mut TcpStream) -> Frame {
    let mut buf = Vec::new();
    loop {
        match parse(&buf) {
            Ok((frame, _)) => return frame,
            Err(need) => {
                let have = buf.len();
                buf.resize(need, 0);
                s.read_exact(&mut buf[have..]).expect("a whole frame");
            }
        }
    }
}

/// The client frame at the start of `buf`, unmasked, and the bytes it took; `None` until
/// it is whole. loadgen reads only server frames (to it a mask is an error), so the
/// header is tungstenite's to read.
pub fn parse_client_frame(buf: &[u8]) -> Option<(Frame, usize)> {
    let mut cursor = Cursor::new(buf);
    let (header, len) = FrameHeader::parse(&mut cursor).expect("a client frame")?;
    let start = cursor.position() as usize;
    let end = start + usize::try_from(len).expect("a frame that fits in memory");
    let mask = header.mask.expect("client frames are masked");
    let payload: Vec<u8> = buf
        .get(start..end)?
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ mask[i % 4])
        .collect();
    let frame = match header.opcode {
        OpCode::Data(Data::Text) => Frame::Text(payload),
        OpCode::Data(Data::Binary) => Frame::Binary(payload),
        OpCode::Control(Control::Ping) => Frame::Ping(payload),
        OpCode::Control(Control::Pong) => Frame::Pong(payload),
        OpCode::Control(Control::Close) => {
            Frame::Close(payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]])))
        }
        other => panic!("a client frame the tests do not expect: {other:?}"),
    };
    Some((frame, end))
}

/// Reads raw frames until a close frame and returns its code.
#[track_caller]
pub fn raw_close_code(s: &mut TcpStream) -> u16 {
    loop {
        if let Frame::Close(code) = read_frame(s) {
            return code.expect("close frame without a code");
        }
    }
}

/// Reads raw text frames until one of type `ty`; only progress statuses may come first.
#[track_caller]
pub fn raw_expect(s: &mut TcpStream, ty: &str) -> Value {
    raw_next_of(s, ty, true)
}

/// Reads raw text frames, skipping any other type, until one of type `ty`.
#[track_caller]
pub fn raw_skip_to(s: &mut TcpStream, ty: &str) -> Value {
    raw_next_of(s, ty, false)
}

#[track_caller]
fn raw_next_of(s: &mut TcpStream, ty: &str, strict: bool) -> Value {
    loop {
        let frame = read_frame(s);
        if let Frame::Text(_) = frame {
            let v = frame.json();
            if v["type"] == ty {
                return v;
            }
            if strict {
                assert_eq!(v["type"], "status", "expected {ty}, got {v}");
            }
        }
    }
}
