//! The market scanner: a [`Feed`] of bars into per-symbol indicators, evaluated in paced
//! cycles, deduplicated into `new`/`update`/`clear` results.
//!
//! Everything here takes `now` from its caller, so tests drive it with an injected clock.
//! Pacing: a cycle is due every `scan_interval`; it visits every symbol in chunks (so
//! ad-hoc requests and commands get in between) and evaluates those with new data whose
//! last evaluation was due at least `min_scan_interval` earlier. A replay is not paced by
//! the wall clock: each step of bars it delivers is scanned at once, symbol by symbol.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ahash::AHashMap;
use crossbeam_channel::Receiver;
use smol_str::SmolStr;

use super::dedup::{Dedup, Materiality, SymbolConds};
use super::indicators::{Bar, IndicatorParams, Reference};
use super::scans::Thresholds;
use super::scanset::{Definition, DefinitionError, ScanSet, SymbolScans, builtin};
use super::{Counters, Progress, Source};
use crate::event::{EventKind, ScanEvent, ScanResult};
use crate::expr::Needs;
use crate::protocol::MAX_SYMBOL_LEN;

/// Symbols visited per slice of a cycle.
const CHUNK: usize = 4096;

/// A source of bars.
pub trait Feed: Send {
    /// What `change_pct` is measured against for this kind of data.
    fn reference(&self) -> Reference;
    /// Names the symbols known up front (and any history) before the first poll, so
    /// they can be asked for from the first moment.
    fn begin(&mut self, _universe: &mut Universe) {}
    /// Hands every bar due by `now` to `universe`.
    fn poll(&mut self, now: Instant, universe: &mut Universe);
    /// Data keeps coming while the scanner is stopped (a live market); a replay pauses.
    fn live(&self) -> bool {
        true
    }
    /// False for a replay: every bar is scanned as it is delivered, and `poll` never
    /// delivers two bars of one symbol before they are scanned.
    fn paced(&self) -> bool {
        true
    }
    /// When an unpaced feed's next bar is due (`None`: at once, if there is one).
    fn next_due(&self) -> Option<Instant> {
        None
    }
    /// Nothing more will come.
    fn exhausted(&self) -> bool {
        false
    }
    /// Picks the schedule up at `now` after a pause.
    fn restart(&mut self, _now: Instant) {}
    /// A channel that has a message whenever data is waiting (feeds read by a thread).
    fn doorbell(&mut self) -> Option<Receiver<()>> {
        None
    }
    /// Malformed rows or lines skipped so far.
    fn bad_input(&self) -> u64 {
        0
    }
}

/// Refuses a symbol name that is empty, longer than the protocol allows, or holds
/// whitespace or control characters; the error says which.
pub fn check_symbol(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty symbol".into());
    }
    if name.len() > MAX_SYMBOL_LEN {
        return Err(format!("symbol longer than {MAX_SYMBOL_LEN} bytes"));
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "symbol {name:?} holds whitespace or control characters"
        ));
    }
    Ok(())
}

/// One symbol's state.
#[derive(Debug)]
struct Symbol {
    name: SmolStr,
    /// What the scans and rules read, and the fields every result carries.
    scans: SymbolScans,
    /// Where each scan's condition stands, in the scan set's order.
    conds: SymbolConds,
    /// A bar came since the last evaluation.
    dirty: bool,
    /// Start of the cycle that last evaluated it.
    last_eval: Option<Instant>,
}

/// Every symbol the feed has named, by id, with its indicators.
#[derive(Debug)]
pub struct Universe {
    index: AHashMap<Box<str>, u32>,
    symbols: Vec<Symbol>,
    scans: Arc<ScanSet>,
    /// A new symbol's state, cloned: what every symbol shares is built once.
    fresh: SymbolScans,
    max_symbols: usize,
    /// Bars taken.
    pub updates: u64,
    /// Bars refused: a bad symbol name, a bad price, or the universe is full.
    pub refused: u64,
    /// Symbols that became dirty since the last replay step was scanned.
    touched: Vec<u32>,
}

impl Universe {
    /// An empty universe of at most `max_symbols`, running the built-in scans with their
    /// default thresholds.
    pub fn new(params: IndicatorParams, max_symbols: usize) -> Universe {
        let scans = ScanSet::compile(&builtin(&Thresholds::default(), &params))
            .unwrap_or_else(|_| ScanSet::empty());
        Universe::with_scans(params, max_symbols, Arc::new(scans))
    }

    /// An empty universe of at most `max_symbols`, running `scans`.
    pub fn with_scans(
        params: IndicatorParams,
        max_symbols: usize,
        scans: Arc<ScanSet>,
    ) -> Universe {
        Universe {
            index: AHashMap::new(),
            symbols: Vec::new(),
            fresh: scans.symbol(&params),
            scans,
            max_symbols,
            updates: 0,
            refused: 0,
            touched: Vec::new(),
        }
    }

    /// Symbols known.
    pub fn len(&self) -> usize {
        self.symbols.len()
    }

    /// No symbols yet.
    pub fn is_empty(&self) -> bool {
        self.symbols.is_empty()
    }

    /// The id of `name` (upper-cased), added if new; `None` for a name that is empty,
    /// too long or holds whitespace or control characters, or when the universe is full.
    pub fn intern(&mut self, name: &str) -> Option<u32> {
        if let Some(&id) = self.index.get(name) {
            return Some(id);
        }
        check_symbol(name).ok()?;
        let upper = name.to_uppercase();
        if let Some(&id) = self.index.get(upper.as_str()) {
            return Some(id);
        }
        if self.symbols.len() >= self.max_symbols {
            return None;
        }
        let id = u32::try_from(self.symbols.len()).ok()?;
        let name = SmolStr::from(upper);
        self.index.insert(Box::from(&*name), id);
        self.symbols.push(Symbol {
            name,
            scans: self.fresh.clone(),
            conds: SymbolConds::new(self.scans.len()),
            dirty: false,
            last_eval: None,
        });
        Some(id)
    }

    /// The id of a known symbol.
    pub fn get(&self, name: &str) -> Option<u32> {
        match self.index.get(name) {
            Some(&id) => Some(id),
            None => self.index.get(name.to_uppercase().as_str()).copied(),
        }
    }

    /// Takes a bar for symbol `id`. A bar with a price that is not finite and positive,
    /// or a high below its low, is refused and counted.
    pub fn update(&mut self, id: u32, bar: &Bar) -> bool {
        let prices = [bar.open, bar.high, bar.low, bar.close];
        let sane = prices.iter().all(|p| p.is_finite() && *p > 0.0) && bar.high >= bar.low;
        let Some(sym) = self.symbols.get_mut(id as usize).filter(|_| sane) else {
            self.refused += 1;
            return false;
        };
        self.scans.update(&mut sym.scans, bar);
        if !sym.dirty {
            sym.dirty = true;
            self.touched.push(id);
        }
        self.updates += 1;
        true
    }

    /// Takes a bar for the symbol called `name`, adding it if new.
    pub fn update_named(&mut self, name: &str, bar: &Bar) -> bool {
        match self.intern(name) {
            Some(id) => self.update(id, bar),
            None => {
                self.refused += 1;
                false
            }
        }
    }

    /// Marks every bar scanned, as a cycle would (for feed tests).
    #[cfg(test)]
    pub(super) fn settle(&mut self) {
        for sym in &mut self.symbols {
            sym.dirty = false;
        }
        self.touched.clear();
    }

    /// Symbol `id` has a bar that was not scanned yet.
    pub fn is_dirty(&self, id: u32) -> bool {
        self.symbols.get(id as usize).is_some_and(|s| s.dirty)
    }

    /// The last bar of symbol `id`.
    pub fn last_bar(&self, id: u32) -> Option<&Bar> {
        self.symbols.get(id as usize)?.scans.last()
    }
}

/// How the market scanner scans.
#[derive(Debug, Clone, PartialEq)]
pub struct ScanSettings {
    /// Indicator windows (the reference comes from the feed).
    pub indicators: IndicatorParams,
    /// Scan thresholds.
    pub thresholds: Thresholds,
    /// What makes an `update`.
    pub materiality: Materiality,
    /// A cycle starts this often.
    pub scan_interval: Duration,
    /// A symbol is evaluated at most this often.
    pub min_scan_interval: Duration,
    /// Symbols at most.
    pub max_symbols: usize,
    /// Scans from the config file, run after the built-in ones.
    pub custom: Arc<[Definition]>,
    /// What the alert rules read per symbol (their indicators and crosses), kept beside
    /// the scans' own and handed over with each result.
    pub rules: Arc<Needs>,
}

impl ScanSettings {
    /// Every scan these settings run, compiled: the built-in ones with these thresholds
    /// and windows, then the custom ones.
    pub fn scan_set(&self) -> Result<ScanSet, DefinitionError> {
        let mut defs = builtin(&self.thresholds, &self.indicators);
        defs.extend(self.custom.iter().cloned());
        Ok(ScanSet::compile(&defs)?.with_rules(&self.rules))
    }
}

impl Default for ScanSettings {
    fn default() -> Self {
        ScanSettings {
            indicators: IndicatorParams::default(),
            thresholds: Thresholds::default(),
            materiality: Materiality::default(),
            scan_interval: Duration::from_secs(1),
            min_scan_interval: Duration::from_secs(1),
            max_symbols: 100_000,
            custom: Arc::new([]),
            rules: Arc::default(),
        }
    }
}

/// A cycle in progress.
#[derive(Debug)]
struct Cycle {
    /// When the cycle was due (not when it ran), so pacing does not drift with wake-ups.
    start: Instant,
    /// The symbols to visit: all of them (paced), or those the step touched (replay).
    ids: Option<Vec<u32>>,
    pos: usize,
    work: Duration,
}

/// The scanner over a feed; runs on the scanner thread as its [`Source`].
#[derive(Debug)]
pub struct MarketScanner<F> {
    feed: F,
    universe: Universe,
    settings: ScanSettings,
    dedup: Dedup,
    next_cycle: Instant,
    cycle: Option<Cycle>,
    cycles: u64,
    scanned: u64,
    last_cycle_ms: f64,
    evaluated: u64,
    announced: usize,
    /// Each scan's score on the symbol in hand, reused.
    scores: Vec<Option<f64>>,
}

impl<F: Feed> MarketScanner<F> {
    /// A scanner over `feed` whose first cycle is due at `now`.
    ///
    /// # Panics
    ///
    /// When a scan definition does not compile; [`try_new`](Self::try_new) says why
    /// instead (the config checks them when it loads).
    pub fn new(feed: F, settings: ScanSettings, now: Instant) -> MarketScanner<F> {
        match MarketScanner::try_new(feed, settings, now) {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        }
    }

    /// A scanner over `feed` whose first cycle is due at `now`, or why its scans do not
    /// compile.
    pub fn try_new(
        feed: F,
        mut settings: ScanSettings,
        now: Instant,
    ) -> Result<MarketScanner<F>, DefinitionError> {
        settings.indicators.reference = feed.reference();
        let scans = Arc::new(settings.scan_set()?);
        let mut feed = feed;
        let mut universe = Universe::with_scans(
            settings.indicators,
            settings.max_symbols,
            Arc::clone(&scans),
        );
        feed.begin(&mut universe);
        Ok(MarketScanner {
            scores: vec![None; scans.len()],
            universe,
            dedup: Dedup::new(settings.materiality),
            feed,
            settings,
            next_cycle: now,
            cycle: None,
            cycles: 0,
            scanned: 0,
            last_cycle_ms: 0.0,
            evaluated: 0,
            announced: 0,
        })
    }

    /// The symbols and their indicators.
    pub fn universe(&self) -> &Universe {
        &self.universe
    }

    /// Visits symbols from where the cycle stands until the cycle ends, a chunk is done,
    /// or `out` holds `max` results. Returns true when the cycle is complete.
    fn run_chunk(&mut self, max: usize, out: &mut Vec<ScanResult>) -> bool {
        let Some(mut cycle) = self.cycle.take() else {
            return true;
        };
        let began = Instant::now();
        let len = cycle
            .ids
            .as_ref()
            .map_or(self.universe.symbols.len(), Vec::len);
        let end = (cycle.pos + CHUNK).min(len);
        let min_gap = self.settings.min_scan_interval;
        let set = Arc::clone(&self.universe.scans);
        while cycle.pos < end && out.len() + set.len() <= max {
            let id = match &cycle.ids {
                Some(ids) => ids[cycle.pos] as usize,
                None => cycle.pos,
            };
            cycle.pos += 1;
            let Some(sym) = self.universe.symbols.get_mut(id) else {
                continue;
            };
            // A replay step scans every bar it delivered; a live cycle paces each symbol.
            let rested = cycle.ids.is_some()
                || sym
                    .last_eval
                    .is_none_or(|t| cycle.start.saturating_duration_since(t) >= min_gap);
            if !sym.dirty || !rested {
                continue;
            }
            sym.dirty = false;
            sym.last_eval = Some(cycle.start);
            self.evaluated += 1;
            let fired = set.evaluate(&sym.scans, &mut self.scores);
            let price = sym.scans.last().map_or(0.0, |b| b.close);
            let (name, scans, scores) = (&sym.name, &sym.scans, &self.scores);
            sym.conds.step(
                &self.dedup,
                fired,
                scores,
                |i| set.scan(i),
                price,
                |i, event| {
                    out.push(result(name, scans, &set, i, event, scores[i], false));
                },
            );
        }
        cycle.work += began.elapsed();
        self.scanned = cycle.pos as u64;
        if cycle.pos < len {
            self.cycle = Some(cycle);
            return false;
        }
        if let Some(mut ids) = cycle.ids {
            // Hand the list back so the next step reuses its allocation.
            ids.clear();
            if self.universe.touched.is_empty() {
                self.universe.touched = ids;
            }
        }
        self.cycles += 1;
        // Microseconds are all a status needs.
        self.last_cycle_ms = (cycle.work.as_secs_f64() * 1e6).round() / 1000.0;
        true
    }
}

/// A result for scan `i` of `set` on the symbol's last bar.
fn result(
    name: &SmolStr,
    sym: &SymbolScans,
    set: &ScanSet,
    i: usize,
    event: EventKind,
    score: Option<f64>,
    adhoc: bool,
) -> ScanResult {
    let scan = set.scan(i);
    let bar = sym.last();
    let fields = sym.fields();
    // Custom scans say why they fired; the built-in ones' fields already do.
    let values = if scan.is_custom() {
        set.values(i, sym)
            .map(|(ind, v)| (ind, round4(v)))
            .collect()
    } else {
        Vec::new()
    };
    ScanResult {
        values,
        rule_frame: set.rule_frame(sym),
        symbol: name.clone(),
        scan,
        event,
        score: round4(score.unwrap_or(0.0)),
        price: bar.map_or(0.0, |b| b.close),
        change_pct: round4(fields.change_pct),
        volume: bar.map_or(0, |b| b.volume),
        volume_ratio: round4(fields.volume_ratio),
        rsi: fields.rsi.map(round4),
        source_ts: bar.and_then(|b| b.ts),
        adhoc,
    }
}

/// Four decimals: derived values carry no more meaning than that, and every digit is
/// sent to every subscriber.
fn round4(x: f64) -> f64 {
    if x.is_finite() {
        (x * 1e4).round() / 1e4
    } else {
        0.0
    }
}

impl<F: Feed> Source for MarketScanner<F> {
    fn restore(&mut self, open: &[&ScanEvent]) {
        for ev in open {
            let Some(i) = self.universe.scans.scans().position(|s| s == ev.scan) else {
                continue;
            };
            let id = self.universe.get(&ev.symbol_key);
            if let Some(sym) = id.and_then(|id| self.universe.symbols.get_mut(id as usize)) {
                sym.conds
                    .restore(i, self.dedup.key(ev.scan, ev.score, ev.price));
            }
        }
    }

    fn poll(&mut self, now: Instant, max: usize, out: &mut Vec<ScanResult>) -> Instant {
        let far = now + Duration::from_secs(3600);
        if self.cycle.is_none() {
            self.feed.poll(now, &mut self.universe);
            if self.feed.paced() {
                // The full visit below finds the dirty symbols; the list is not needed.
                self.universe.touched.clear();
                if now < self.next_cycle {
                    return self.next_cycle;
                }
                let due = self.next_cycle;
                let interval = self.settings.scan_interval;
                self.next_cycle += interval;
                if self.next_cycle <= now {
                    // Behind by more than a cycle: skip the missed ones rather than burst.
                    self.next_cycle = now + interval;
                }
                self.cycle = Some(Cycle {
                    start: due,
                    ids: None,
                    pos: 0,
                    work: Duration::ZERO,
                });
            } else {
                if self.universe.touched.is_empty() {
                    // Nothing delivered: wait for the next bar, or for ever at the end.
                    return match self.feed.next_due() {
                        _ if self.feed.exhausted() => far,
                        Some(due) => due.max(now),
                        None => now,
                    };
                }
                self.cycle = Some(Cycle {
                    start: now,
                    ids: Some(std::mem::take(&mut self.universe.touched)),
                    pos: 0,
                    work: Duration::ZERO,
                });
            }
        }
        if !self.run_chunk(max, out) || !self.feed.paced() {
            return now;
        }
        self.next_cycle
    }

    fn idle(&mut self, now: Instant) -> Instant {
        if self.feed.live() {
            self.feed.poll(now, &mut self.universe);
        }
        now + self.settings.scan_interval
    }

    fn scan(&mut self, symbols: &[String], out: &mut Vec<ScanResult>) {
        for name in symbols {
            let Some(id) = self.universe.get(name) else {
                continue;
            };
            let sym = &self.universe.symbols[id as usize];
            let set = &self.universe.scans;
            set.evaluate(&sym.scans, &mut self.scores);
            for (i, &score) in self.scores.iter().enumerate() {
                if score.is_some() {
                    out.push(result(
                        &sym.name,
                        &sym.scans,
                        set,
                        i,
                        EventKind::New,
                        score,
                        true,
                    ));
                }
            }
        }
    }

    fn progress(&self) -> Progress {
        Progress {
            cycle: self.cycles,
            scanned: self.scanned,
            total: self.universe.len() as u64,
            last_cycle_ms: self.last_cycle_ms,
            scanning: self.cycle.is_some(),
            counters: Counters {
                updates: self.universe.updates,
                evaluated: self.evaluated,
                bad_input: self.feed.bad_input() + self.universe.refused,
            },
        }
    }

    fn restart(&mut self, now: Instant) {
        self.feed.restart(now);
        self.next_cycle = self.next_cycle.min(now);
    }

    fn new_symbols(&mut self, out: &mut Vec<Box<str>>) {
        let known = &self.universe.symbols[self.announced..];
        out.extend(known.iter().map(|s| Box::from(&*s.name)));
        self.announced = self.universe.symbols.len();
    }

    fn doorbell(&mut self) -> Option<Receiver<()>> {
        self.feed.doorbell()
    }
}

#[cfg(test)]
mod tests;
