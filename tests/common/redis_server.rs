//! A redis-server of the test's own: installed from Debian's package when it is missing,
//! started on a free port in a scratch directory with the append-only file on, and
//! stopped by its PID when dropped.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::{TIMEOUT, TempDir};

/// A running redis-server; `kill` and `start` again keep its port and its data.
pub struct Redis {
    pub port: u16,
    dir: TempDir,
    child: Option<Child>,
}

impl Redis {
    /// A new server on a free port, with an empty data directory.
    pub fn start() -> Redis {
        install();
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut redis = Redis {
            port,
            dir: TempDir::new(),
            child: None,
        };
        redis.restart();
        redis
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `kill -9`: what was not yet in the append-only file is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `kill -9`, and the last `bytes` of its append-only file lost with it, as a crash
    /// before the file was synced would lose them (Redis loads what is left).
    pub fn kill_losing(&mut self, bytes: u64) {
        self.kill();
        let dir = self.dir.join("appendonlydir");
        let incr = std::fs::read_dir(&dir)
            .expect("the append-only directory")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.to_string_lossy().ends_with(".incr.aof"))
            .expect("an incremental append-only file");
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&incr)
            .expect("open the append-only file");
        let len = file.metadata().expect("its length").len();
        file.set_len(len.saturating_sub(bytes))
            .expect("truncate it");
    }

    /// Starts it again on the same port and directory (the append-only file is replayed);
    /// returns once it answers.
    pub fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + TIMEOUT;
        while Instant::now() < deadline {
            if self.query(&["PING"]).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server on port {} did not answer", self.port);
    }

    /// Runs one command.
    pub fn query(&self, args: &[&str]) -> redis::RedisResult<redis::Value> {
        let client = redis::Client::open(self.url())?;
        let mut con = client.get_connection_with_timeout(Duration::from_secs(1))?;
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        cmd.query(&mut con)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Installs Debian's `redis-server` once per test binary when it is not on the PATH.
fn install() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let found = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if found {
            return;
        }
        // Other test binaries may install at the same time: wait for dpkg's lock.
        let script = "apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
             apt-get install -y -qq -o DPkg::Lock::Timeout=600 redis-server";
        let status = Command::new("sh")
            .args(["-c", script])
            .status()
            .expect("run apt-get");
        assert!(status.success(), "installing redis-server failed: {status}");
    });
}
