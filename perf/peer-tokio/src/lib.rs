//! The peer baseline: scanstream's benchmark firehose served the way a Rust user would
//! write it, with tokio, tokio-tungstenite and `tokio::sync::broadcast`.
//!
//! One producer task creates results at a fixed rate, serialises each once with
//! serde_json and sends it on a broadcast channel. Every connection that sent a
//! `subscribe` message forwards each result with `sink.send`. Nothing here is tuned
//! beyond what such a user would plausibly do, because the point is to compare against
//! the ordinary stack, not against a second hand-built server.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::{Bytes, Message, Utf8Bytes};

/// Symbols in the rotation, as in scanstream's firehose.
const SYMBOLS: u64 = 100;

/// What the server runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Results per second; 0 produces nothing.
    pub rate: u32,
    /// Capacity of the broadcast channel: how far a connection may fall behind before it
    /// loses results.
    pub capacity: usize,
    /// The WebSocket path; empty accepts any path.
    pub path: String,
    /// Write queued results with `feed` and one `flush` instead of one `send` each.
    pub batch: bool,
    /// How often each connection is pinged.
    pub ping_interval: Duration,
    /// How often the counters are printed on stderr; `None` never.
    pub report_interval: Option<Duration>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            rate: 1000,
            capacity: 4096,
            path: "/stream".into(),
            batch: false,
            ping_interval: Duration::from_secs(25),
            report_interval: Some(Duration::from_secs(10)),
        }
    }
}

/// Counters shared by every task.
#[derive(Debug, Default)]
pub struct Stats {
    /// TCP connections accepted.
    pub connections: AtomicU64,
    /// Connections open now.
    pub open: AtomicU64,
    /// Connections that subscribed.
    pub subscribed: AtomicU64,
    /// Results created and broadcast.
    pub produced: AtomicU64,
    /// Results lost by lagging receivers, summed over connections.
    pub lagged: AtomicU64,
}

impl Stats {
    /// One line with every counter.
    pub fn summary(&self) -> String {
        format!(
            "connections={} open={} subscribed={} produced={} lagged={}",
            self.connections.load(Ordering::Relaxed),
            self.open.load(Ordering::Relaxed),
            self.subscribed.load(Ordering::Relaxed),
            self.produced.load(Ordering::Relaxed),
            self.lagged.load(Ordering::Relaxed),
        )
    }
}

/// Serves `listener` until `shutdown` completes, then closes every connection and
/// returns the counters.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Arc<Stats> {
    let stats = Arc::new(Stats::default());
    let (tx, _) = broadcast::channel::<Utf8Bytes>(config.capacity.max(1));
    let (stop_tx, stop_rx) = watch::channel(false);
    let config = Arc::new(config);

    let producer = tokio::spawn(produce(tx.clone(), config.rate, stats.clone()));
    let reporter = config
        .report_interval
        .map(|every| tokio::spawn(report(every, stats.clone())));

    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => {
                    stats.connections.fetch_add(1, Ordering::Relaxed);
                    conns.spawn(connection(
                        socket,
                        tx.clone(),
                        config.clone(),
                        stats.clone(),
                        stop_rx.clone(),
                    ));
                }
                Err(e) => {
                    // Usually out of file descriptors: wait rather than spin on the error.
                    eprintln!("peer-tokio: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            // Reap finished connections so the set does not grow with every one seen.
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }

    producer.abort();
    if let Some(r) = reporter {
        r.abort();
    }
    let _ = stop_tx.send(true);
    // Connections send a close frame and end; one stuck behind a client that stopped
    // reading must not hold up the exit.
    let drain = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(2), drain)
        .await
        .is_err()
    {
        conns.abort_all();
    }
    stats
}

/// Prints the counters every `every`.
async fn report(every: Duration, stats: Arc<Stats>) {
    let mut tick = tokio::time::interval_at(Instant::now() + every, every);
    loop {
        tick.tick().await;
        eprintln!("peer-tokio: {}", stats.summary());
    }
}

/// Creates `rate` results per second and broadcasts each, encoded once.
///
/// The schedule counts from the start instant, so the long-run rate is exact whatever
/// the timer's granularity: each tick emits however many results are due by then.
async fn produce(tx: broadcast::Sender<Utf8Bytes>, rate: u32, stats: Arc<Stats>) {
    if rate == 0 {
        return;
    }
    // tokio's timer has millisecond granularity; above 1000/s a tick emits several.
    let period =
        Duration::from_nanos(1_000_000_000 / u64::from(rate)).max(Duration::from_millis(1));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let start = Instant::now();
    let mut emitted: u64 = 0;
    loop {
        tick.tick().await;
        // Measured, not the tick's nominal instant, so a late tick catches up in full.
        let due = start.elapsed().as_nanos() * u128::from(rate) / 1_000_000_000 + 1;
        let due = u64::try_from(due).unwrap_or(u64::MAX);
        while emitted < due {
            let frame = encode_result(emitted, SystemTime::now());
            emitted += 1;
            stats.produced.store(emitted, Ordering::Relaxed);
            // An error only means nobody is subscribed yet; the result is dropped, as
            // scanstream drops results no connection wants.
            let _ = tx.send(frame);
        }
    }
}

/// One connection: handshake, wait for `subscribe`, then forward every result.
async fn connection(
    socket: TcpStream,
    tx: broadcast::Sender<Utf8Bytes>,
    config: Arc<Config>,
    stats: Arc<Stats>,
    mut stop: watch::Receiver<bool>,
) {
    stats.open.fetch_add(1, Ordering::Relaxed);
    // Same transport setting as scanstream: one small frame per result must not wait
    // for the previous one's acknowledgement.
    let _ = socket.set_nodelay(true);
    let path = config.path.clone();
    // The callback's signature is tungstenite's, large error response included.
    #[allow(clippy::result_large_err)]
    let check_path = move |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        if path.is_empty() || req.uri().path() == path {
            Ok(resp)
        } else {
            let mut not_found = ErrorResponse::new(Some("not found".into()));
            *not_found.status_mut() = StatusCode::NOT_FOUND;
            Err(not_found)
        }
    };
    let ws = match tokio_tungstenite::accept_hdr_async(socket, check_path).await {
        Ok(ws) => ws,
        Err(_) => {
            stats.open.fetch_sub(1, Ordering::Relaxed);
            return;
        }
    };
    let (mut sink, mut stream) = ws.split();

    // Until the client subscribes, reading here also answers its pings.
    let subscribe = loop {
        tokio::select! {
            msg = stream.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    if let Some(sub) = parse_subscribe(&text) {
                        break Some(sub);
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break None,
                Some(Ok(_)) => {}
            },
            _ = stop.changed() => break None,
        }
    };
    let Some(subscribe) = subscribe else {
        let _ = sink.close().await;
        stats.open.fetch_sub(1, Ordering::Relaxed);
        return;
    };
    // Subscribe to the channel before replying so no result after `seq` is missed.
    let mut rx = tx.subscribe();
    stats.subscribed.fetch_add(1, Ordering::Relaxed);
    let reply = encode_subscribed(&subscribe, stats.produced.load(Ordering::Relaxed));
    if sink.send(Message::Text(reply.into())).await.is_err() {
        stats.open.fetch_sub(1, Ordering::Relaxed);
        return;
    }

    // The read half keeps running so pings are answered and a close is noticed.
    let (gone_tx, mut gone) = watch::channel(false);
    let reader = tokio::spawn(async move {
        while let Some(Ok(msg)) = stream.next().await {
            if msg.is_close() {
                break;
            }
        }
        let _ = gone_tx.send(true);
    });

    let every = config.ping_interval;
    let mut ping = tokio::time::interval_at(Instant::now() + every, every);
    let mut lagged_here: u64 = 0;
    loop {
        tokio::select! {
            received = rx.recv() => match received {
                Ok(frame) => {
                    let sent = if config.batch && !rx.is_empty() {
                        send_batch(&mut sink, &mut rx, frame, &stats, &mut lagged_here).await
                    } else {
                        sink.send(Message::Text(frame)).await
                    };
                    if sent.is_err() {
                        break;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    // The client loses `n` results; log the first time and carry on.
                    if lagged_here == 0 {
                        eprintln!("peer-tokio: a connection lagged and lost {n} results");
                    }
                    lagged_here += n;
                    stats.lagged.fetch_add(n, Ordering::Relaxed);
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
            _ = ping.tick() => {
                if sink.send(Message::Ping(Bytes::new())).await.is_err() {
                    break;
                }
            }
            _ = gone.changed() => break,
            _ = stop.changed() => {
                let _ = sink.close().await;
                break;
            }
        }
    }
    reader.abort();
    stats.open.fetch_sub(1, Ordering::Relaxed);
}

/// Writes `first` and whatever else is already queued, then flushes once.
async fn send_batch<S>(
    sink: &mut S,
    rx: &mut broadcast::Receiver<Utf8Bytes>,
    first: Utf8Bytes,
    stats: &Stats,
    lagged_here: &mut u64,
) -> Result<(), S::Error>
where
    S: futures_util::Sink<Message> + Unpin,
{
    // Bounded, so one flush never waits on an unbounded backlog.
    const MAX_BATCH: usize = 64;
    sink.feed(Message::Text(first)).await?;
    for _ in 1..MAX_BATCH {
        match rx.try_recv() {
            Ok(frame) => sink.feed(Message::Text(frame)).await?,
            Err(broadcast::error::TryRecvError::Lagged(n)) => {
                *lagged_here += n;
                stats.lagged.fetch_add(n, Ordering::Relaxed);
            }
            Err(_) => break,
        }
    }
    sink.flush().await
}

/// What a `subscribe` message asked for.
#[derive(Debug)]
struct Subscribe {
    subscription: String,
    id: Option<serde_json::Value>,
}

/// `Some` when `text` is a `subscribe` message.
fn parse_subscribe(text: &str) -> Option<Subscribe> {
    let mut v: serde_json::Value = serde_json::from_str(text).ok()?;
    if v.get("type")?.as_str()? != "subscribe" {
        return None;
    }
    let subscription = v
        .pointer("/data/subscription")
        .and_then(|s| s.as_str())
        .unwrap_or("default")
        .to_owned();
    let id = v.get_mut("id").map(serde_json::Value::take);
    Some(Subscribe { subscription, id })
}

/// `{"type":"subscribed",…}`, shaped like scanstream's reply.
fn encode_subscribed(sub: &Subscribe, seq: u64) -> String {
    #[derive(Serialize)]
    struct Data<'a> {
        subscription: &'a str,
        epoch: &'static str,
        seq: u64,
        recovered: bool,
        replayed: u64,
    }
    #[derive(Serialize)]
    struct Reply<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a serde_json::Value>,
        timestamp: String,
        data: Data<'a>,
    }
    let reply = Reply {
        kind: "subscribed",
        id: sub.id.as_ref(),
        timestamp: rfc3339(SystemTime::now()),
        data: Data {
            subscription: &sub.subscription,
            epoch: "peer",
            seq,
            recovered: true,
            replayed: 0,
        },
    };
    serde_json::to_string(&reply).unwrap_or_default()
}

/// A `result` message, with the fields in scanstream's order.
#[derive(Serialize)]
struct ResultMessage<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    timestamp: &'a str,
    data: ResultData<'a>,
}

#[derive(Serialize)]
struct ResultData<'a> {
    seq: u64,
    event: &'static str,
    symbol: &'a str,
    scan: &'static str,
    score: f64,
    price: f64,
    change_pct: f64,
    volume: u64,
    volume_ratio: f64,
    rsi: f64,
    source_ts: &'a str,
    adhoc: bool,
    subscriptions: [&'static str; 1],
}

/// Result number `index` (from 0; its `seq` is `index + 1`), created at `at`.
///
/// Symbol, event and values follow scanstream's firehose exactly, so the frames are the
/// same size.
pub fn encode_result(index: u64, at: SystemTime) -> Utf8Bytes {
    let symbol = ticker(index % SYMBOLS);
    let event = match (index / SYMBOLS) % 3 {
        0 => "new",
        1 => "update",
        _ => "clear",
    };
    let r = mix(index);
    let unit = |shift: u32| ((r >> shift) & 0xffff) as f64 / 65_535.0;
    let timestamp = rfc3339(at);
    let message = ResultMessage {
        kind: "result",
        timestamp: &timestamp,
        data: ResultData {
            seq: index + 1,
            event,
            symbol: &symbol,
            scan: "firehose",
            score: round2(unit(0) * 10.0),
            price: round2(10.0 + unit(16) * 490.0),
            change_pct: round2(unit(32) * 20.0 - 10.0),
            volume: 1_000 + (r >> 48) * 100,
            volume_ratio: round2(0.5 + unit(8) * 9.5),
            rsi: round2(unit(24) * 100.0),
            source_ts: &timestamp,
            adhoc: false,
            subscriptions: ["default"],
        },
    };
    // Plain numbers, strings and bools always serialise.
    Utf8Bytes::from(serde_json::to_string(&message).unwrap_or_default())
}

/// The `i`-th three-letter name of scanstream's rotation (`i` below 26³).
fn ticker(i: u64) -> String {
    const SPACE: u64 = 26 * 26 * 26;
    // 7919 is coprime with 26³, so the names are distinct.
    let mut n = (i % SPACE) * 7919 % SPACE;
    let mut name = [b'A'; 3];
    for c in name.iter_mut().rev() {
        *c = b'A' + (n % 26) as u8;
        n /= 26;
    }
    String::from_utf8_lossy(&name).into_owned()
}

/// SplitMix64, as scanstream's firehose uses for its values.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// `2026-11-28T09:30:00.123456789Z`: UTC with nine fractional digits, fixed width like
/// scanstream's timestamps.
pub fn rfc3339(at: SystemTime) -> String {
    const FORMAT: &[BorrowedFormatItem<'static>] =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:9]Z");
    let nanos = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    OffsetDateTime::from_unix_timestamp_nanos(nanos as i128)
        .ok()
        .and_then(|t| t.format(FORMAT).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00.000000000Z".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_have_nine_digits() {
        let at = SystemTime::UNIX_EPOCH + Duration::new(1_795_847_013, 842_294_182);
        assert_eq!(rfc3339(at), "2026-11-28T06:23:33.842294182Z");
        let whole = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_847_013);
        assert_eq!(rfc3339(whole), "2026-11-28T06:23:33.000000000Z");
    }

    #[test]
    fn rotation_has_100_distinct_names() {
        let names: std::collections::HashSet<String> = (0..SYMBOLS).map(ticker).collect();
        assert_eq!(names.len(), 100);
        assert!(names.iter().all(|n| n.len() == 3));
    }

    #[test]
    fn subscribe_is_recognised() {
        let s = parse_subscribe(r#"{"type":"subscribe","id":7,"data":{"subscription":"main"}}"#)
            .expect("subscribe");
        assert_eq!(s.subscription, "main");
        assert_eq!(s.id, Some(serde_json::json!(7)));
        assert!(parse_subscribe(r#"{"type":"ping"}"#).is_none());
        assert!(parse_subscribe("not json").is_none());
        let reply = encode_subscribed(&s, 5);
        assert!(reply.starts_with(r#"{"type":"subscribed","id":7,"timestamp":""#));
        assert!(reply.ends_with(r#""data":{"subscription":"main","epoch":"peer","seq":5,"recovered":true,"replayed":0}}"#));
    }
}
