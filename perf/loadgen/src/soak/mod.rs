//! The soak driver: N WebSocket clients on one thread and one mio `Poll`, each a state
//! machine over a real TCP connection that subscribes with empty filters (every result
//! matches, so its `seq` values must be contiguous) and then, at random intervals,
//! disconnects (a clean close or a reset) and resumes with `since` and `epoch`,
//! unsubscribes and later subscribes afresh, asks for ad-hoc scans, acknowledges alerts
//! and pings. Every reply is matched to its request by `id`; every result is checked
//! against the last one its client saw. The server's RSS is sampled along the way.
//!
//! [`run`] returns a [`SoakReport`] with the counts, the RSS curve and the verdict
//! ([`SoakReport::failures`]); `loadgen --soak` prints it as a table and a JSON line.
//!
//! This module owns the loop: the clock, the poll, RSS samples and progress lines. A
//! client's life is in `client`, what it expects from the server in `session` and
//! `chain`, the figures in `shared`, `report` and `output`, the memory rule in `rss`;
//! the connection itself is [`crate::conn`].

mod chain;
mod client;
mod config;
mod output;
mod report;
mod rss;
mod session;
mod shared;

use std::io;
use std::time::{Duration, Instant};

use mio::{Events, Poll};

use crate::conn::{Conn, Phase, ReadBuf};
use crate::rng::Rng;
use crate::sys;
use client::Client;
use shared::Shared;

pub use chain::{Chain, Subscribed, after_subscribed};
pub use config::{DEFAULT_RSS_GROWTH_PCT, DEFAULT_RSS_SLACK_KIB, SoakConfig};
pub use report::{Actions, SoakReport};
pub use rss::{RssJudgement, RssSample, judge_rss};

/// Timer resolution of the driver: actions, reconnects and deadlines.
const TICK: Duration = Duration::from_millis(50);
/// Bytes per `read` call.
const READ_CHUNK: usize = 64 * 1024;

/// Runs the soak: ramps the clients up, lets them act at random until `duration` has
/// passed since the start, samples RSS, then closes every connection and reports.
pub fn run(cfg: SoakConfig) -> io::Result<SoakReport> {
    if cfg.act_min.is_zero() || cfg.act_max < cfg.act_min {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "act_min must be above 0 and at most act_max",
        ));
    }
    if cfg.reconnect_max < cfg.reconnect_min || cfg.rss_every.is_zero() || cfg.ramp <= 0.0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "reconnect_min must be at most reconnect_max; rss_every and ramp above 0",
        ));
    }
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let start = Instant::now();
    let end = start + cfg.duration;
    let cpu0 = sys::thread_cpu_ns();
    let mut clients: Vec<Client> = (0..cfg.clients)
        .map(|i| {
            let at = start + Duration::from_secs_f64(i as f64 / cfg.ramp);
            Client::new(i, cfg.seed, at, &cfg)
        })
        .collect();
    let mut sh = Shared::default();
    let mut rbuf = ReadBuf::new(READ_CHUNK, false);
    let mut ready: Vec<usize> = Vec::new();
    let mut next_tick = start;
    let mut next_rss = start;
    let mut rss_rng = Rng::new(!cfg.seed);
    let mut next_progress = cfg.progress_every.map(|p| start + p);
    loop {
        let now = Instant::now();
        if now >= next_rss {
            if let Some(pid) = cfg.rss_pid {
                match sys::rss_kib(pid) {
                    Some(kib) => sh.r.rss.push(RssSample {
                        t_s: now.duration_since(start).as_secs_f64(),
                        kib,
                    }),
                    None => sh.r.rss_lost = true,
                }
            }
            next_rss = now + cfg.rss_every.mul_f64(0.5 + rss_rng.unit());
        }
        if now >= end {
            break;
        }
        if now >= next_tick {
            next_tick = now + TICK;
            let reg = poll.registry();
            for c in clients.iter_mut() {
                c.tick(reg, &cfg, &mut sh, now);
            }
        }
        if let (Some(at), Some(every)) = (next_progress, cfg.progress_every)
            && now >= at
        {
            next_progress = Some(at + every);
            let open = clients.iter().filter(|c| c.is_open()).count();
            let r = &sh.r;
            eprintln!(
                "soak: {:>5.0} s  open {open}/{}  actions {}  results {}  resumes {}  lost {}  duplicated {}  failures {}  rss {} KiB",
                now.duration_since(start).as_secs_f64(),
                cfg.clients,
                r.actions.total(),
                r.results,
                r.resumes,
                sh.seq.lost,
                sh.seq.duplicated,
                r.connect_failures + r.unexpected_disconnects + r.reply_timeouts + r.not_recovered,
                r.rss.last().map_or(0, |s| s.kib)
            );
        }
        let deadline = next_tick.min(next_rss).min(end);
        let timeout = if ready.is_empty() {
            deadline.saturating_duration_since(Instant::now())
        } else {
            Duration::ZERO
        };
        if let Err(e) = poll.poll(&mut events, Some(timeout))
            && e.kind() != io::ErrorKind::Interrupted
        {
            return Err(e);
        }
        let now = Instant::now();
        let reg = poll.registry();
        for ev in events.iter() {
            let i = ev.token().0;
            let Some(c) = clients.get_mut(i) else {
                continue;
            };
            let Some(phase) = c.conn.as_ref().map(Conn::phase) else {
                continue;
            };
            let readable = ev.is_readable() || ev.is_read_closed() || ev.is_error();
            match phase {
                // The response may already be there; it raises its own edge anyway.
                Phase::Connecting => c.on_connected(reg, &cfg, &mut sh, now),
                Phase::Handshaking => {
                    if ev.is_writable() {
                        c.flush_or_end(reg, &cfg, &mut sh, now);
                    }
                    if readable
                        && c.read_handshake(reg, &cfg, &mut sh, now)
                        && c.read(reg, &mut rbuf, &mut sh, &cfg, now)
                    {
                        ready.push(i);
                    }
                }
                Phase::Open | Phase::Closing { .. } => {
                    if ev.is_writable() {
                        c.flush_or_end(reg, &cfg, &mut sh, now);
                    }
                    if readable && c.read(reg, &mut rbuf, &mut sh, &cfg, now) {
                        ready.push(i);
                    }
                }
            }
        }
        for i in std::mem::take(&mut ready) {
            let c = &mut clients[i];
            if c.conn.as_ref().is_some_and(Conn::is_reading_frames)
                && c.read(reg, &mut rbuf, &mut sh, &cfg, now)
            {
                ready.push(i);
            }
        }
    }
    // Close what is open, politely, without waiting for the answers.
    let reg = poll.registry();
    for c in clients.iter_mut() {
        if let Some(mut conn) = c.conn.take() {
            if conn.is_open() {
                conn.out().close(1000);
                let _ = conn.flush();
            }
            conn.close(reg, false);
        }
    }
    let mut r = std::mem::take(&mut sh.r);
    r.lost = sh.seq.lost;
    r.duplicated = sh.seq.duplicated;
    r.addr = cfg.addr.to_string();
    r.tls = cfg.tls.is_some();
    r.clients = cfg.clients;
    r.seed = cfg.seed;
    r.duration_s = start.elapsed().as_secs_f64();
    r.warmup_s = cfg.warmup.as_secs_f64();
    let h = &sh.reply_hist;
    let ms = |ns: u64| (ns as f64 / 1e3).round() / 1e3;
    r.reply_latency_ms = [ms(h.quantile(0.5)), ms(h.quantile(0.99)), ms(h.max())];
    r.rss_pid = cfg.rss_pid;
    r.rss_every_s = cfg.rss_every.as_secs_f64();
    r.rss_judgement = judge_rss(&r.rss, r.warmup_s, cfg.rss_growth_pct, cfg.rss_slack_kib);
    r.loadgen_cpu_s = sys::thread_cpu_ns().saturating_sub(cpu0) as f64 / 1e9;
    Ok(r)
}
