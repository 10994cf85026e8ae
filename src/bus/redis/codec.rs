//! What the Redis bus stores, as bytes and back (sans-IO): stream entries out of `redis`
//! replies, control events and commands as small JSON documents, and requester tags
//! wrapped with the edge process's node id.
//!
//! Results travel as [`ScanEvent::write_wire`](crate::event::ScanEvent::write_wire) bytes; everything else is rare and travels
//! as JSON. Anything read back is checked: a bad entry is an error the bridge counts and
//! skips, never a panic.

use std::sync::Arc;

use redis::Value;
use serde::{Deserialize, Serialize};

use crate::alerts::{Alert, AlertCounters, AlertNote, AlertStats, Change};
use crate::bus::{Command, Event, Tag};
use crate::scanner::{Counters, Phase, RunState, ScannerStatus};

/// One stream entry: its id and its fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// `1234-0`.
    pub id: String,
    /// Field names and values, in order.
    pub fields: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Entry {
    /// The value of field `name`.
    pub fn field(&self, name: &str) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|(k, _)| k == name.as_bytes())
            .map(|(_, v)| v.as_slice())
    }

    /// The `seq` of a results entry (`SEQ-0`).
    pub fn seq(&self) -> Option<u64> {
        self.id.split_once('-')?.0.parse().ok()
    }
}

/// The bytes of a string reply.
pub fn bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

/// A string reply as text.
pub fn text(v: &Value) -> Option<String> {
    bytes(v).and_then(|b| String::from_utf8(b.to_vec()).ok())
}

/// The entries of an `XRANGE` or `XREVRANGE` reply, as they came.
pub fn entries(v: &Value) -> Vec<Entry> {
    let Value::Array(items) = v else {
        return Vec::new();
    };
    items.iter().filter_map(entry).collect()
}

fn entry(v: &Value) -> Option<Entry> {
    let Value::Array(parts) = v else {
        return None;
    };
    let [id, Value::Array(kv)] = parts.as_slice() else {
        return None;
    };
    let fields = kv
        .chunks_exact(2)
        .filter_map(|pair| Some((bytes(&pair[0])?.to_vec(), bytes(&pair[1])?.to_vec())))
        .collect();
    Some(Entry {
        id: text(id)?,
        fields,
    })
}

/// The entries of an `XREAD` or `XREADGROUP` reply, by stream name.
pub fn read_reply(v: &Value) -> Vec<(String, Vec<Entry>)> {
    let streams: Vec<(&Value, &Value)> = match v {
        Value::Array(items) => items
            .iter()
            .filter_map(|item| match item {
                Value::Array(pair) if pair.len() == 2 => Some((&pair[0], &pair[1])),
                _ => None,
            })
            .collect(),
        Value::Map(pairs) => pairs.iter().map(|(k, v)| (k, v)).collect(),
        _ => Vec::new(),
    };
    streams
        .into_iter()
        .filter_map(|(name, list)| Some((text(name)?, entries(list))))
        .collect()
}

/// The field/value pairs of an `HGETALL` reply.
pub fn hash_values(v: &Value) -> Vec<Vec<u8>> {
    match v {
        Value::Array(kv) => kv
            .chunks_exact(2)
            .filter_map(|pair| bytes(&pair[1]).map(<[u8]>::to_vec))
            .collect(),
        Value::Map(pairs) => pairs
            .iter()
            .filter_map(|(_, v)| bytes(v).map(<[u8]>::to_vec))
            .collect(),
        _ => Vec::new(),
    }
}

/// The members of an `SMEMBERS` reply.
pub fn members(v: &Value) -> Vec<Box<str>> {
    match v {
        Value::Array(items) | Value::Set(items) => items
            .iter()
            .filter_map(|m| text(m).map(String::into_boxed_str))
            .collect(),
        _ => Vec::new(),
    }
}

/// Wraps `tag` with the edge process's `node` id, so the answer finds its way back to
/// that process among all the edges reading the stream.
pub fn wrap(node: u64, tag: &Tag) -> Tag {
    let mut bytes = node.to_le_bytes().to_vec();
    bytes.extend_from_slice(&tag.0);
    Tag(bytes.into_boxed_slice())
}

/// The tag `node` wrapped, or `None` when another process asked.
pub fn unwrap(node: u64, tag: &Tag) -> Option<Tag> {
    let (id, inner) = tag.0.split_first_chunk::<8>()?;
    (u64::from_le_bytes(*id) == node).then(|| Tag(inner.into()))
}

fn hex(tag: &Tag) -> String {
    tag.0.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Tag> {
    if s.len() % 2 != 0 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect();
    bytes.map(|b| Tag(b.into_boxed_slice()))
}

/// A control event as the `events` or `alerts` stream carries it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
enum Control {
    Status(StatusWire),
    Symbols {
        names: Vec<String>,
    },
    AdhocDone {
        tag: String,
        symbols: usize,
        results: usize,
    },
    AckDone {
        tag: String,
        alert_id: String,
        alert: Option<String>,
    },
    AlertStats(StatsWire),
    Raised {
        alert: String,
        broadcast: bool,
    },
    Acked {
        alert: String,
    },
}

#[derive(Debug, Serialize, Deserialize)]
struct StatusWire {
    state: RunState,
    cycle: u64,
    scanned: u64,
    total: u64,
    phase: Phase,
    last_cycle_ms: f64,
    results_total: u64,
    adhoc_queue: usize,
    updates: u64,
    evaluated: u64,
    bad_input: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct StatsWire {
    raised: [u64; 3],
    throttled: u64,
    acked: u64,
    journal_errors: u64,
    webhook: Option<[u64; 4]>,
}

/// Which stream an event goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Statuses, symbols, answers, failures.
    Events,
    /// Alerts.
    Alerts,
}

/// The JSON of a control event and the stream it goes to; `None` for results and cuts,
/// which travel otherwise.
pub fn encode_control(event: &Event) -> Option<(Stream, String)> {
    let (stream, control) = match event {
        // A failed producer is not the deployment's end: the lease tells edges it is
        // gone, and the next producer goes on. An edge that took `Failed` would refuse
        // commands for good.
        Event::Result(_) | Event::Cut(_) | Event::Older { .. } | Event::Failed(_) => {
            return None;
        }
        Event::Status(s) => (Stream::Events, Control::Status(status_wire(s))),
        Event::Symbols(names) => (
            Stream::Events,
            Control::Symbols {
                names: names.iter().map(|n| n.to_string()).collect(),
            },
        ),
        Event::AdhocDone {
            requester,
            symbols,
            results,
        } => (
            Stream::Events,
            Control::AdhocDone {
                tag: hex(requester),
                symbols: *symbols,
                results: *results,
            },
        ),
        Event::AckDone {
            requester,
            alert_id,
            alert,
        } => (
            Stream::Events,
            Control::AckDone {
                tag: hex(requester),
                alert_id: alert_id.to_string(),
                alert: alert.as_deref().map(str::to_owned),
            },
        ),
        Event::AlertStats(s) => (
            Stream::Events,
            Control::AlertStats(StatsWire {
                raised: s.counters.raised,
                throttled: s.counters.throttled,
                acked: s.counters.acked,
                journal_errors: s.counters.journal_errors,
                webhook: s.webhook,
            }),
        ),
        Event::Alert(note) => (
            Stream::Alerts,
            match note.change {
                Change::Raised { broadcast } => Control::Raised {
                    alert: note.json.to_string(),
                    broadcast,
                },
                Change::Acked => Control::Acked {
                    alert: note.json.to_string(),
                },
            },
        ),
    };
    Some((stream, serde_json::to_string(&control).ok()?))
}

/// The event a control entry's JSON holds.
pub fn decode_control(json: &[u8]) -> Result<Event, String> {
    let control: Control = serde_json::from_slice(json).map_err(|e| e.to_string())?;
    let bad_tag = || "a tag that is not hex".to_owned();
    Ok(match control {
        Control::Status(w) => Event::Status(status_of(&w)),
        Control::Symbols { names } => Event::Symbols(
            names
                .into_iter()
                .map(String::into_boxed_str)
                .collect::<Vec<_>>()
                .into(),
        ),
        Control::AdhocDone {
            tag,
            symbols,
            results,
        } => Event::AdhocDone {
            requester: unhex(&tag).ok_or_else(bad_tag)?,
            symbols,
            results,
        },
        Control::AckDone {
            tag,
            alert_id,
            alert,
        } => Event::AckDone {
            requester: unhex(&tag).ok_or_else(bad_tag)?,
            alert_id: alert_id.into(),
            alert: alert.map(Arc::from),
        },
        Control::AlertStats(w) => Event::AlertStats(AlertStats {
            counters: AlertCounters {
                raised: w.raised,
                throttled: w.throttled,
                acked: w.acked,
                journal_errors: w.journal_errors,
            },
            webhook: w.webhook,
        }),
        Control::Raised { alert, broadcast } => note(alert, Change::Raised { broadcast })?,
        Control::Acked { alert } => note(alert, Change::Acked)?,
    })
}

fn note(json: String, change: Change) -> Result<Event, String> {
    let alert = Alert::from_json(&json)?;
    Ok(Event::Alert(Arc::new(AlertNote {
        alert,
        json: json.into(),
        change,
    })))
}

fn status_wire(s: &ScannerStatus) -> StatusWire {
    StatusWire {
        state: s.state,
        cycle: s.cycle,
        scanned: s.scanned,
        total: s.total,
        phase: s.phase,
        last_cycle_ms: s.last_cycle_ms,
        results_total: s.results_total,
        adhoc_queue: s.adhoc_queue,
        updates: s.counters.updates,
        evaluated: s.counters.evaluated,
        bad_input: s.counters.bad_input,
    }
}

fn status_of(w: &StatusWire) -> ScannerStatus {
    ScannerStatus {
        state: w.state,
        cycle: w.cycle,
        scanned: w.scanned,
        total: w.total,
        phase: w.phase,
        last_cycle_ms: w.last_cycle_ms,
        results_total: w.results_total,
        adhoc_queue: w.adhoc_queue,
        counters: Counters {
            updates: w.updates,
            evaluated: w.evaluated,
            bad_input: w.bad_input,
        },
    }
}

/// The alert history the alerts stream adds up to: each raised alert as it stands now,
/// oldest first, the newest `keep` of them.
pub fn alert_history(entries: &[Entry], keep: usize) -> Vec<Alert> {
    let mut alerts: Vec<Alert> = Vec::new();
    for entry in entries {
        let Some(Ok(Event::Alert(note))) = entry.field("d").map(decode_control) else {
            continue;
        };
        let AlertNote { alert, change, .. } = &*note;
        match change {
            Change::Raised { .. } => alerts.push(alert.clone()),
            Change::Acked => {
                if let Some(a) = alerts.iter_mut().rev().find(|a| a.id == alert.id) {
                    *a = alert.clone();
                }
            }
        }
    }
    let skip = alerts.len().saturating_sub(keep);
    alerts.split_off(skip)
}

/// A command as JSON.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
enum CommandWire {
    Start,
    Stop,
    Ack { alert_id: String, tag: String },
    Scan { symbols: Vec<String>, tag: String },
}

/// A command's JSON; `None` for one the edge process's bridge answers itself.
pub fn encode_command(cmd: &Command) -> Option<String> {
    let wire = match cmd {
        Command::Older { .. } => return None,
        Command::Start => CommandWire::Start,
        Command::Stop => CommandWire::Stop,
        Command::Ack {
            alert_id,
            requester,
        } => CommandWire::Ack {
            alert_id: alert_id.clone(),
            tag: hex(requester),
        },
        Command::Scan { symbols, requester } => CommandWire::Scan {
            symbols: symbols.clone(),
            tag: hex(requester),
        },
    };
    serde_json::to_string(&wire).ok()
}

/// The command a JSON document holds.
pub fn decode_command(json: &[u8]) -> Result<Command, String> {
    let wire: CommandWire = serde_json::from_slice(json).map_err(|e| e.to_string())?;
    let tag = |t: &str| unhex(t).ok_or_else(|| "a tag that is not hex".to_owned());
    Ok(match wire {
        CommandWire::Start => Command::Start,
        CommandWire::Stop => Command::Stop,
        CommandWire::Ack { alert_id, tag: t } => Command::Ack {
            alert_id,
            requester: tag(&t)?,
        },
        CommandWire::Scan { symbols, tag: t } => Command::Scan {
            symbols,
            requester: tag(&t)?,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_and_tags_come_back_the_same() {
        let tag = Tag(vec![0, 1, 254, 255].into_boxed_slice());
        let wrapped = wrap(7, &tag);
        assert_eq!(unwrap(7, &wrapped), Some(tag.clone()));
        assert_eq!(unwrap(8, &wrapped), None, "another process's answer");
        for cmd in [
            Command::Start,
            Command::Stop,
            Command::Ack {
                alert_id: "a-3".into(),
                requester: wrapped.clone(),
            },
            Command::Scan {
                symbols: vec!["AAPL".into()],
                requester: tag.clone(),
            },
        ] {
            let json = encode_command(&cmd).expect("sent over the bus");
            assert_eq!(decode_command(json.as_bytes()), Ok(cmd));
        }
        assert!(decode_command(br#"{"k":"ack","alert_id":"a-1","tag":"zz"}"#).is_err());
        assert!(decode_command(b"not json").is_err());
    }

    #[test]
    fn control_events_come_back_the_same() {
        let mut status = ScannerStatus::initial();
        status.cycle = 9;
        status.counters.bad_input = 2;
        let tag = Tag(vec![1, 2, 3].into_boxed_slice());
        let events = [
            Event::Status(status),
            Event::AdhocDone {
                requester: tag.clone(),
                symbols: 2,
                results: 5,
            },
            Event::AckDone {
                requester: tag,
                alert_id: "a-1".into(),
                alert: None,
            },
        ];
        for ev in events {
            let (stream, json) = encode_control(&ev).expect("a control event");
            assert_eq!(stream, Stream::Events);
            let back = decode_control(json.as_bytes()).expect("decodes");
            assert_eq!(format!("{back:?}"), format!("{ev:?}"));
        }
        assert!(decode_control(br#"{"k":"raised","alert":"{}","broadcast":true}"#).is_err());
    }

    #[test]
    fn replies_are_read_whatever_their_shape() {
        let entry = |id: &str, v: &str| {
            Value::Array(vec![
                Value::BulkString(id.into()),
                Value::Array(vec![
                    Value::BulkString(b"r".to_vec()),
                    Value::BulkString(v.into()),
                ]),
            ])
        };
        let reply = Value::Array(vec![Value::Array(vec![
            Value::BulkString(b"p:results".to_vec()),
            Value::Array(vec![entry("7-0", "x"), Value::Int(3), entry("8-0", "y")]),
        ])]);
        let read = read_reply(&reply);
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].0, "p:results");
        let seqs: Vec<_> = read[0].1.iter().map(|e| e.seq()).collect();
        assert_eq!(
            seqs,
            vec![Some(7), Some(8)],
            "the malformed item is skipped"
        );
        assert_eq!(read[0].1[1].field("r"), Some(&b"y"[..]));
        assert!(read_reply(&Value::Nil).is_empty());
    }
}
