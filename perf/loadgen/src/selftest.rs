//! The load generator's own ceiling: an in-process sender thread plays a server that
//! writes pre-built, batched result frames (64 KiB per write) as fast as loopback TCP
//! takes them, and the ordinary engine reads them. What the engine then sustains on one
//! core is the most any measurement of a real server can show.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use crate::msg;
use crate::ws;

/// Bytes per `write` call of the sender, at most.
const BATCH: usize = 64 * 1024;
/// Sequence numbers start here so they all have 12 digits and can be patched in place.
const SEQ_BASE: u64 = 100_000_000_000;

/// One result as the server writes it, with 12-digit `seq` and the two 30-byte times.
fn template() -> (Vec<u8>, usize, [usize; 2]) {
    let body = format!(
        concat!(
            r#"{{"type":"result","timestamp":"2026-11-28T06:23:33.842294182Z","data":{{"seq":{},"#,
            r#""event":"new","symbol":"SHM","scan":"firehose","score":8.75,"price":342.92,"#,
            r#""change_pct":2.96,"volume":4849400,"volume_ratio":9.4,"rsi":85.03,"#,
            r#""source_ts":"2026-11-28T06:23:33.842292510Z","adhoc":false,"subscriptions":["default"]}}}}"#
        ),
        SEQ_BASE
    );
    let mut frame = Vec::new();
    ws::write_server_header(&mut frame, ws::OP_TEXT, body.len());
    let h = frame.len();
    frame.extend_from_slice(body.as_bytes());
    let b = body.as_bytes();
    let seq_at = h + msg::find(b, b"\"seq\":").unwrap_or(0) + 6;
    let ts_at = h + msg::find(b, b"\"timestamp\":\"").unwrap_or(0) + 13;
    let src_at = h + msg::find(b, b"\"source_ts\":\"").unwrap_or(0) + 13;
    (frame, seq_at, [ts_at, src_at])
}

/// Starts the sender on 127.0.0.1 with `conns` connections to accept, writing
/// `frames_per_write` frames per `write` (0: as many as fit in 64 KiB); pinned to `cpu`
/// when given. Returns its address, the frame size and the frames per write. The thread
/// ends when every connection is gone (the engine closes them at the end of its run).
pub fn start_sender(
    conns: usize,
    frames_per_write: usize,
    cpu: Option<usize>,
) -> io::Result<(SocketAddr, usize, usize)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let (frame, seq_at, ts_at) = template();
    let frame_len = frame.len();
    let fit = BATCH / frame_len;
    let per_write = if frames_per_write == 0 {
        fit
    } else {
        frames_per_write.min(fit)
    };
    thread::Builder::new()
        .name("selftest-sender".into())
        .spawn(move || {
            if let Some(cpu) = cpu {
                crate::sys::pin_to(cpu);
            }
            if let Err(e) = serve(listener, conns, per_write, &frame, seq_at, ts_at) {
                // Expected at the end: the engine closed its side.
                let _ = e;
            }
        })?;
    Ok((addr, frame_len, per_write))
}

fn serve(
    listener: TcpListener,
    conns: usize,
    per_batch: usize,
    frame: &[u8],
    seq_at: usize,
    ts_at: [usize; 2],
) -> io::Result<()> {
    let mut socks = Vec::with_capacity(conns);
    for _ in 0..conns {
        let (sock, _) = listener.accept()?;
        socks.push(handshake(sock)?);
    }
    let mut batches: Vec<Vec<u8>> = (0..socks.len()).map(|_| frame.repeat(per_batch)).collect();
    let mut seqs = vec![SEQ_BASE; socks.len()];
    let mut alive = socks.len();
    let mut ts = [0u8; 30];
    while alive > 0 {
        msg::format_rfc3339(crate::sys::wall_ns(), &mut ts);
        alive = 0;
        for ((sock, batch), seq) in socks.iter_mut().zip(&mut batches).zip(&mut seqs) {
            let Some(s) = sock else { continue };
            for k in 0..per_batch {
                let f = &mut batch[k * frame.len()..(k + 1) * frame.len()];
                *seq += 1;
                write_digits(&mut f[seq_at..seq_at + 12], *seq);
                f[ts_at[0]..ts_at[0] + 30].copy_from_slice(&ts);
                f[ts_at[1]..ts_at[1] + 30].copy_from_slice(&ts);
            }
            if s.write_all(batch).is_err() {
                *sock = None;
            } else {
                alive += 1;
            }
        }
    }
    Ok(())
}

fn write_digits(out: &mut [u8], mut v: u64) {
    for d in out.iter_mut().rev() {
        *d = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// Answers one upgrade request with 101; ignores whatever the client sends afterwards.
fn handshake(sock: TcpStream) -> io::Result<Option<TcpStream>> {
    sock.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(sock.try_clone()?);
    // Small writes go out at once, as a server's would.
    sock.set_nodelay(true)?;
    let mut key = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.trim().eq_ignore_ascii_case("sec-websocket-key")
        {
            key = Some(value.trim().to_string());
        }
    }
    let Some(key) = key else { return Ok(None) };
    let mut sock = sock;
    write!(
        sock,
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        ws::accept_key(key.as_bytes())
    )?;
    Ok(Some(sock))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_fields_are_where_the_sender_patches_them() {
        let (mut frame, seq_at, ts_at) = template();
        write_digits(&mut frame[seq_at..seq_at + 12], SEQ_BASE + 42);
        let mut ts = [0u8; 30];
        msg::format_rfc3339(1_795_847_013_000_000_001, &mut ts);
        for at in ts_at {
            frame[at..at + 30].copy_from_slice(&ts);
        }
        let Ok(ws::Parsed::Frame(ws::Frame::Text { payload, .. }, used)) =
            ws::parse(&frame, 1 << 16)
        else {
            panic!("template is not a text frame");
        };
        assert_eq!(used, frame.len());
        assert_eq!(
            msg::classify(payload),
            msg::Kind::Result {
                seq: SEQ_BASE + 42,
                ts_ns: 1_795_847_013_000_000_001
            }
        );
        assert!(serde_json::from_slice::<serde_json::Value>(payload).is_ok());
    }
}
