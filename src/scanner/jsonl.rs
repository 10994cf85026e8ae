//! `jsonl:PATH` and `jsonl:-`: one tick per line, `{"symbol","price","volume","ts"?}`,
//! from a file or stdin; the adapter for any real feed.
//!
//! A reader thread of its own does the blocking reads and the parsing, and hands the
//! scanner batches of ticks through a bounded channel (so a fast file waits for the
//! scanner rather than filling memory) plus a doorbell. `ts` is RFC 3339 or seconds
//! since the Unix epoch. Other fields are ignored. A bad line is logged with its number,
//! counted and skipped. With `follow`, a file is read on as it grows (`tail -f`), and
//! from the start again if it is truncated.

use std::borrow::Cow;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};
use serde::Deserialize;

use super::BadInput;
use super::indicators::{Bar, Reference};
use super::market::{Feed, Universe, check_symbol};
use crate::timefmt::{from_unix_seconds, parse_time};

/// Longest line read; longer ones are bad input.
const MAX_LINE: usize = 64 * 1024;
/// Ticks per batch at most.
const BATCH: usize = 1024;
/// Batches waiting for the scanner at most.
const BATCHES: usize = 64;
/// How often a followed file is checked for growth.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// One parsed line.
#[derive(Debug, Clone, PartialEq)]
pub struct Tick {
    /// The symbol as the feed spells it.
    pub symbol: String,
    /// Last price.
    pub price: f64,
    /// Volume of the update.
    pub volume: u64,
    /// The feed's time, if given.
    pub ts: Option<SystemTime>,
}

#[derive(Deserialize)]
struct Line<'a> {
    #[serde(borrow)]
    symbol: Cow<'a, str>,
    price: f64,
    volume: f64,
    #[serde(default, borrow)]
    ts: Option<Ts<'a>>,
}

/// `ts`: RFC 3339 text or seconds since the epoch. Read by hand rather than as an
/// untagged enum, which buffers the value and builds an error for every text time.
enum Ts<'a> {
    Seconds(f64),
    Text(Cow<'a, str>),
}

impl<'de: 'a, 'a> Deserialize<'de> for Ts<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visit<'a> {
            type Value = Ts<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an RFC 3339 time or seconds since the epoch")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Ts<'a>, E> {
                Ok(Ts::Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Ts<'a>, E> {
                Ok(Ts::Text(Cow::Owned(v.to_owned())))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Ts<'a>, E> {
                Ok(Ts::Seconds(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Ts<'a>, E> {
                Ok(Ts::Seconds(v as f64))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Ts<'a>, E> {
                Ok(Ts::Seconds(v as f64))
            }
        }
        d.deserialize_any(Visit(std::marker::PhantomData))
    }
}

/// Parses one line; the error says what is wrong with it.
pub fn parse_line(line: &str) -> Result<Tick, String> {
    let l: Line<'_> = serde_json::from_str(line).map_err(|e| e.to_string())?;
    check_symbol(&l.symbol)?;
    if !(l.price.is_finite() && l.price > 0.0) {
        return Err(format!("price {} is not a positive number", l.price));
    }
    if !(l.volume.is_finite() && l.volume >= 0.0 && l.volume < u64::MAX as f64) {
        return Err(format!("volume {} is not a number of shares", l.volume));
    }
    let ts = match l.ts {
        None => None,
        Some(Ts::Seconds(s)) => {
            Some(from_unix_seconds(s).ok_or_else(|| format!("ts {s} is out of range"))?)
        }
        Some(Ts::Text(t)) => Some(
            parse_time(&t)
                .ok_or_else(|| format!("ts `{t}` is not a time (RFC 3339, or a date and time)"))?,
        ),
    };
    Ok(Tick {
        symbol: l.symbol.into_owned(),
        price: l.price,
        volume: l.volume.round() as u64,
        ts,
    })
}

/// Where lines come from.
#[derive(Debug, Clone)]
enum Input {
    Stdin,
    File { path: PathBuf, follow: bool },
}

/// The JSONL feed: the scanner's end of the reader thread.
#[derive(Debug)]
pub struct JsonlFeed {
    ticks: Receiver<Vec<Tick>>,
    doorbell: Option<Receiver<()>>,
    bad: BadInput,
    done: Arc<AtomicBool>,
    closed: Arc<AtomicBool>,
}

impl Drop for JsonlFeed {
    fn drop(&mut self) {
        // A reader following a quiet file has nothing to send, so it would never learn.
        self.closed.store(true, Ordering::Release);
    }
}

impl JsonlFeed {
    /// Starts reading `path` (`-` for stdin) on a thread of its own.
    pub fn open(path: &Path, follow: bool) -> io::Result<JsonlFeed> {
        let input = if path == Path::new("-") {
            Input::Stdin
        } else {
            // Fail at start on a missing file rather than in the reader thread.
            File::open(path)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
            Input::File {
                path: path.to_owned(),
                follow,
            }
        };
        JsonlFeed::spawn(input)
    }

    /// A feed over any reader, read to its end (for tests and benchmarks).
    pub fn from_reader(reader: impl Read + Send + 'static) -> io::Result<JsonlFeed> {
        let (feed, reader_side) = JsonlFeed::channels();
        std::thread::Builder::new()
            .name("jsonl".into())
            .spawn(move || reader_side.run_stream(reader))?;
        Ok(feed)
    }

    fn channels() -> (JsonlFeed, Reader) {
        let (tx, ticks) = bounded(BATCHES);
        let (bell_tx, doorbell) = bounded(1);
        let bad = BadInput::new("jsonl");
        let done = Arc::new(AtomicBool::new(false));
        let closed = Arc::new(AtomicBool::new(false));
        let reader = Reader {
            tx,
            bell: bell_tx,
            bad: bad.clone(),
            done: Arc::clone(&done),
            closed: Arc::clone(&closed),
            line: 0,
            skipping: false,
            batch: Vec::with_capacity(BATCH),
        };
        let feed = JsonlFeed {
            ticks,
            doorbell: Some(doorbell),
            bad,
            done,
            closed,
        };
        (feed, reader)
    }

    fn spawn(input: Input) -> io::Result<JsonlFeed> {
        let (feed, reader) = JsonlFeed::channels();
        std::thread::Builder::new()
            .name("jsonl".into())
            .spawn(move || match input {
                Input::Stdin => reader.run_stream(io::stdin()),
                Input::File { path, follow } => reader.run_file(&path, follow),
            })?;
        Ok(feed)
    }
}

impl Feed for JsonlFeed {
    fn reference(&self) -> Reference {
        Reference::SessionOpen
    }

    fn poll(&mut self, _now: Instant, universe: &mut Universe) {
        for batch in self.ticks.try_iter() {
            for t in batch {
                universe.update_named(&t.symbol, &Bar::tick(t.price, t.volume, t.ts));
            }
        }
    }

    fn exhausted(&self) -> bool {
        self.done.load(Ordering::Acquire) && self.ticks.is_empty()
    }

    fn doorbell(&mut self) -> Option<Receiver<()>> {
        self.doorbell.take()
    }

    fn bad_input(&self) -> u64 {
        self.bad.count()
    }
}

/// The reader thread's state.
struct Reader {
    tx: Sender<Vec<Tick>>,
    bell: Sender<()>,
    bad: BadInput,
    done: Arc<AtomicBool>,
    /// The scanner's side is gone.
    closed: Arc<AtomicBool>,
    line: u64,
    /// Inside the rest of a line that was refused as too long.
    skipping: bool,
    batch: Vec<Tick>,
}

/// Why reading stopped.
enum Stop {
    /// The end of the input so far.
    End,
    /// The scanner is gone, or the input failed.
    Quit,
}

impl Reader {
    /// Reads a stream to its end.
    fn run_stream<R: Read>(mut self, input: R) {
        let mut input = BufReader::with_capacity(64 * 1024, input);
        let mut buf = Vec::new();
        if let Stop::End = self.pump(&mut input, &mut buf, false) {
            self.finish(&buf);
        }
    }

    /// Reads a file to its end, and with `follow` on as it grows.
    fn run_file(mut self, path: &Path, follow: bool) {
        let open = |path: &Path| File::open(path).map(|f| BufReader::with_capacity(64 * 1024, f));
        let mut input = match open(path) {
            Ok(input) => input,
            Err(e) => {
                tracing::error!(path = %path.display(), "cannot read the jsonl feed: {e}");
                return;
            }
        };
        let mut buf = Vec::new();
        loop {
            if let Stop::Quit = self.pump(&mut input, &mut buf, follow) {
                return;
            }
            if !follow {
                self.finish(&buf);
                return;
            }
            if self.closed.load(Ordering::Acquire) {
                return;
            }
            if !self.flush() {
                return;
            }
            std::thread::sleep(FOLLOW_POLL);
            let read = input.stream_position().unwrap_or(0);
            let len = std::fs::metadata(path).map_or(read, |m| m.len());
            if len < read {
                tracing::info!(path = %path.display(), "jsonl feed truncated; reading it from the start");
                match open(path) {
                    Ok(fresh) => input = fresh,
                    Err(_) => return,
                }
                buf.clear();
                self.line = 0;
                self.skipping = false;
            }
        }
    }

    /// Takes every complete line up to the end of the input so far. With `hold`, a last
    /// line without its newline stays in `buf` for the writer to finish.
    fn pump<R: Read>(&mut self, input: &mut BufReader<R>, buf: &mut Vec<u8>, hold: bool) -> Stop {
        loop {
            let ended = match read_line(input, buf) {
                Ok(Got::End) => return Stop::End,
                Ok(Got::Line) => true,
                Ok(Got::Partial) => false,
                Err(e) => {
                    tracing::error!("reading the jsonl feed: {e}");
                    return Stop::Quit;
                }
            };
            if self.skipping {
                // The rest of a line already refused as too long.
                self.skipping = !ended;
                buf.clear();
                continue;
            }
            if !ended && hold && buf.len() <= MAX_LINE {
                // A line still being written: wait for the rest of it.
                continue;
            }
            self.line += 1;
            // Refused now, a long line's rest still to come is skipped, not counted again.
            self.skipping = !ended;
            self.take(buf);
            buf.clear();
            // Hand over when full, or when the next read may wait for the writer.
            let drained = input.buffer().is_empty();
            if (self.batch.len() >= BATCH || drained) && !self.flush() {
                return Stop::Quit;
            }
        }
    }

    /// The end: takes a last line without a newline, hands everything over, rings.
    fn finish(mut self, buf: &[u8]) {
        if !buf.is_empty() {
            self.line += 1;
            self.take(buf);
        }
        self.flush();
        self.done.store(true, Ordering::Release);
        let _ = self.bell.try_send(());
    }

    fn take(&mut self, raw: &[u8]) {
        if raw.len() > MAX_LINE {
            self.bad.report(format_args!(
                "line {}: longer than {MAX_LINE} bytes",
                self.line
            ));
            return;
        }
        let text = match std::str::from_utf8(raw) {
            Ok(t) => t.trim(),
            Err(_) => {
                self.bad
                    .report(format_args!("line {}: not UTF-8", self.line));
                return;
            }
        };
        if text.is_empty() {
            return;
        }
        match parse_line(text) {
            Ok(tick) => self.batch.push(tick),
            Err(e) => self.bad.report(format_args!("line {}: {e}", self.line)),
        }
    }

    /// Sends the batch; false when the scanner is gone.
    fn flush(&mut self) -> bool {
        if self.batch.is_empty() {
            return true;
        }
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH));
        if self.tx.send(batch).is_err() {
            return false;
        }
        match self.bell.try_send(()) {
            Ok(()) | Err(TrySendError::Full(())) => true,
            Err(TrySendError::Disconnected(())) => false,
        }
    }
}

/// What [`read_line`] found.
enum Got {
    /// A whole line, newline included.
    Line,
    /// The end of the input so far came before a newline.
    Partial,
    /// Nothing more to read.
    End,
}

/// Reads up to and including the next `\n`, keeping at most `MAX_LINE + 1` bytes of a
/// longer line (enough to refuse it).
fn read_line(input: &mut impl BufRead, buf: &mut Vec<u8>) -> io::Result<Got> {
    let mut consumed = 0;
    loop {
        let available = match input.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok(if consumed == 0 {
                Got::End
            } else {
                Got::Partial
            });
        }
        let (take, found) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (available.len(), false),
        };
        let room = (MAX_LINE + 1).saturating_sub(buf.len());
        buf.extend_from_slice(&available[..take.min(room)]);
        input.consume(take);
        consumed += take;
        if found {
            return Ok(Got::Line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scanner::indicators::IndicatorParams;

    #[test]
    fn parses_good_lines() {
        let t = parse_line(
            r#"{"symbol":"AAPL","price":191.25,"volume":1200,"ts":"2024-01-02T09:30:00Z"}"#,
        )
        .unwrap();
        assert_eq!(
            (t.symbol.as_str(), t.price, t.volume),
            ("AAPL", 191.25, 1200)
        );
        assert_eq!(t.ts, parse_time("2024-01-02T09:30:00Z"));
        let t = parse_line(
            r#"{"price":1.5,"symbol":"btc-usd","volume":0.4,"ts":1704187800.5,"venue":"x"}"#,
        )
        .unwrap();
        assert_eq!(t.volume, 0);
        assert_eq!(t.ts, from_unix_seconds(1_704_187_800.5));
        assert_eq!(
            parse_line(r#"{"symbol":"A","price":2,"volume":3}"#)
                .unwrap()
                .ts,
            None
        );
    }

    #[test]
    fn refuses_bad_lines_with_a_reason() {
        let cases = [
            ("not json", "expected"),
            (r#"{"price":1,"volume":1}"#, "symbol"),
            (r#"{"symbol":"A","volume":1}"#, "price"),
            (r#"{"symbol":"A","price":"1","volume":1}"#, "invalid type"),
            (r#"{"symbol":"A","price":-1,"volume":1}"#, "positive"),
            (r#"{"symbol":"A","price":1,"volume":-1}"#, "shares"),
            (r#"{"symbol":"","price":1,"volume":1}"#, "empty"),
            (
                r#"{"symbol":"A","price":1,"volume":1,"ts":"noon"}"#,
                "RFC 3339",
            ),
            (r#"[1,2]"#, "invalid type"),
        ];
        for (line, want) in cases {
            let err = parse_line(line).unwrap_err();
            assert!(err.contains(want), "{line}: {err}");
        }
    }

    /// Feeds `text` through the reader thread and the scanner side.
    fn ingest(text: impl Into<Vec<u8>>) -> (Universe, JsonlFeed) {
        let mut feed = JsonlFeed::from_reader(io::Cursor::new(text.into())).unwrap();
        let mut u = Universe::new(IndicatorParams::default(), 1000);
        let bell = feed.doorbell().unwrap();
        while !feed.exhausted() {
            let _ = bell.recv_timeout(Duration::from_secs(5));
            feed.poll(Instant::now(), &mut u);
        }
        feed.poll(Instant::now(), &mut u);
        (u, feed)
    }

    #[test]
    fn bad_lines_are_counted_and_never_fatal() {
        let long = format!(
            "{{\"symbol\":\"{}\",\"price\":1,\"volume\":1}}",
            "X".repeat(MAX_LINE)
        );
        let mut text = format!(
            "{}\n\n{}\n{}\n",
            r#"{"symbol":"aapl","price":10,"volume":5}"#, "garbage", long,
        )
        .into_bytes();
        text.extend_from_slice(b"\xff\xfe{}\n");
        text.extend_from_slice(br#"{"symbol":"MSFT","price":20,"volume":5}"#);
        text.extend_from_slice(b"\n");
        text.extend_from_slice(br#"{"symbol":"AAPL","price":11,"volume":5}"#);
        let (u, feed) = ingest(text);
        assert_eq!(
            u.updates, 3,
            "two AAPL and one MSFT, the last without a newline"
        );
        assert_eq!(u.len(), 2);
        assert_eq!(
            u.last_bar(u.get("AAPL").unwrap()).map(|b| b.close),
            Some(11.0)
        );
        assert_eq!(feed.bad_input(), 3, "garbage, the long line, the bad UTF-8");
    }

    #[test]
    fn many_lines_arrive_in_order() {
        let mut text = String::new();
        for i in 1..=10_000 {
            text += &format!("{{\"symbol\":\"S{}\",\"price\":{i},\"volume\":1}}\n", i % 7);
        }
        let (u, feed) = ingest(text);
        assert_eq!(u.updates, 10_000);
        assert_eq!(feed.bad_input(), 0);
        assert_eq!(
            u.last_bar(u.get("S6").unwrap()).map(|b| b.close),
            Some(9_995.0)
        );
    }

    #[test]
    fn symbols_a_scanner_would_refuse_are_bad_lines() {
        for line in [
            r#"{"symbol":"A B","price":1,"volume":1}"#,
            r#"{"symbol":"A\u0007","price":1,"volume":1}"#,
        ] {
            assert!(parse_line(line).unwrap_err().contains("symbol"), "{line}");
        }
        let long = format!(r#"{{"symbol":"{}","price":1,"volume":1}}"#, "X".repeat(200));
        assert!(parse_line(&long).unwrap_err().contains("longer"));
    }

    /// Appends to a file the reader follows.
    fn append(path: &Path, bytes: &[u8]) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
        f.write_all(bytes).unwrap();
    }

    /// Polls until the universe has taken `n` bars, or ten seconds pass.
    fn wait_for(feed: &mut JsonlFeed, u: &mut Universe, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while u.updates < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
            feed.poll(Instant::now(), u);
        }
        assert_eq!(u.updates, n);
    }

    #[test]
    fn a_long_line_written_in_parts_is_one_bad_line() {
        let dir =
            std::env::temp_dir().join(format!("scanstream-jsonl-long-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("feed.jsonl");
        let mut head = br#"{"symbol":"A","note":""#.to_vec();
        head.extend(std::iter::repeat_n(b'x', MAX_LINE + 10));
        std::fs::write(&path, &head).unwrap();
        let mut feed = JsonlFeed::open(&path, true).unwrap();
        let mut u = Universe::new(IndicatorParams::default(), 10);
        std::thread::sleep(Duration::from_millis(300));
        append(&path, b"more\",\"price\":1,\"volume\":1}\n");
        append(&path, b"{\"symbol\":\"B\",\"price\":2,\"volume\":1}\n");
        wait_for(&mut feed, &mut u, 1);
        assert_eq!(u.last_bar(u.get("B").unwrap()).map(|b| b.close), Some(2.0));
        assert_eq!(feed.bad_input(), 1, "one long line, counted once");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_reader_of_a_quiet_file_ends_with_its_feed() {
        let dir =
            std::env::temp_dir().join(format!("scanstream-jsonl-quiet-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("feed.jsonl");
        std::fs::write(&path, b"").unwrap();
        let (feed, reader) = JsonlFeed::channels();
        let file = path.clone();
        let thread = std::thread::spawn(move || reader.run_file(&file, true));
        std::thread::sleep(Duration::from_millis(150));
        drop(feed);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            thread.is_finished(),
            "the reader still runs after its feed is gone"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_truncated_file_is_read_again_from_the_start() {
        let dir =
            std::env::temp_dir().join(format!("scanstream-jsonl-trunc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("feed.jsonl");
        let line = |p: u32| format!("{{\"symbol\":\"A\",\"price\":{p},\"volume\":1}}\n");
        std::fs::write(&path, line(1) + &line(2) + &line(3)).unwrap();
        let mut feed = JsonlFeed::open(&path, true).unwrap();
        let mut u = Universe::new(IndicatorParams::default(), 10);
        wait_for(&mut feed, &mut u, 3);
        std::fs::write(&path, line(7)).unwrap();
        wait_for(&mut feed, &mut u, 4);
        assert_eq!(u.last_bar(0).map(|b| b.close), Some(7.0));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_followed_file_is_read_as_it_grows() {
        let dir = std::env::temp_dir().join(format!("scanstream-jsonl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("feed.jsonl");
        std::fs::write(
            &path,
            "{\"symbol\":\"A\",\"price\":1,\"volume\":1}\n{\"symbol\":\"A\",",
        )
        .unwrap();
        let mut feed = JsonlFeed::open(&path, true).unwrap();
        let mut u = Universe::new(IndicatorParams::default(), 10);
        let deadline = Instant::now() + Duration::from_secs(10);
        let wait_for = |feed: &mut JsonlFeed, u: &mut Universe, n: u64| {
            while u.updates < n && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
                feed.poll(Instant::now(), u);
            }
            assert_eq!(u.updates, n);
        };
        wait_for(&mut feed, &mut u, 1);
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"\"price\":2,\"volume\":1}\n").unwrap();
        wait_for(&mut feed, &mut u, 2);
        assert_eq!(u.last_bar(0).map(|b| b.close), Some(2.0));
        assert_eq!(
            feed.bad_input(),
            0,
            "a line written in two parts is one line"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
