//! The measured window of a benchmark run: its clock, the server's CPU time and RSS and
//! the engine's own CPU time over it, and the results and churn cycles of each whole
//! second. It reads the engine's counters and /proc; it never touches a connection.

use std::time::{Duration, Instant};

use super::Engine;
use super::report::ServerUsage;
use crate::sys;

/// The measured window: its clock, the server's and our own CPU time, RSS samples and
/// the per-second message counts.
#[derive(Default)]
pub(super) struct Window {
    started: Option<Instant>,
    pub(super) elapsed_s: f64,
    server_cpu: sys::CpuSample,
    server_cpu_last: sys::CpuSample,
    pub(super) server: Option<ServerUsage>,
    loadgen_cpu_start: u64,
    pub(super) loadgen_cpu_ns: u64,
    pub(super) next_interval: Option<Instant>,
    interval_base: u64,
    pub(super) intervals: Vec<u64>,
    cycle_base: u64,
    pub(super) cycle_intervals: Vec<u64>,
}

impl Window {
    pub(super) fn start(engine: &mut Engine, now: Instant) -> Window {
        engine.in_window = true;
        for (i, c) in engine.conns.iter().enumerate() {
            engine.fair[i] = c.as_ref().is_some_and(|c| c.conn.is_open());
        }
        let mut w = Window {
            started: Some(now),
            loadgen_cpu_start: sys::thread_cpu_ns(),
            next_interval: Some(now + Duration::from_secs(1)),
            ..Window::default()
        };
        if let Some(pid) = engine.cfg.server_pid {
            w.server_cpu = sys::server_cpu(pid);
            w.server_cpu_last = w.server_cpu;
            let rss = sys::rss_kib(pid);
            w.server = Some(ServerUsage {
                pid,
                cpu_ns: None,
                cpu_source: "",
                rss_kib_start: rss,
                rss_kib_max: rss,
                rss_kib_end: rss,
            });
        }
        w
    }

    /// RSS for its maximum, and CPU time so that a server that dies mid-window still
    /// gets the CPU it used until then.
    pub(super) fn sample_server(&mut self) {
        if let Some(s) = self.server.as_mut() {
            if let Some(rss) = sys::rss_kib(s.pid) {
                s.rss_kib_max = Some(s.rss_kib_max.map_or(rss, |m| m.max(rss)));
            }
            let cpu = sys::server_cpu(s.pid);
            if cpu.sched_ns.is_some() || cpu.stat_ns.is_some() {
                self.server_cpu_last = cpu;
            }
        }
    }

    /// Closes each whole second of the window; the poll deadline includes the boundary.
    pub(super) fn count_interval(&mut self, engine: &Engine, now: Instant) {
        if let Some(next) = self.next_interval
            && now >= next
        {
            self.intervals.push(engine.c.messages - self.interval_base);
            self.interval_base = engine.c.messages;
            self.cycle_intervals.push(engine.c.cycles - self.cycle_base);
            self.cycle_base = engine.c.cycles;
            self.next_interval = Some(next + Duration::from_secs(1));
        }
    }

    pub(super) fn finish(&mut self, engine: &Engine, now: Instant) {
        // The last second usually ends with the window itself.
        self.count_interval(engine, now);
        if let Some(started) = self.started {
            self.elapsed_s = now.duration_since(started).as_secs_f64();
        }
        self.loadgen_cpu_ns = sys::thread_cpu_ns().saturating_sub(self.loadgen_cpu_start);
        if let Some(s) = self.server.as_mut() {
            let mut end = sys::server_cpu(s.pid);
            if end.sched_ns.is_none() && end.stat_ns.is_none() {
                // The process is gone: count up to the last sample.
                end = self.server_cpu_last;
            }
            if let Some((ns, source)) = sys::cpu_delta(self.server_cpu, end) {
                s.cpu_ns = Some(ns);
                s.cpu_source = source;
            }
            let rss = sys::rss_kib(s.pid);
            s.rss_kib_end = rss;
            if let Some(rss) = rss {
                s.rss_kib_max = Some(s.rss_kib_max.map_or(rss, |m| m.max(rss)));
            }
        }
    }
}
