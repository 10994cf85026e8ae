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
use serde_json::Value;
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::HandshakeError;
use tungstenite::http::{HeaderValue, header};
use tungstenite::protocol::frame::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

use super::message::{Envelope, ErrorData, Event, ResultMessage, SnapshotData, State, Subscribed};
use super::outbox::Outbox;
use super::pacing::Pacing;
use super::subs::{Callback, SubscriptionManager};
use super::table::TableHandle;
use super::{ClientConfig, StateCallback};
use crate::protocol::FilterSpec;
use crate::protocol::close;

pub(super) const WAKER: Token = Token(0);
const SOCKET: Token = Token(1);

/// Close code for a connection that ended without a close frame (RFC 6455 7.1.5).
pub const ABNORMAL: u16 = 1006;

/// Whether a connection that ended with `code` should be opened again.
///
/// PROTOCOL.md: 1001 (server going away), 1006 (no close frame: a network fault) and
/// 4000-4499 reconnect; 4500-4999 do not. Beyond it: the server-side failures RFC 6455
/// registers as passing (1011 internal error, 1012 restart, 1013 try again later, 1014
/// bad gateway) reconnect; a normal close (1000) and the codes that say this client broke
/// the protocol (1002, 1003, 1007, 1008, 1009, 1010) do not, since coming back would only
/// repeat the mistake. Codes no one has defined reconnect, so a server that grows new
/// codes does not strand its clients.
pub fn should_reconnect(code: u16) -> bool {
    !matches!(code, 1000 | 1002 | 1003 | 1007..=1010 | 4500..=4999)
}

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
    fn command(&mut self, cmd: Command, ws: Option<&mut WebSocket<TcpStream>>) {
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
    fn send_control(&mut self, ws: &mut WebSocket<TcpStream>, text: String) {
        self.pacing.charge(self.config.clock.now());
        // A failed write shows up as a failed read or flush right after.
        let _ = send(ws, text);
    }

    /// Opens a connection and completes the handshake, within the connect timeout.
    fn connect(&mut self) -> Result<WebSocket<TcpStream>, End> {
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
        let port = uri.port_u16().unwrap_or(80);
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
        let s = ws.get_ref();
        s.set_read_timeout(None)
            .and_then(|()| s.set_write_timeout(None))
            .and_then(|()| s.set_nonblocking(true))
            .map_err(|e| retry(format!("socket: {e}")))?;
        Ok(ws)
    }

    /// Runs one connection until it ends.
    fn session(&mut self, mut ws: WebSocket<TcpStream>) -> End {
        let fd = ws.get_ref().as_raw_fd();
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

    fn serve(&mut self, ws: &mut WebSocket<TcpStream>) -> End {
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
    fn drain_outbox(&mut self, ws: &mut WebSocket<TcpStream>) {
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

    /// One text message from the server.
    fn message(&mut self, text: &str, ws: &mut WebSocket<TcpStream>) {
        let env: Envelope = match serde_json::from_str(text) {
            Ok(env) => env,
            Err(e) => {
                tracing::warn!(error = %e, "unreadable message from the server");
                return;
            }
        };
        let request = env.id.as_ref().and_then(Value::as_u64);
        let answered = request.and_then(|id| self.outbox().answered(id));
        if env.kind == "error" && env.data["code"] == "rate_limited" {
            // Not the request's answer: the server's bucket was empty. The request goes
            // back to the front of the queue, and sends wait out a hold. A refused
            // subscription is the subscription manager's to report, below.
            let now = self.config.clock.now();
            match answered {
                Some(req) => {
                    tracing::debug!(id = req.id, "rate_limited; sent again after a hold");
                    self.pacing.refused(req.round, now);
                    self.outbox().retry(req);
                    return;
                }
                None => self.pacing.refused(self.pacing.round(), now),
            }
        } else if answered.is_some() {
            self.pacing.answered();
        }
        let sub_request = env.id.as_ref().and_then(Value::as_str);
        match env.kind.as_str() {
            "result" => match serde_json::from_value::<ResultMessage>(env.data) {
                Ok(mut r) => {
                    r.timestamp = env.timestamp.unwrap_or_default();
                    if let Some(ev) = self.subs.on_result(r) {
                        self.emit(ev);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "unreadable result"),
            },
            "subscribed" => match serde_json::from_value::<Subscribed>(env.data) {
                Ok(s) => {
                    let (events, send_now) = self.subs.on_subscribed(s, sub_request);
                    for ev in events {
                        self.emit(ev);
                    }
                    if let Some(text) = send_now {
                        self.send_control(ws, text);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "unreadable subscribed"),
            },
            "snapshot" => match serde_json::from_value::<SnapshotData>(env.data) {
                Ok(s) => {
                    if let Some(ev) = self.subs.on_snapshot(&s.subscription, s.seq, s.results) {
                        self.emit(ev);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "unreadable snapshot"),
            },
            "error" => {
                let data: ErrorData = serde_json::from_value(env.data).unwrap_or(ErrorData {
                    code: "unknown".into(),
                    message: String::new(),
                });
                let subscription = sub_request.and_then(|id| self.subs.request_subscription(id));
                let ev = Event::Error {
                    code: data.code,
                    message: data.message,
                    id: request,
                    subscription: subscription.clone(),
                };
                if let Some(name) = &subscription {
                    self.subs.notify(name, &ev);
                }
                self.emit(ev);
            }
            _ if request.is_some() => {
                let ev = Event::Reply {
                    id: request.unwrap_or_default(),
                    kind: env.kind,
                    data: env.data,
                };
                self.emit(ev);
            }
            "unsubscribed" => {
                let subscription = env.data["subscription"].as_str().unwrap_or_default();
                self.emit(Event::Unsubscribed {
                    subscription: subscription.to_owned(),
                });
            }
            "status" => self.emit(Event::Status(env.data)),
            "alert" => self.emit(Event::Alert(env.data)),
            "acked" => self.emit(Event::Acked(env.data)),
            _ => {}
        }
    }
}

/// Queues `text` on the socket; a `WouldBlock` leaves it in tungstenite's buffer, which
/// the loop flushes when the socket is writable again.
fn send(ws: &mut WebSocket<TcpStream>, text: String) -> Result<(), tungstenite::Error> {
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

/// Words for the close codes PROTOCOL.md and RFC 6455 define.
pub fn describe(code: u16) -> &'static str {
    match code {
        1000 => "normal close",
        1001 => "server going away",
        1002 => "protocol error",
        1003 => "unsupported data",
        1005 => "closed without a code",
        1006 => "connection lost",
        1007 => "invalid payload",
        1009 => "message too big",
        1011 => "server error",
        1012 => "server restarting",
        1013 => "try again later",
        close::SLOW_CONSUMER => "slow consumer",
        close::RATE_LIMIT => "rate limited",
        close::UNAUTHORIZED => "unauthorized",
        close::SERVER_FULL => "server full",
        4000..=4007 | 4009..=4028 | 4030..=4499 => "server asked to reconnect",
        4501 | 4502 | 4504..=4999 => "server asked not to reconnect",
        _ => "closed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes_decide_reconnects() {
        for code in [1001, 1006, 1011, 1012, 1013, 4000, 4008, 4029, 4499] {
            assert!(should_reconnect(code), "{code}");
        }
        for code in [1000, 1002, 1003, 1007, 1008, 1009, 1010, 4500, 4503, 4999] {
            assert!(!should_reconnect(code), "{code}");
        }
    }
}
