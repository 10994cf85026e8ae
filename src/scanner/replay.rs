//! `csv:PATH`: replays OHLCV bars from a CSV file, or from every `*.csv` file of a
//! directory, in time order across all symbols.
//!
//! Columns are found by header name, in any order and any case: `Date` (also
//! `Datetime`, `Timestamp` or `Time`), `Open`, `High`, `Low`, `Close`, `Volume`, and
//! optionally `Symbol` (or `Ticker`); `Adj Close` and any other column are ignored, so
//! the common finance-site export reads as it is. Without a `Symbol` column the file's
//! name is the symbol (`aapl.csv` is `AAPL`). A malformed row is logged with its file and
//! line, counted, and skipped. The files are read once at start.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ahash::AHashMap;

use super::BadInput;
use super::indicators::{Bar, Reference};
use super::market::{Feed, Universe, check_symbol};
use super::spec::Speed;
use crate::timefmt::{from_unix_seconds, parse_time};

/// One row: which symbol (index into the names) and its bar.
#[derive(Debug, Clone, Copy)]
struct Row {
    symbol: u32,
    bar: Bar,
}

/// Column positions in one file.
#[derive(Debug, Clone, Copy)]
struct Columns {
    date: usize,
    /// A separate time of day beside `Date` (intraday exports).
    time: Option<usize>,
    open: usize,
    high: usize,
    low: usize,
    close: usize,
    volume: usize,
    symbol: Option<usize>,
}

impl Columns {
    fn find(headers: &csv::StringRecord) -> Result<Columns, String> {
        let names: Vec<String> = headers
            .iter()
            .map(|h| h.trim().trim_start_matches('\u{feff}').to_ascii_lowercase())
            .collect();
        let find = |aliases: &[&str]| names.iter().position(|n| aliases.contains(&n.as_str()));
        let need = |aliases: &[&str]| find(aliases).ok_or_else(|| aliases[0].to_owned());
        let mut missing = Vec::new();
        let mut get = |aliases: &[&str]| {
            need(aliases).unwrap_or_else(|name| {
                missing.push(name);
                0
            })
        };
        let date = get(&["date", "datetime", "timestamp", "time"]);
        let time = match names.get(date).map(String::as_str) {
            Some("date") => find(&["time"]),
            _ => None,
        };
        let columns = Columns {
            date,
            time,
            open: get(&["open"]),
            high: get(&["high"]),
            low: get(&["low"]),
            close: get(&["close"]),
            volume: get(&["volume"]),
            symbol: find(&["symbol", "ticker"]),
        };
        if missing.is_empty() {
            Ok(columns)
        } else {
            Err(format!("missing column(s): {}", missing.join(", ")))
        }
    }
}

/// Parses one row into its time and bar; the error says which field is wrong.
fn parse_row(record: &csv::StringRecord, c: &Columns) -> Result<Bar, String> {
    let field = |i: usize, name: &str| {
        record
            .get(i)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("no {name}"))
    };
    let price = |i: usize, name: &str| -> Result<f64, String> {
        let v = field(i, name)?;
        match v.parse::<f64>() {
            Ok(p) if p.is_finite() && p > 0.0 => Ok(p),
            _ => Err(format!("{name} `{v}` is not a positive number")),
        }
    };
    let joined;
    let date = match c.time {
        Some(t) => {
            joined = format!("{} {}", field(c.date, "date")?, field(t, "time")?);
            joined.as_str()
        }
        None => field(c.date, "date")?,
    };
    let ts = parse_time(date)
        .or_else(|| date.parse::<f64>().ok().and_then(from_unix_seconds))
        .ok_or_else(|| format!("date `{date}` is not a date or time"))?;
    let (open, high, low, close) = (
        price(c.open, "open")?,
        price(c.high, "high")?,
        price(c.low, "low")?,
        price(c.close, "close")?,
    );
    if high < low || high < open.max(close) || low > open.min(close) {
        return Err(format!(
            "high {high} and low {low} do not bound open {open} and close {close}"
        ));
    }
    let v = field(c.volume, "volume")?;
    let volume = match v.parse::<f64>() {
        Ok(x) if x.is_finite() && x >= 0.0 && x < u64::MAX as f64 => x.round() as u64,
        _ => return Err(format!("volume `{v}` is not a number of shares")),
    };
    Ok(Bar {
        open,
        high,
        low,
        close,
        volume,
        ts: Some(ts),
    })
}

/// The CSV replay feed.
#[derive(Debug)]
pub struct CsvReplay {
    names: Vec<String>,
    by_name: AHashMap<String, u32>,
    /// Every row, in time order (file order within a time).
    rows: Vec<Row>,
    /// Ids in the universe, by name index, once known.
    ids: Vec<Option<u32>>,
    pos: usize,
    speed: Speed,
    /// When the row at `from` is due.
    start: Instant,
    from: usize,
    bad: BadInput,
}

impl CsvReplay {
    /// Reads `path` (a file, or a directory of `*.csv` files) to replay from `now`.
    pub fn open(path: &Path, speed: Speed, now: Instant) -> io::Result<CsvReplay> {
        let files = if path.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(path)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv")))
                .collect();
            files.sort();
            if files.is_empty() {
                let msg = format!("no .csv files in {}", path.display());
                return Err(io::Error::new(io::ErrorKind::NotFound, msg));
            }
            files
        } else {
            vec![path.to_owned()]
        };
        let mut replay = CsvReplay::empty(speed, now);
        for file in &files {
            let reader = File::open(file).map_err(|e| annotate(file, e))?;
            replay.read(file, reader)?;
        }
        replay.sort();
        tracing::info!(
            files = files.len(),
            bars = replay.rows.len(),
            symbols = replay.names.len(),
            bad = replay.bad.count(),
            "csv replay loaded"
        );
        Ok(replay)
    }

    /// Reads one CSV text; `name` stands for its file name (and default symbol).
    pub fn from_reader(
        name: &str,
        reader: impl io::Read,
        speed: Speed,
        now: Instant,
    ) -> io::Result<CsvReplay> {
        let mut replay = CsvReplay::empty(speed, now);
        replay.read(Path::new(name), reader)?;
        replay.sort();
        Ok(replay)
    }

    fn empty(speed: Speed, now: Instant) -> CsvReplay {
        CsvReplay {
            names: Vec::new(),
            by_name: AHashMap::new(),
            rows: Vec::new(),
            ids: Vec::new(),
            pos: 0,
            speed,
            start: now,
            from: 0,
            bad: BadInput::new("csv"),
        }
    }

    fn sort(&mut self) {
        // Stable: bars of one time keep their file order.
        self.rows.sort_by_key(|r| r.bar.ts);
        self.ids = vec![None; self.names.len()];
    }

    /// Reads the rows of one file; `path` names it in messages and gives the default symbol.
    fn read(&mut self, path: &Path, reader: impl io::Read) -> io::Result<()> {
        let mut csv = csv::ReaderBuilder::new()
            .flexible(true)
            .trim(csv::Trim::All)
            .from_reader(reader);
        let headers = csv
            .headers()
            .map_err(|e| annotate(path, io::Error::other(e)))?
            .clone();
        let columns = Columns::find(&headers)
            .map_err(|msg| annotate(path, io::Error::new(io::ErrorKind::InvalidData, msg)))?;
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().to_uppercase())
            .unwrap_or_default();
        // Without a Symbol column the file's name is the symbol.
        let file_symbol = match columns.symbol {
            Some(_) => None,
            None => {
                check_symbol(&stem).map_err(|msg| {
                    let msg = format!("the file name is the symbol, but: {msg}");
                    annotate(path, io::Error::new(io::ErrorKind::InvalidData, msg))
                })?;
                Some(self.symbol_index(&stem))
            }
        };
        let mut record = csv::StringRecord::new();
        loop {
            let line = csv.position().line();
            match csv.read_record(&mut record) {
                Ok(false) => break,
                Ok(true) => {}
                Err(e) => {
                    self.bad
                        .report(format_args!("{}:{line}: {e}", path.display()));
                    if e.is_io_error() {
                        break;
                    }
                    continue;
                }
            }
            let symbol = match (file_symbol, columns.symbol.and_then(|i| record.get(i))) {
                (Some(id), _) => id,
                (None, Some(name)) => match check_symbol(name) {
                    Ok(()) => self.symbol_index(&name.to_uppercase()),
                    Err(msg) => {
                        self.bad
                            .report(format_args!("{}:{line}: {msg}", path.display()));
                        continue;
                    }
                },
                (None, None) => {
                    self.bad
                        .report(format_args!("{}:{line}: no symbol", path.display()));
                    continue;
                }
            };
            match parse_row(&record, &columns) {
                Ok(bar) => self.rows.push(Row { symbol, bar }),
                Err(msg) => self
                    .bad
                    .report(format_args!("{}:{line}: {msg}", path.display())),
            }
        }
        Ok(())
    }

    fn symbol_index(&mut self, name: &str) -> u32 {
        if let Some(&i) = self.by_name.get(name) {
            return i;
        }
        let i = self.names.len() as u32;
        self.names.push(name.to_owned());
        self.by_name.insert(name.to_owned(), i);
        i
    }

    /// Bars in the replay.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// No bars at all.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Delivers the next row, unless its symbol has a bar not scanned yet (every bar of
    /// a replay is scanned). Returns false when it did not.
    fn deliver(&mut self, universe: &mut Universe) -> bool {
        let Some(row) = self.rows.get(self.pos).copied() else {
            return false;
        };
        let Some(slot) = self.ids.get_mut(row.symbol as usize) else {
            return false;
        };
        let id = match *slot {
            Some(id) => Some(id),
            None => {
                *slot = self
                    .names
                    .get(row.symbol as usize)
                    .and_then(|name| universe.intern(name));
                *slot
            }
        };
        match id {
            Some(id) if universe.is_dirty(id) => return false,
            Some(id) => {
                universe.update(id, &row.bar);
            }
            None => universe.refused += 1,
        }
        self.pos += 1;
        true
    }

    /// Rows due by `now` at this speed (an index into `rows`, at most its length).
    fn due(&self, now: Instant, rate: f64) -> usize {
        let elapsed = now.saturating_duration_since(self.start).as_secs_f64();
        let due = self.from as f64 + (elapsed * rate).floor() + 1.0;
        // In f64 first: a huge rate must not overflow the index.
        due.min(self.rows.len() as f64) as usize
    }
}

fn annotate(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

impl Feed for CsvReplay {
    fn reference(&self) -> Reference {
        Reference::PrevClose
    }

    fn begin(&mut self, universe: &mut Universe) {
        for (slot, name) in self.ids.iter_mut().zip(&self.names) {
            *slot = universe.intern(name);
        }
    }

    fn poll(&mut self, now: Instant, universe: &mut Universe) {
        match self.speed {
            Speed::Max => {
                // One time step: every bar that shares the next row's time.
                let Some(first) = self.rows.get(self.pos).map(|r| r.bar.ts) else {
                    return;
                };
                while self.rows.get(self.pos).is_some_and(|r| r.bar.ts == first)
                    && self.deliver(universe)
                {}
            }
            Speed::PerSecond(rate) => {
                let due = self.due(now, rate);
                while self.pos < due && self.deliver(universe) {}
            }
        }
    }

    fn live(&self) -> bool {
        false
    }

    fn paced(&self) -> bool {
        false
    }

    fn next_due(&self) -> Option<Instant> {
        match self.speed {
            Speed::Max => None,
            // Row `from + k` is due `k / rate` seconds after `start`.
            Speed::PerSecond(rate) => {
                let k = (self.pos - self.from) as f64 / rate;
                Duration::try_from_secs_f64(k).ok().map(|d| self.start + d)
            }
        }
    }

    fn exhausted(&self) -> bool {
        self.pos >= self.rows.len()
    }

    fn restart(&mut self, now: Instant) {
        self.start = now;
        self.from = self.pos;
    }

    fn bad_input(&self) -> u64 {
        self.bad.count()
    }
}

/// Time of a row, for tests.
#[cfg(test)]
fn times(replay: &CsvReplay) -> Vec<Option<std::time::SystemTime>> {
    replay.rows.iter().map(|r| r.bar.ts).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scanner::indicators::IndicatorParams;

    fn load(files: &[(&str, &str)]) -> CsvReplay {
        static DIRS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = DIRS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("scanstream-csv-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
        let path = if files.len() == 1 {
            dir.join(files[0].0)
        } else {
            dir.clone()
        };
        let replay = CsvReplay::open(&path, Speed::Max, Instant::now()).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        replay
    }

    const YAHOO: &str = "\
Date,Open,High,Low,Close,Adj Close,Volume
2024-01-02,187.15,188.44,183.89,185.64,184.94,82488700
2024-01-03,184.22,185.88,183.43,184.25,183.55,58414500
2024-01-04,182.15,183.09,180.88,181.91,181.22,71983600
";

    #[test]
    fn reads_the_finance_site_export_by_header_name() {
        let r = load(&[("aapl.csv", YAHOO)]);
        assert_eq!(r.names, ["AAPL"]);
        assert_eq!(r.len(), 3);
        let first = r.rows[0].bar;
        assert_eq!(
            (first.open, first.high, first.low, first.close, first.volume),
            (187.15, 188.44, 183.89, 185.64, 82_488_700)
        );
        assert_eq!(r.bad_input(), 0);
    }

    #[test]
    fn columns_in_any_order_and_case_with_a_symbol_column() {
        let text = "volume,CLOSE,symbol,low,High,open,DATE\n100,10.5,msft,10,11,10.2,2024-01-02\n200,20.5,ibm,20,21,20.2,2024-01-01\n";
        let r = load(&[("mixed.csv", text)]);
        assert_eq!(r.names, ["MSFT", "IBM"]);
        // Sorted by time across symbols.
        assert_eq!(r.names[r.rows[0].symbol as usize], "IBM");
        assert_eq!(r.rows[1].bar.close, 10.5);
    }

    #[test]
    fn a_separate_time_column_is_part_of_the_bar_time() {
        let text = "Date,Time,Open,High,Low,Close,Volume\n2024-01-02,09:31,1,1,1,1,5\n2024-01-02,09:30,2,2,2,2,5\n";
        let r = load(&[("m.csv", text)]);
        assert_eq!(r.len(), 2);
        assert_eq!(r.rows[0].bar.close, 2.0, "09:30 comes first");
        assert_eq!(
            r.rows[0].bar.ts,
            crate::timefmt::parse_time("2024-01-02T09:30:00Z")
        );
    }

    #[test]
    fn bad_rows_are_counted_and_skipped() {
        let text = "\
Date,Open,High,Low,Close,Volume
2024-01-02,10,11,9,10.5,100
2024-01-03,null,null,null,null,null
not-a-date,10,11,9,10.5,100
2024-01-05,10,9,11,10.5,100
2024-01-06,10,11,9,10.5,-5
2024-01-07,10,11,9
2024-01-08,10,11,9,10.5,100
";
        let r = load(&[("x.csv", text)]);
        assert_eq!(r.len(), 2);
        assert_eq!(r.bad_input(), 5);
        let with_symbols = "Symbol,Date,Open,High,Low,Close,Volume\nA B,2024-01-02,1,1,1,1,1\n,2024-01-02,1,1,1,1,1\nOK,2024-01-02,1,1,1,1,1\n";
        let r = load(&[("y.csv", with_symbols)]);
        assert_eq!((r.len(), r.bad_input(), r.names.len()), (1, 2, 1));
    }

    #[test]
    fn a_directory_replays_in_time_order_one_step_at_a_time() {
        let a = "Date,Open,High,Low,Close,Volume\n2024-01-01,1,1,1,1,10\n2024-01-02,2,2,2,2,10\n";
        let b = "Date,Open,High,Low,Close,Volume\n2024-01-02,5,5,5,5,10\n2024-01-03,6,6,6,6,10\n";
        let mut r = load(&[("a.csv", a), ("b.csv", b)]);
        assert!(times(&r).windows(2).all(|w| w[0] <= w[1]));
        let mut u = Universe::new(IndicatorParams::default(), 100);
        let now = Instant::now();
        let mut steps = Vec::new();
        while !r.exhausted() && steps.len() < 10 {
            let before = u.updates;
            r.poll(now, &mut u);
            steps.push(u.updates - before);
            u.settle();
        }
        assert_eq!(steps, [1, 2, 1]);
        assert_eq!(u.len(), 2);
    }

    #[test]
    fn a_paced_replay_delivers_bars_per_second() {
        let mut text = String::from("Date,Open,High,Low,Close,Volume\n");
        for d in 1..=28 {
            text += &format!("2024-02-{d:02},1,1,1,1,10\n");
        }
        let mut r = load(&[("p.csv", &text)]);
        r.speed = Speed::PerSecond(10.0);
        let t0 = Instant::now();
        r.restart(t0);
        let mut u = Universe::new(IndicatorParams::default(), 100);
        r.poll(t0, &mut u);
        assert_eq!(u.updates, 1);
        assert_eq!(r.next_due(), Some(t0 + Duration::from_millis(100)));
        // Ten more are due, but one symbol takes one bar per step: each is scanned.
        let later = t0 + Duration::from_millis(1_050);
        r.poll(later, &mut u);
        assert_eq!(u.updates, 1, "the first bar is not scanned yet");
        for _ in 0..10 {
            u.settle();
            r.poll(later, &mut u);
        }
        assert_eq!(u.updates, 11);
        u.settle();
        r.poll(later, &mut u);
        assert_eq!(u.updates, 11, "the 12th is due at 1.1 s");
        // Paused for a minute, then restarted: no burst.
        r.restart(t0 + Duration::from_secs(60));
        for _ in 0..3 {
            r.poll(t0 + Duration::from_secs(60), &mut u);
            u.settle();
        }
        assert_eq!(u.updates, 12);
    }

    #[test]
    fn a_file_without_the_needed_columns_is_refused_by_name() {
        let dir =
            std::env::temp_dir().join(format!("scanstream-csv-missing-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.csv");
        std::fs::write(&path, "Date,Price\n2024-01-01,1\n").unwrap();
        let err = CsvReplay::open(&path, Speed::Max, Instant::now()).unwrap_err();
        std::fs::remove_dir_all(&dir).unwrap();
        let msg = err.to_string();
        assert!(
            msg.contains("bad.csv") && msg.contains("open") && msg.contains("volume"),
            "{msg}"
        );
    }

    #[test]
    fn speeds_parse() {
        assert_eq!("max".parse(), Ok(Speed::Max));
        assert_eq!("250".parse(), Ok(Speed::PerSecond(250.0)));
        assert!("0".parse::<Speed>().is_err());
        assert!("fast".parse::<Speed>().is_err());
    }
}
