//! The webhook handler: an HTTP POST of each alert's JSON to a configured URL, from a
//! worker thread of its own, with a timeout and bounded retries.
//!
//! The request is one fixed shape over plain HTTP/1.1 (`Connection: close`), and the
//! answer needs only its status line, which httparse (already ours for the server)
//! reads; a general HTTP client would add much for this. TLS is left to a local proxy.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};

use super::rule::HandlerKind;
use super::{Alert, Handler};

/// Alerts waiting for the worker at most; past it new ones are dropped and counted.
const QUEUE: usize = 1024;

/// Largest response head read.
const MAX_HEAD: usize = 16 * 1024;

/// Where and how to post.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookSettings {
    /// `http://host:port/path`.
    pub url: String,
    /// Limit on each attempt: connect, send and the response's status line.
    pub timeout: Duration,
    /// Attempts after the first.
    pub retries: u32,
    /// Delay before the first retry; doubles after each.
    pub backoff: Duration,
}

/// The worker's counters, for `/metrics`.
#[derive(Debug, Default)]
pub struct WebhookStats {
    /// Alerts delivered (a 2xx answer).
    pub sent: AtomicU64,
    /// Attempts that failed (error, timeout or a non-2xx answer).
    pub failed_attempts: AtomicU64,
    /// Alerts given up after every retry.
    pub gave_up: AtomicU64,
    /// Alerts dropped because the worker's queue was full.
    pub dropped: AtomicU64,
}

/// The handler: queues for the worker.
#[derive(Debug)]
pub struct Webhook {
    tx: Sender<Arc<str>>,
    stats: Arc<WebhookStats>,
}

/// A parsed `http://` URL.
#[derive(Debug, Clone, PartialEq)]
struct Target {
    host: String,
    port: u16,
    path: String,
}

fn parse_url(url: &str) -> Result<Target, String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        format!("`{url}`: only http:// is supported (put a TLS proxy in front for https)")
    })?;
    if url.contains('#') {
        return Err(format!("`{url}`: a fragment has no place in a request"));
    }
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    // `[v6]:port`, `[v6]`, `host:port` or `host`.
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("`{url}`: unclosed `[`"))?;
            match after.strip_prefix(':') {
                Some(p) => (host, p),
                None if after.is_empty() => (host, "80"),
                None => return Err(format!("`{url}`: unexpected `{after}` after the host")),
            }
        }
        None => authority.rsplit_once(':').unwrap_or((authority, "80")),
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("`{url}`: bad port `{port}`"))?;
    if host.is_empty() {
        return Err(format!("`{url}`: no host"));
    }
    let bad = |b: u8| b.is_ascii_whitespace() || b.is_ascii_control();
    if host.bytes().any(bad) || path.bytes().any(bad) {
        return Err(format!("`{url}`: spaces or control characters"));
    }
    Ok(Target {
        host: host.to_owned(),
        port,
        path: path.to_owned(),
    })
}

impl Target {
    /// The `Host` header's value: an IPv6 address goes in brackets.
    fn host_header(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl Webhook {
    /// Checks the URL and starts the worker.
    pub fn start(settings: WebhookSettings) -> Result<Webhook, String> {
        let target = parse_url(&settings.url)?;
        let (tx, rx) = bounded(QUEUE);
        let stats = Arc::new(WebhookStats::default());
        let worker_stats = Arc::clone(&stats);
        thread::Builder::new()
            .name("webhook".into())
            .spawn(move || worker(rx, target, settings, worker_stats))
            .map_err(|e| format!("worker thread: {e}"))?;
        Ok(Webhook { tx, stats })
    }

    /// The counters.
    pub fn stats(&self) -> Arc<WebhookStats> {
        Arc::clone(&self.stats)
    }
}

impl Handler for Webhook {
    fn kind(&self) -> HandlerKind {
        HandlerKind::Webhook
    }

    fn deliver(&mut self, alert: &Alert, json: &str) {
        match self.tx.try_send(Arc::from(json)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(alert_id = %alert.wire_id(), "webhook queue full; alert not posted");
            }
            Err(TrySendError::Disconnected(_)) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Posts each alert, retrying with a doubling delay; ends when the handler is dropped.
fn worker(
    rx: Receiver<Arc<str>>,
    target: Target,
    settings: WebhookSettings,
    stats: Arc<WebhookStats>,
) {
    for body in rx {
        let mut delay = settings.backoff;
        let mut attempt = 0;
        loop {
            match post(&target, &body, settings.timeout) {
                Ok(()) => {
                    stats.sent.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Err(e) => {
                    stats.failed_attempts.fetch_add(1, Ordering::Relaxed);
                    if attempt >= settings.retries {
                        stats.gave_up.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(error = %e, attempts = attempt + 1, "webhook: alert not delivered");
                        break;
                    }
                    tracing::debug!(error = %e, attempt, "webhook attempt failed; retrying");
                    thread::sleep(delay);
                    delay = delay.saturating_mul(2);
                    attempt += 1;
                }
            }
        }
    }
}

/// One POST; `Ok` on a 2xx status.
fn post(target: &Target, body: &str, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| "timed out".to_owned())
    };
    let addrs: Vec<SocketAddr> = (target.host.as_str(), target.port)
        .to_socket_addrs()
        .map_err(|e| format!("resolve {}: {e}", target.host))?
        .collect();
    let mut connected = Err("no address".to_owned());
    for addr in &addrs {
        connected =
            TcpStream::connect_timeout(addr, left()?).map_err(|e| format!("connect {addr}: {e}"));
        if connected.is_ok() {
            break;
        }
    }
    let mut stream = connected?;
    let request = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\nUser-Agent: scanstream\r\n\r\n{body}",
        target.path,
        target.host_header(),
        body.len()
    );
    stream
        .set_write_timeout(Some(left()?))
        .and_then(|()| stream.write_all(request.as_bytes()))
        .map_err(|e| format!("send: {e}"))?;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 2048];
    loop {
        stream
            .set_read_timeout(Some(left()?))
            .map_err(|e| format!("read: {e}"))?;
        let n = stream.read(&mut buf).map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => "timed out".to_owned(),
            _ => format!("read: {e}"),
        })?;
        if n == 0 {
            return Err("closed before answering".into());
        }
        head.extend_from_slice(&buf[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&head) {
            Ok(httparse::Status::Complete(_)) => {
                let code = response.code.unwrap_or(0);
                return if (200..300).contains(&code) {
                    Ok(())
                } else {
                    Err(format!("HTTP {code}"))
                };
            }
            Ok(httparse::Status::Partial) if head.len() < MAX_HEAD => {}
            Ok(httparse::Status::Partial) => return Err("response head too large".into()),
            Err(e) => return Err(format!("bad response: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_or_say_why_not() {
        assert_eq!(
            parse_url("http://127.0.0.1:9000/hook").unwrap(),
            Target {
                host: "127.0.0.1".into(),
                port: 9000,
                path: "/hook".into()
            }
        );
        assert_eq!(parse_url("http://example.com").unwrap().port, 80);
        assert_eq!(parse_url("http://example.com").unwrap().path, "/");
        assert_eq!(parse_url("http://[::1]:81/x").unwrap().host, "::1");
        assert_eq!(parse_url("http://[::1]/x").unwrap().port, 80);
        assert_eq!(
            parse_url("http://[::1]:81/x").unwrap().host_header(),
            "[::1]:81"
        );
        assert_eq!(parse_url("http://h:81/x").unwrap().host_header(), "h:81");
        assert!(
            parse_url("http://h/x#frag")
                .unwrap_err()
                .contains("fragment")
        );
        assert!(
            parse_url("http://h\r\nx/x")
                .unwrap_err()
                .contains("control")
        );
        assert!(parse_url("http://[::1/x").unwrap_err().contains("unclosed"));
        assert!(
            parse_url("https://example.com")
                .unwrap_err()
                .contains("http://")
        );
        assert!(
            parse_url("http://h:port/")
                .unwrap_err()
                .contains("bad port")
        );
        assert!(parse_url("http:///x").unwrap_err().contains("no host"));
    }
}
