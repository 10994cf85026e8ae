//! The `scanstream` program as a child process, for what only the program does: flags,
//! the environment, signals, exit codes, descriptor limits. Its stderr is drained on a
//! thread into a log the test reads and waits on, so the child never blocks on a full
//! pipe; the child is killed and reaped when dropped, however the test ends.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, unbounded};

use super::TIMEOUT;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_scanstream");

/// A server's flags before a test's own: a port of its choosing, and the `info` level
/// that logs the `listening` line with the address.
pub const SERVER_ARGS: [&str; 4] = ["--listen", "127.0.0.1:0", "--log", "info"];

/// `scanstream` with `args`, stdin and stdout null; change them before spawning.
pub fn scanstream(args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    command
}

/// A running program, killed and reaped when dropped.
pub struct Binary {
    child: Child,
    log: Arc<Log>,
}

/// What the program wrote to stderr so far, with a bell rung at each line and at the end.
#[derive(Default)]
struct Log {
    state: Mutex<Logged>,
    grew: Condvar,
}

#[derive(Default)]
struct Logged {
    text: String,
    /// The pipe is closed: the program exited, nothing more will come.
    ended: bool,
}

impl Binary {
    /// Spawns `command` with its stderr drained into the log.
    #[track_caller]
    pub fn spawn(command: &mut Command) -> Binary {
        let mut child = command
            .stderr(Stdio::piped())
            .spawn()
            .expect("start scanstream");
        let log = Arc::new(Log::default());
        let sink = log.clone();
        each_line(child.stderr.take().expect("stderr"), move |line| {
            let mut state = sink.state.lock().unwrap();
            match line {
                Some(line) => state.text.push_str(&(line + "\n")),
                None => state.ended = true,
            }
            sink.grew.notify_all();
            true
        });
        Binary { child, log }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Everything the program logged so far.
    pub fn log(&self) -> String {
        self.log.state.lock().unwrap().text.clone()
    }

    /// The first line of the log that holds `needle`, waiting for it up to `TIMEOUT`.
    #[track_caller]
    pub fn wait_for_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + TIMEOUT;
        let mut state = self.log.state.lock().unwrap();
        loop {
            let Logged { text, ended } = &*state;
            if let Some(line) = text.lines().find(|l| l.contains(needle)) {
                return line.to_owned();
            }
            assert!(!ended, "the log ended before `{needle}`:\n{text}");
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no `{needle}` in the log:\n{text}");
            state = self.log.grew.wait_timeout(state, left).unwrap().0;
        }
    }

    /// The program's stdin, which the command must have piped.
    pub fn stdin(&mut self) -> &mut ChildStdin {
        self.child.stdin.as_mut().expect("stdin piped")
    }

    /// Closes the program's stdin: the end of its input.
    pub fn close_stdin(&mut self) {
        drop(self.child.stdin.take());
    }

    /// The program's stdout, which the command must have piped.
    pub fn take_stdout(&mut self) -> ChildStdout {
        self.child.stdout.take().expect("stdout piped")
    }

    /// The program's stdout a line at a time, read on a thread.
    pub fn stdout_lines(&mut self) -> Receiver<String> {
        let (tx, rx) = unbounded();
        each_line(self.take_stdout(), move |line| {
            line.is_some_and(|line| tx.send(line).is_ok())
        });
        rx
    }

    /// Ctrl-C.
    #[track_caller]
    pub fn interrupt(&self) {
        self.signal("INT");
    }

    /// What a service manager (or an ACME client's hook) sends to have files read again.
    #[track_caller]
    pub fn hangup(&self) {
        self.signal("HUP");
    }

    /// What a service manager sends to stop a service.
    #[track_caller]
    pub fn terminate(&self) {
        self.signal("TERM");
    }

    #[track_caller]
    fn signal(&self, name: &str) {
        // The shell's own `kill`: no dependency on a procps binary, no unsafe FFI.
        let status = Command::new("sh")
            .args(["-c", &format!("kill -s {name} {}", self.id())])
            .status()
            .unwrap();
        assert!(status.success(), "kill -s {name}: {status}");
    }

    /// `kill -9`: no shutdown, nothing flushed; then reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits for the program to exit and its log to end; kills it and fails the test
    /// after `limit`.
    #[track_caller]
    pub fn exit_within(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("scanstream did not exit within {limit:?}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // The drain thread may not have read the last lines yet.
        let state = self.log.state.lock().unwrap();
        let left = deadline.saturating_duration_since(Instant::now()) + TIMEOUT;
        drop(
            self.log
                .grew
                .wait_timeout_while(state, left, |s| !s.ended)
                .unwrap(),
        );
        status
    }

    /// Waits for the program to fail, as it must; returns its log.
    #[track_caller]
    pub fn expect_failure(mut self) -> String {
        let status = self.exit_within(TIMEOUT);
        let log = self.log();
        assert!(!status.success(), "{status}: {log}");
        log
    }
}

/// Reads `pipe` on a thread of its own, a line at a time, then `None` at its end, while
/// `each` asks for more.
fn each_line(
    pipe: impl Read + Send + 'static,
    mut each: impl FnMut(Option<String>) -> bool + Send + 'static,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if !each(Some(line)) {
                return;
            }
        }
        each(None);
    });
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The program as a server, with the address it logged on startup.
pub struct BinaryServer {
    pub addr: SocketAddr,
    binary: Binary,
}

impl BinaryServer {
    /// `scanstream` with `SERVER_ARGS` and then `args`.
    #[track_caller]
    pub fn start(args: &[&str]) -> BinaryServer {
        BinaryServer::start_with(args, |_| {})
    }

    /// As `start`, with the command changed by `setup` (the environment, a piped stdin).
    #[track_caller]
    pub fn start_with(args: &[&str], setup: impl FnOnce(&mut Command)) -> BinaryServer {
        let mut command = scanstream(&SERVER_ARGS);
        // Only when asked for: a flag given twice is an error, and a test may give it.
        if super::edges() != 1 {
            command.args(["--threads", &super::edges().to_string()]);
        }
        command.args(args);
        setup(&mut command);
        BinaryServer::listening(Binary::spawn(&mut command))
    }

    /// A spawned server once it has logged the address it listens on.
    #[track_caller]
    pub fn listening(binary: Binary) -> BinaryServer {
        let line = binary.wait_for_log("local_addr=");
        let addr = line
            .split("local_addr=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        BinaryServer { addr, binary }
    }

    pub fn url(&self) -> String {
        super::stream_url(self.addr)
    }
}

// A server is a program with an address: everything else is `Binary`'s.
impl Deref for BinaryServer {
    type Target = Binary;
    fn deref(&self) -> &Binary {
        &self.binary
    }
}

impl DerefMut for BinaryServer {
    fn deref_mut(&mut self) -> &mut Binary {
        &mut self.binary
    }
}
