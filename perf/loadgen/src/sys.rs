//! What the load generator reads from the operating system: a server's CPU time and RSS
//! from /proc, its own thread's CPU time, the wall clock, the open-file limit and CPU
//! affinity.

use std::fs;
use std::os::fd::AsRawFd;
use std::time::SystemTime;

/// A server's CPU time (user + system, every thread) read two ways.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuSample {
    /// Sum of /proc/PID/task/*/schedstat: nanoseconds, exact, but a thread that exits
    /// takes its time with it. (/proc/PID/schedstat alone would count the main thread.)
    pub sched_ns: Option<u64>,
    /// utime + stime of /proc/PID/stat: exited threads included, but in clock ticks
    /// (10 ms at the usual 100 Hz).
    pub stat_ns: Option<u64>,
}

pub fn server_cpu(pid: u32) -> CpuSample {
    CpuSample {
        sched_ns: schedstat_sum(pid),
        stat_ns: stat_cpu_ns(pid),
    }
}

/// CPU time between two samples and its source: schedstat when it agrees with stat
/// within stat's tick resolution (no thread came or went unnoticed), else stat.
pub fn cpu_delta(a: CpuSample, b: CpuSample) -> Option<(u64, &'static str)> {
    let sched = b
        .sched_ns
        .zip(a.sched_ns)
        .and_then(|(b, a)| b.checked_sub(a));
    let stat = b.stat_ns.zip(a.stat_ns).and_then(|(b, a)| b.checked_sub(a));
    let slack = 3 * (1_000_000_000 / clock_ticks());
    match (sched, stat) {
        (Some(s), Some(t)) if s.abs_diff(t) <= slack + t / 50 => Some((s, "schedstat")),
        (_, Some(t)) => Some((t, "stat")),
        (Some(s), None) => Some((s, "schedstat")),
        (None, None) => None,
    }
}

fn schedstat_sum(pid: u32) -> Option<u64> {
    let mut total = 0u64;
    let mut any = false;
    for entry in fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let Ok(entry) = entry else { continue };
        // A thread may exit between listing and reading; skip it.
        let Ok(text) = fs::read_to_string(entry.path().join("schedstat")) else {
            continue;
        };
        total += text.split_whitespace().next()?.parse::<u64>().ok()?;
        any = true;
    }
    any.then_some(total)
}

/// utime + stime of a whole process (exited threads included) in nanoseconds.
pub fn stat_cpu_ns(pid: u32) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let ticks = parse_stat_ticks(&text)?;
    Some(ticks * (1_000_000_000 / clock_ticks()))
}

/// utime + stime (fields 14 and 15) of a /proc/PID/stat line; the command name in
/// parentheses may hold spaces, so fields are counted from the last ')'.
fn parse_stat_ticks(text: &str) -> Option<u64> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

/// VmRSS of `pid` in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vmrss(&text)
}

fn parse_vmrss(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    line["VmRSS:".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The wall clock in nanoseconds since the Unix epoch, as the server stamps its results.
pub fn wall_ns() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// CPU time of the calling thread in nanoseconds.
pub fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec the call writes into.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Raises the soft open-file limit to the hard one; returns the soft limit in force.
pub fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: lim is a valid rlimit the calls read and write.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    lim.rlim_cur
}

/// SO_LINGER with a zero timeout: `close` then resets the connection instead of sending
/// FIN, so the socket skips TIME_WAIT.
pub fn set_linger_zero(sock: &impl AsRawFd) -> bool {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: the fd is a live socket; l is a valid linger of the size passed.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        ) == 0
    }
}

/// The CPUs this thread may run on.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; zeroed is an empty set; the call fills it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

/// Pins the calling thread to one CPU.
pub fn pin_to(cpu: usize) -> bool {
    // SAFETY: as in allowed_cpus; CPU_SET stays within the set for cpu < CPU_SETSIZE.
    unsafe {
        if cpu >= libc::CPU_SETSIZE as usize {
            return false;
        }
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_after_a_command_with_spaces() {
        let line = "1234 (my (odd) srv) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0";
        assert_eq!(parse_stat_ticks(line), Some(325));
        assert_eq!(parse_stat_ticks("garbage"), None);
    }

    #[test]
    fn vmrss_line() {
        let status = "Name:\tscanstream\nVmPeak:\t  9000 kB\nVmRSS:\t    8704 kB\nThreads:\t3\n";
        assert_eq!(parse_vmrss(status), Some(8704));
        assert_eq!(parse_vmrss("Name: x\n"), None);
    }

    #[test]
    fn own_process_can_be_sampled() {
        let pid = std::process::id();
        let a = server_cpu(pid);
        assert!(a.sched_ns.is_some() && a.stat_ns.is_some());
        let b = CpuSample {
            sched_ns: a.sched_ns.map(|n| n + 1_000_000),
            stat_ns: a.stat_ns,
        };
        assert_eq!(cpu_delta(a, b), Some((1_000_000, "schedstat")));
        let c = CpuSample {
            sched_ns: a.sched_ns,
            stat_ns: a.stat_ns.map(|n| n + 5_000_000_000),
        };
        assert_eq!(cpu_delta(a, c), Some((5_000_000_000, "stat")));
        assert!(rss_kib(pid).unwrap_or(0) > 0);
        assert!(stat_cpu_ns(pid).is_some());
    }
}
