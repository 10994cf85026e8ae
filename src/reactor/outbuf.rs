//! The one out buffer of a connection: everything sent on it, in order.
//!
//! HTTP responses, tungstenite's pongs and closes, replies and ready-made broadcast
//! frames are all appended here; the reactor writes it out once per loop turn. It never
//! touches a socket by itself: `write_to` takes any `Write`.

use std::io::{self, Write};

use crate::metrics::Counter;

/// Capacity kept after a flush empties the buffer; above it the memory is returned, so an
/// idle connection that once took a burst does not hold it for ever.
const KEEP_CAPACITY: usize = 64 * 1024;

/// Bytes queued for one connection, with a read offset so a partial write costs no move.
#[derive(Debug, Default)]
pub struct OutBuf {
    buf: Vec<u8>,
    /// Bytes of `buf` already written.
    pos: usize,
    /// Something was written since the last [`OutBuf::release_if_idle`].
    busy: bool,
}

/// How a write attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flushed {
    /// Everything is written.
    All,
    /// The socket is full; wait for `WRITABLE`.
    Blocked,
}

impl OutBuf {
    /// Bytes still to write.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.pending() == 0
    }

    /// The vector to append to. Moves the unwritten tail to the front first when the
    /// written head is the larger part, so the buffer cannot creep.
    pub fn vec(&mut self) -> &mut Vec<u8> {
        if self.pos > 0 && self.pos >= self.buf.len() / 2 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        &mut self.buf
    }

    /// Appends bytes.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.vec().extend_from_slice(bytes);
    }

    /// Writes what `w` takes with one `write` call for everything queued. A short write
    /// means the socket buffer is full: the rest waits for `WRITABLE`, which the kernel
    /// signals when room frees up. Returns the bytes written and whether all went out.
    pub fn write_to<W: Write>(
        &mut self,
        w: &mut W,
        calls: &Counter,
    ) -> io::Result<(usize, Flushed)> {
        if self.is_empty() {
            return Ok((0, Flushed::All));
        }
        let written = loop {
            calls.inc();
            match w.write(&self.buf[self.pos..]) {
                // A zero-byte write on a non-empty buffer means the peer is gone.
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Ok((0, Flushed::Blocked));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        };
        self.pos += written;
        self.busy = true;
        if self.pos < self.buf.len() {
            return Ok((written, Flushed::Blocked));
        }
        self.buf.clear();
        self.pos = 0;
        if self.buf.capacity() > KEEP_CAPACITY {
            self.buf = Vec::new();
        }
        Ok((written, Flushed::All))
    }
}

impl OutBuf {
    /// Returns the memory of an empty buffer that took nothing since the last call: a
    /// streaming connection keeps its buffer (no allocation per frame), an idle one
    /// holds none (thousands of idle subscribers cost little).
    pub fn release_if_idle(&mut self) {
        if self.is_empty() && !std::mem::take(&mut self.busy) && self.buf.capacity() > 0 {
            self.buf = Vec::new();
            self.pos = 0;
        }
    }
}

/// The stream tungstenite is given: reads come from the socket, writes land in the out
/// buffer, so the reactor keeps the only write path.
pub struct WsIo<'a, R> {
    /// Where inbound bytes come from (the socket).
    pub read: &'a mut R,
    /// Where tungstenite's own frames (pong, close) go.
    pub out: &'a mut OutBuf,
}

impl<R: io::Read> io::Read for WsIo<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read.read(buf)
    }
}

impl<R> io::Write for WsIo<'_, R> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.extend(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that takes at most `room` bytes, then blocks.
    struct Tight {
        room: usize,
        got: Vec<u8>,
    }

    impl Write for Tight {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.room);
            self.room -= n;
            self.got.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn partial_writes_keep_order_and_rest() {
        let mut out = OutBuf::default();
        out.extend(b"hello ");
        out.extend(b"world");
        let mut w = Tight {
            room: 4,
            got: Vec::new(),
        };
        let calls = Counter::default();
        assert_eq!(out.write_to(&mut w, &calls).unwrap(), (4, Flushed::Blocked));
        assert_eq!(out.pending(), 7);
        out.extend(b"!");
        w.room = 100;
        assert_eq!(out.write_to(&mut w, &calls).unwrap(), (8, Flushed::All));
        assert_eq!(w.got, b"hello world!");
        assert!(out.is_empty());
        assert_eq!(calls.get(), 2, "one write call per flush");
    }

    #[test]
    fn one_write_call_for_many_frames() {
        let mut out = OutBuf::default();
        for _ in 0..100 {
            out.extend(b"frame");
        }
        let mut w = Tight {
            room: usize::MAX,
            got: Vec::new(),
        };
        let calls = Counter::default();
        out.write_to(&mut w, &calls).unwrap();
        assert_eq!(calls.get(), 1);
    }

    #[test]
    fn idle_buffers_are_released_busy_ones_kept() {
        let mut out = OutBuf::default();
        out.extend(b"reply");
        out.write_to(&mut Vec::new(), &Counter::default()).unwrap();
        out.release_if_idle();
        assert!(out.buf.capacity() > 0, "released right after use");
        out.release_if_idle();
        assert_eq!(out.buf.capacity(), 0, "kept while idle");
    }

    #[test]
    fn zero_write_is_an_error() {
        struct Zero;
        impl Write for Zero {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Ok(0)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut out = OutBuf::default();
        out.extend(b"x");
        assert!(out.write_to(&mut Zero, &Counter::default()).is_err());
    }
}
