//! The client thread: connect, run a connection, decide whether to come back, wait.
//!
//! The socket is a `std::net::TcpStream` run by tungstenite. After the (blocking, timed)
//! handshake it turns non-blocking and joins a mio poll beside a waker, so the thread
//! sleeps until the server sends something or the caller asks for something, with no
//! polling interval between a caller's request and the wire.

use std::io::{self, ErrorKind};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, SendTimeoutError, Sender};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use rand::RngCore;
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::HandshakeError;
use tungstenite::http::{HeaderValue, header};
use tungstenite::protocol::frame::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

use super::message::{Event, State};
use super::outbox::Outbox;
use super::pacing::Pacing;
use super::subs::{Callback, SubscriptionManager};
use super::table::TableHandle;
use super::{ClientConfig, StateCallback};
use crate::protocol::FilterSpec;
use crate::protocol::close;

mod codes;
mod incoming;
mod stream;

pub use codes::{ABNORMAL, describe, should_reconnect};
use stream::{Stream, TlsFailure};

pub(super) const WAKER: Token = Token(0);
const SOCKET: Token = Token(1);

/// What the caller's handle asks of the thread.
pub(super) enum Command {
    Add {
        name: String,
        filters: FilterSpec,
        table: Option<TableHandle>,
        callback: Option<Callback>,
    },
    SetFilters {
        name: String,
        filters: FilterSpec,
    },
    Remove {
        name: String,
    },
    /// The outbox has something.
    Send,
    Close,
}

/// How a connection or an attempt ended.
enum End {
    /// Try again after a backoff delay.
    Retry { code: u16, reason: String },
    /// Stop for good.
    Stop { code: Option<u16>, reason: String },
}

/// The thread's state.
pub(super) struct Worker {
    pub config: ClientConfig,
    pub on_state: Option<StateCallback>,
    pub commands: Receiver<Command>,
    pub outbox: Arc<Mutex<Outbox>>,
    pub state: Arc<Mutex<State>>,
    pub events: Option<Sender<Event>>,
    pub poll: Poll,
    pub rng: Box<dyn RngCore + Send>,
    pub subs: SubscriptionManager,
    /// When the next queued request may go out.
    pub pacing: Pacing,
    /// The caller asked to close.
    pub closing: bool,
    /// Set by the handle before it asks to close, so a full events channel cannot keep
    /// the thread from seeing the request.
    pub close_asked: Arc<AtomicBool>,
    /// The TLS settings, for a `wss://` URL.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl Worker {
    pub fn run(mut self) {
        let mut attempt = 0u32;
        let end = loop {
            if attempt > 0 {
                let delay = self.config.backoff.delay(attempt, &mut *self.rng);
                self.set_state(State::Reconnecting { attempt, delay });
                self.wait(delay);
                if self.closing {
                    break End::Stop {
                        code: None,
                        reason: "closed by the client".into(),
                    };
                }
            }
            self.set_state(State::Connecting);
            let ws = match self.connect() {
                Ok(ws) => ws,
                Err(End::Retry { reason, .. }) => {
                    tracing::debug!(attempt, %reason, "connect failed");
                    attempt = attempt.saturating_add(1);
                    continue;
                }
                Err(stop) => break stop,
            };
            // A connection that came up starts the schedule over.
            match self.session(ws) {
                End::Retry { code, reason } => {
                    self.emit(Event::Disconnected { code, reason });
                    attempt = 1;
                }
                stop => break stop,
            }
        };
        if let End::Stop { code, reason } = end {
            if let Some(code) = code {
                self.emit(Event::Disconnected {
                    code,
                    reason: reason.clone(),
                });
            }
            self.set_state(State::Closed { code, reason });
        }
    }

    fn set_state(&mut self, state: State) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = state.clone();
        if let Some(cb) = &mut self.on_state {
            cb(&state);
        }
        self.emit(Event::State(state));
    }

    fn emit(&mut self, ev: Event) {
        let Some(tx) = &self.events else { return };
        let mut ev = ev;
        loop {
            // A full channel holds the thread back rather than losing an event, until the
            // caller closes the client: then nobody will read them.
            match tx.send_timeout(ev, Duration::from_millis(50)) {
                Ok(()) => return,
                Err(SendTimeoutError::Timeout(back))
                    if !self.close_asked.load(Ordering::SeqCst) =>
                {
                    ev = back;
                }
                // A caller that dropped its receiver, or closed, no longer wants events.
                Err(_) => {
                    self.events = None;
                    return;
                }
            }
        }
    }

    /// Waits `delay` on the clock, taking commands meanwhile; returns early on close.
    fn wait(&mut self, delay: Duration) {
        let clock = Arc::clone(&self.config.clock);
        let start = clock.now();
        loop {
            let left = delay.saturating_sub(clock.now().saturating_duration_since(start));
            if left.is_zero() {
                return;
            }
            match self.commands.recv_timeout(clock.pass(left)) {
                Ok(cmd) => {
                    self.command(cmd, None);
                    if self.closing {
                        return;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.closing = true;
                    return;
                }
            }
        }
    }

    /// Applies a caller's command; with a connection, sends what it implies.
    fn command(&mut self, cmd: Command, ws: Option<&mut WebSocket<Stream>>) {
        let message = match cmd {
            Command::Add {
                name,
                filters,
                table,
                callback,
            } => {
                // Checked by the handle already; a failure here cannot happen.
                if self.subs.add(&name, filters, table, callback).is_err() {
                    return;
                }
                ws.is_some()
                    .then(|| self.subs.subscribe_message(&name, false))
                    .flatten()
            }
            Command::SetFilters { name, filters } => match self.subs.set_filters(&name, filters) {
                Ok(true) if ws.is_some() => self.subs.subscribe_message(&name, false),
                _ => None,
            },
            Command::Remove { name } => self
                .subs
                .remove(&name)
                .then(|| SubscriptionManager::unsubscribe_message(&name)),
            Command::Send => None,
            Command::Close => {
                self.closing = true;
                None
            }
        };
        if let (Some(ws), Some(text)) = (ws, message) {
            self.send_control(ws, text);
        }
    }

    /// Sends a subscription's message at once: they are few (the server allows 64
    /// subscriptions), and holding one back would hold back its results. It is charged
    /// to the pacing, so the queued requests behind it wait for the server's bucket.
    fn send_control(&mut self, ws: &mut WebSocket<Stream>, text: String) {
        self.pacing.charge(self.config.clock.now());
        // A failed write shows up as a failed read or flush right after.
        let _ = send(ws, text);
    }

    /// Opens a connection and completes the handshake, within the connect timeout.
    fn connect(&mut self) -> Result<WebSocket<Stream>, End> {
        let retry = |reason: String| End::Retry {
            code: ABNORMAL,
            reason,
        };
        let mut request = self
            .config
            .url
            .as_str()
            .into_client_request()
            .map_err(|e| End::Stop {
                code: None,
                reason: format!("url: {e}"),
            })?;
        if let Some(token) = &self.config.token {
            let value =
                HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| End::Stop {
                    code: None,
                    reason: "the token is not a valid header value".into(),
                })?;
            request.headers_mut().insert(header::AUTHORIZATION, value);
        }
        let uri = request.uri();
        let host = uri.host().unwrap_or("127.0.0.1");
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = uri
            .port_u16()
            .unwrap_or(if self.tls.is_some() { 443 } else { 80 });
        let timeout = self.config.connect_timeout;
        let addrs = (host, port)
            .to_socket_addrs()
            .map_err(|e| retry(format!("resolve {host}: {e}")))?;
        let mut last = None;
        let mut stream = None;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, timeout) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = Some(format!("connect {addr}: {e}")),
            }
        }
        let stream = stream.ok_or_else(|| retry(last.unwrap_or_else(|| "no address".into())))?;
        let setup = |s: &TcpStream| -> io::Result<()> {
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(timeout))?;
            s.set_write_timeout(Some(timeout))
        };
        setup(&stream).map_err(|e| retry(format!("socket: {e}")))?;
        let stream = match &self.tls {
            None => Stream::Plain(stream),
            Some(config) => match Stream::tls(Arc::clone(config), host, stream) {
                Ok(tls) => tls,
                Err(TlsFailure::Handshake(why)) => return Err(retry(format!("tls: {why}"))),
                // A certificate the client does not trust, or a host TLS cannot name,
                // stays so: like a refused token, it is for a person to fix.
                Err(TlsFailure::Certificate(why) | TlsFailure::Setup(why)) => {
                    return Err(End::Stop {
                        code: None,
                        reason: format!("tls: {why}"),
                    });
                }
            },
        };
        let ws = match tungstenite::client::client(request, stream) {
            Ok((ws, _)) => ws,
            Err(HandshakeError::Interrupted(_)) => {
                return Err(retry("handshake timed out".into()));
            }
            Err(HandshakeError::Failure(tungstenite::Error::Http(response))) => {
                let status = response.status().as_u16();
                let body = response
                    .body()
                    .as_deref()
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default()
                    .into_owned();
                return Err(refused(status, body));
            }
            Err(HandshakeError::Failure(e)) => return Err(retry(format!("handshake: {e}"))),
        };
        let s = ws.get_ref().tcp();
        s.set_read_timeout(None)
            .and_then(|()| s.set_write_timeout(None))
            .and_then(|()| s.set_nonblocking(true))
            .map_err(|e| retry(format!("socket: {e}")))?;
        Ok(ws)
    }

    /// Runs one connection until it ends.
    fn session(&mut self, mut ws: WebSocket<Stream>) -> End {
        let fd = ws.get_ref().tcp().as_raw_fd();
        if let Err(e) = self.poll.registry().register(
            &mut SourceFd(&fd),
            SOCKET,
            Interest::READABLE | Interest::WRITABLE,
        ) {
            return End::Retry {
                code: ABNORMAL,
                reason: format!("poll: {e}"),
            };
        }
        self.set_state(State::Connected);
        self.pacing.connected(self.config.clock.now());
        let end = self.serve(&mut ws);
        let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
        self.subs.on_disconnect();
        // Unanswered requests go out again, first, on the next connection.
        self.outbox().requeue_in_flight();
        end
    }

    fn serve(&mut self, ws: &mut WebSocket<Stream>) -> End {
        // Changes made while connecting are desired state like any other: fold them in
        // before the subscriptions go out, rather than replaying them one by one.
        while let Ok(cmd) = self.commands.try_recv() {
            self.command(cmd, None);
        }
        for text in self.subs.on_connect() {
            self.send_control(ws, text);
        }
        let clock = Arc::clone(&self.config.clock);
        let dead_after = self
            .config
            .server_ping_interval
            .saturating_add(self.config.liveness_margin);
        let mut heard = clock.now();
        let mut events = Events::with_capacity(16);
        let mut close_code: Option<u16> = None;
        let mut closing_since = None;
        loop {
            // Commands first: the caller's changes reach the wire before more results
            // are read.
            while let Ok(cmd) = self.commands.try_recv() {
                self.command(cmd, Some(ws));
            }
            if self.closing && closing_since.is_none() {
                closing_since = Some(clock.now());
                let _ = ws.close(Some(CloseFrame {
                    code: CloseCode::Normal,
                    reason: "".into(),
                }));
            }
            if !self.closing {
                self.drain_outbox(ws);
            }

            // Read everything there is.
            loop {
                match ws.read() {
                    Ok(msg) => {
                        heard = clock.now();
                        match msg {
                            Message::Text(text) => self.message(text.as_str(), ws),
                            Message::Close(frame) => {
                                close_code = Some(frame.map_or(1005, |f| u16::from(f.code)));
                            }
                            _ => {}
                        }
                    }
                    Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(
                        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed,
                    ) => {
                        return self.ended(close_code);
                    }
                    Err(e) => {
                        // A close frame already said how this ends; an error after it
                        // (a reset while answering it) changes nothing.
                        if self.closing || close_code.is_some() {
                            return self.ended(close_code);
                        }
                        return End::Retry {
                            code: ABNORMAL,
                            reason: e.to_string(),
                        };
                    }
                }
            }
            match ws.flush() {
                Ok(()) => {}
                Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => {}
                Err(tungstenite::Error::ConnectionClosed) => return self.ended(close_code),
                Err(_) if close_code.is_some() => return self.ended(close_code),
                Err(e) => {
                    return End::Retry {
                        code: ABNORMAL,
                        reason: e.to_string(),
                    };
                }
            }

            let now = clock.now();
            if let Some(since) = closing_since {
                // The server had a second to answer our close.
                if now.saturating_duration_since(since) >= Duration::from_secs(1) {
                    return self.ended(close_code);
                }
            }
            let silent = now.saturating_duration_since(heard);
            if silent >= dead_after {
                return End::Retry {
                    code: ABNORMAL,
                    reason: format!("nothing heard for {:.1} s", silent.as_secs_f64()),
                };
            }
            let mut timeout = dead_after - silent;
            if closing_since.is_some() {
                timeout = timeout.min(Duration::from_millis(100));
            }
            // Wake when the next queued request may go out (refusals read just now may
            // have put one back, or pushed it later).
            if let Some(at) = self.next_send().filter(|_| !self.closing) {
                timeout = timeout.min(clock.pass(at.saturating_duration_since(now)));
            }
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != ErrorKind::Interrupted {
                    return End::Retry {
                        code: ABNORMAL,
                        reason: format!("poll: {e}"),
                    };
                }
            }
        }
    }

    /// How a connection that closed ends, by its close code.
    fn ended(&self, code: Option<u16>) -> End {
        if self.closing {
            return End::Stop {
                code: None,
                reason: "closed by the client".into(),
            };
        }
        let code = code.unwrap_or(ABNORMAL);
        let reason = describe(code).to_owned();
        if should_reconnect(code) {
            End::Retry { code, reason }
        } else {
            End::Stop {
                code: Some(code),
                reason,
            }
        }
    }

    fn outbox(&self) -> MutexGuard<'_, Outbox> {
        self.outbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends the queued requests the pacing allows now.
    fn drain_outbox(&mut self, ws: &mut WebSocket<Stream>) {
        let now = self.config.clock.now();
        let mut texts = Vec::new();
        {
            // The field, not `self.outbox()`: the pacing is borrowed beside it.
            let mut outbox = self.outbox.lock().unwrap_or_else(|e| e.into_inner());
            while outbox.is_waiting() && self.pacing.try_send(now) {
                texts.extend(outbox.send_next(self.pacing.round()));
            }
        }
        for text in texts {
            let _ = send(ws, text);
        }
    }

    /// When the next queued request may go out, while any waits.
    fn next_send(&self) -> Option<Instant> {
        self.outbox().is_waiting().then(|| self.pacing.ready_at())
    }
}

/// Queues `text` on the socket; a `WouldBlock` leaves it in tungstenite's buffer, which
/// the loop flushes when the socket is writable again.
fn send(ws: &mut WebSocket<Stream>, text: String) -> Result<(), tungstenite::Error> {
    match ws.write(Message::text(text)) {
        Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => Ok(()),
        other => other,
    }
}

/// A refused upgrade: a wrong token or origin, or a full server, will not change by
/// trying again; anything else might.
fn refused(status: u16, body: String) -> End {
    let body = body.trim();
    let reason = if body.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {body}")
    };
    match status {
        401 => End::Stop {
            code: Some(close::UNAUTHORIZED),
            reason,
        },
        403 | 404 => End::Stop { code: None, reason },
        503 => End::Stop {
            code: Some(close::SERVER_FULL),
            reason,
        },
        _ => End::Retry {
            code: ABNORMAL,
            reason,
        },
    }
}
