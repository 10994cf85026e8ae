//! `writecost`: what one loopback `write` of a result-sized frame costs the writer, with
//! nothing else in the way, so the latency and fan-out figures can be held against the
//! machine's floor.
//!
//! One thread writes `--size` bytes to each of `--sockets` connected loopback sockets in
//! turn (one pass), as a fan-out server does with one result for every subscriber; a
//! second thread drains them all. The writer's CPU time (`RUSAGE_THREAD`) per write is
//! the cost; a pass takes sockets × that, which bounds how soon the last subscriber of
//! a pass can have its copy.
//!
//!     writecost --sockets 100 --size 312 --frames 1 --seconds 5
//!
//! The writer runs on core 0 and the reader on core 1, as in perf/run.sh.
//!
//! `--frames K` writes K frames per call (what batching buys).

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;
use mio::{Events, Interest, Poll, Token};

#[derive(Debug, Parser)]
struct Args {
    /// Connected socket pairs.
    #[arg(long, default_value_t = 100)]
    sockets: usize,
    /// Bytes per frame (a result message is about 312).
    #[arg(long, default_value_t = 312)]
    size: usize,
    /// Frames per write call.
    #[arg(long, default_value_t = 1)]
    frames: usize,
    /// How long to write.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Passes per second at most (0: as fast as possible).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Core the writer runs on (the server's, in perf/run.sh).
    #[arg(long, default_value_t = 0)]
    writer_core: usize,
    /// Core the reader runs on (the load generator's).
    #[arg(long, default_value_t = 1)]
    reader_core: usize,
}

/// Pins the calling thread to `core`; a failure leaves it where it was.
fn pin(core: usize) {
    // SAFETY: a zeroed cpu_set_t is empty; CPU_SET and sched_setaffinity take it by
    // pointer for the calling thread (pid 0).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    // SAFETY: getrusage fills the struct it is given; RUSAGE_THREAD is Linux's.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
    let micros = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    Duration::from_micros(micros(usage.ru_utime) + micros(usage.ru_stime))
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let mut writers = Vec::with_capacity(args.sockets);
    let mut readers = Vec::with_capacity(args.sockets);
    for _ in 0..args.sockets {
        let w = TcpStream::connect(addr)?;
        let (r, _) = listener.accept()?;
        w.set_nodelay(true)?;
        writers.push(w);
        readers.push(r);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let reader_stop = Arc::clone(&stop);
    let reader_core = args.reader_core;
    let reader = thread::spawn(move || -> std::io::Result<u64> {
        pin(reader_core);
        let mut poll = Poll::new()?;
        let mut socks: Vec<mio::net::TcpStream> = readers
            .into_iter()
            .map(|s| {
                s.set_nonblocking(true)?;
                Ok(mio::net::TcpStream::from_std(s))
            })
            .collect::<std::io::Result<_>>()?;
        for (i, s) in socks.iter_mut().enumerate() {
            poll.registry().register(s, Token(i), Interest::READABLE)?;
        }
        let mut events = Events::with_capacity(1024);
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        while !reader_stop.load(Ordering::Relaxed) {
            poll.poll(&mut events, Some(Duration::from_millis(50)))?;
            for ev in &events {
                let s = &mut socks[ev.token().0];
                loop {
                    match s.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => total += n as u64,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        Ok(total)
    });

    pin(args.writer_core);
    let frame = vec![b'x'; args.size * args.frames];
    let start = Instant::now();
    let cpu0 = thread_cpu();
    let (mut writes, mut passes) = (0u64, 0u64);
    let mut pass_times = Vec::new();
    while start.elapsed() < Duration::from_secs(args.seconds) {
        let t = Instant::now();
        for w in &mut writers {
            w.write_all(&frame)?;
            writes += 1;
        }
        pass_times.push(t.elapsed());
        passes += 1;
        if args.rate > 0 {
            let next = start + Duration::from_secs_f64(passes as f64 / args.rate as f64);
            if let Some(wait) = next.checked_duration_since(Instant::now()) {
                thread::sleep(wait);
            }
        }
    }
    let cpu = thread_cpu() - cpu0;
    let wall = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    let bytes = reader.join().map_err(|_| ErrorKind::Other)??;
    pass_times.sort();
    let pct = |p: f64| pass_times[((pass_times.len() - 1) as f64 * p) as usize];
    let per_write = cpu.as_nanos() as f64 / writes.max(1) as f64;
    let mut out = std::io::stdout().lock();
    // A reader that closed the pipe has seen what it wanted.
    let _ = writeln!(
        out,
        "sockets {} size {} frames/write {}: {writes} writes in {:.2} s, writer CPU {:.2} s",
        args.sockets,
        args.size,
        args.frames,
        wall.as_secs_f64(),
        cpu.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "writer CPU per write {per_write:.0} ns ({:.0} ns per frame); pass over {} sockets: \
         p50 {:.3} ms, p99 {:.3} ms; read {} MB",
        per_write / args.frames as f64,
        args.sockets,
        pct(0.5).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        bytes / 1_000_000
    );
    let _ = writeln!(
        out,
        "{{\"sockets\":{},\"size\":{},\"frames\":{},\"writes\":{writes},\"cpu_ns_per_write\":{per_write:.0},\"pass_p50_ms\":{:.3},\"pass_p99_ms\":{:.3}}}",
        args.sockets,
        args.size,
        args.frames,
        pct(0.5).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3
    );
    Ok(())
}
