//! The table check (`--check-table`): each sampled connection keeps its subscription's
//! table from the first `snapshot` and the results delivered after it
//! ([`crate::table`]). After the window it subscribes a second time, under another
//! name, with the same filters and `"snapshot": true`; when that snapshot comes, every
//! result delivered before it has a `seq` at or below the snapshot's, so the kept table
//! must equal the snapshot's rows exactly, conflation or not.
//!
//! A server that sends no snapshot (the tokio peer) shows it by sending a `result` or a
//! `status` where the first snapshot should be: its tables count as unsupported, not as
//! failures. Only sampled connections parse anything; the others keep the byte-search
//! path of [`crate::msg`].

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::Engine;
use crate::table::{self, Event, Snapshot, Table};

/// The check's settings, made from the subscribe message.
#[derive(Debug, Clone)]
pub struct TableCheckConfig {
    /// Connections that keep a table: the first `sample` to open; 0 for all of them.
    pub sample: usize,
    /// Longest wait, after the window, for the fresh snapshots.
    pub timeout: Duration,
    names: Arc<Names>,
    /// The subscribe a sampled connection sends: the engine's with `"snapshot": true`.
    first_msg: Vec<u8>,
    /// The second subscribe, asking for the fresh snapshot.
    check_msg: Vec<u8>,
}

#[derive(Debug)]
struct Names {
    /// The subscription whose table is kept.
    main: String,
    /// The second subscription's, whose snapshot the table is compared with.
    check: String,
}

impl TableCheckConfig {
    /// The check of a run whose connections send the subscribe message `msg`; the
    /// sampled ones send it with `"snapshot": true` instead.
    pub fn from_subscribe(
        msg: &str,
        sample: usize,
        timeout: Duration,
    ) -> Result<TableCheckConfig, String> {
        let mut first: Value = serde_json::from_str(msg)
            .map_err(|e| format!("--check-table: the subscribe message is not JSON: {e}"))?;
        if first.get("type").and_then(Value::as_str) != Some("subscribe") {
            return Err("--check-table needs a subscribe message".into());
        }
        let data = first
            .as_object_mut()
            .ok_or("--check-table: the subscribe message is not an object")?
            .entry("data")
            .or_insert_with(|| json!({}));
        let data = data
            .as_object_mut()
            .ok_or("--check-table: the subscribe's data is not an object")?;
        if data.contains_key("since") {
            return Err("--check-table needs a snapshot, so a subscribe without `since`".into());
        }
        let main = match data.get("subscription") {
            None => "default".to_string(),
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err("--check-table: `subscription` is not a string".into()),
        };
        data.insert("snapshot".into(), json!(true));
        let check = format!("{main}-table-check");
        let mut second = first.clone();
        second["data"]["subscription"] = json!(check);
        if let Some(o) = second.as_object_mut() {
            o.remove("id");
        }
        Ok(TableCheckConfig {
            sample,
            timeout,
            names: Arc::new(Names { main, check }),
            first_msg: first.to_string().into_bytes(),
            check_msg: second.to_string().into_bytes(),
        })
    }

    /// The subscription whose table is kept.
    pub fn subscription(&self) -> &str {
        &self.names.main
    }

    /// The first subscribe of a sampled connection, as sent.
    pub fn first_message(&self) -> &[u8] {
        &self.first_msg
    }

    /// The second subscribe, as sent.
    pub fn check_message(&self) -> &[u8] {
        &self.check_msg
    }
}

/// The table check's figures, whole run.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TableCheckReport {
    /// Connections that kept a table.
    pub sampled: u64,
    /// Tables compared with a fresh snapshot: `equal` + `different`.
    pub checked: u64,
    pub equal: u64,
    pub different: u64,
    /// Tables of a server that sent no snapshot.
    pub unsupported: u64,
    /// Tables left without a verdict: the connection ended, or no fresh snapshot came
    /// within the timeout.
    pub unanswered: u64,
    /// Tables given up on an unreadable result or snapshot, or an `error` reply.
    pub errors: u64,
    /// Rows of the fresh snapshots compared, summed.
    pub rows: u64,
    /// The first difference or error, for people.
    pub example: Option<String>,
}

impl TableCheckReport {
    /// `fail` (a table differed, or an error), `unsupported` (no snapshot from the
    /// server), `pass` (tables checked, all equal) or `incomplete` (none checked).
    pub fn verdict(&self) -> &'static str {
        if self.different > 0 || self.errors > 0 {
            "fail"
        } else if self.checked > 0 {
            "pass"
        } else if self.unsupported > 0 {
            "unsupported"
        } else {
            "incomplete"
        }
    }
}

/// The report, and the fresh snapshots still awaited.
#[derive(Debug, Default)]
pub(super) struct CheckTally {
    pub(super) report: TableCheckReport,
    pub(super) in_flight: u64,
}

/// Where a connection's table stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The first snapshot is awaited; `subscribed`: the reply to the subscribe came.
    Start { subscribed: bool },
    /// Kept from the snapshot and the results since.
    Live,
    /// The fresh snapshot is asked for.
    Checking,
    /// Verdict given.
    Done,
}

/// How one table ended.
enum Verdict {
    Compared { rows: u64, diff: Option<String> },
    Unsupported,
    Error(String),
    Unanswered,
}

/// One connection's table and where its check stands.
#[derive(Debug)]
pub(super) struct TableCheck {
    names: Arc<Names>,
    state: State,
    table: Table,
    /// `seq` of the last result applied (or of the first snapshot).
    last_seq: u64,
}

/// A table for the next connection to open, if it is in the sample.
pub(super) fn sampled(
    cfg: Option<&TableCheckConfig>,
    t: &mut CheckTally,
) -> Option<Box<TableCheck>> {
    let cfg = cfg?;
    if cfg.sample != 0 && t.report.sampled >= cfg.sample as u64 {
        return None;
    }
    t.report.sampled += 1;
    Some(Box::new(TableCheck {
        names: cfg.names.clone(),
        state: State::Start { subscribed: false },
        table: Table::default(),
        last_seq: 0,
    }))
}

impl TableCheck {
    /// A result arrived. Out of line: only sampled connections come here.
    #[inline(never)]
    pub(super) fn on_result(&mut self, msg: &[u8], t: &mut CheckTally) {
        match self.state {
            State::Start { .. } => self.conclude(Verdict::Unsupported, t),
            State::Live | State::Checking => {
                let data = match table::message_data(msg) {
                    Ok(d) => d,
                    Err(e) => return self.conclude(Verdict::Error(format!("result: {e}")), t),
                };
                match Event::from_data(&data) {
                    Some(ev) => {
                        self.table.apply(&ev, &self.names.main);
                        self.last_seq = ev.seq;
                    }
                    None => {
                        let e = format!("unreadable result: {}", String::from_utf8_lossy(msg));
                        self.conclude(Verdict::Error(e), t);
                    }
                }
            }
            State::Done => {}
        }
    }

    /// Another message arrived, of type `ty`.
    #[inline(never)]
    pub(super) fn on_other(&mut self, ty: &[u8], msg: &[u8], t: &mut CheckTally) {
        match (self.state, ty) {
            (State::Done, _) => {}
            (State::Start { .. }, b"subscribed") => self.state = State::Start { subscribed: true },
            (State::Start { subscribed: true }, b"status") => {
                self.conclude(Verdict::Unsupported, t);
            }
            (State::Start { .. } | State::Checking, b"snapshot") => match Snapshot::parse(msg) {
                Err(e) => self.conclude(Verdict::Error(format!("snapshot: {e}")), t),
                Ok(s) if self.state == State::Checking && s.subscription == self.names.check => {
                    self.compare(&s, t);
                }
                Ok(s) if s.subscription == self.names.main && self.state != State::Checking => {
                    self.table = s.table;
                    self.last_seq = s.seq;
                    self.state = State::Live;
                }
                Ok(_) => {}
            },
            (State::Start { .. } | State::Checking, b"error") => {
                let e = format!("error reply: {}", String::from_utf8_lossy(msg));
                self.conclude(Verdict::Error(e), t);
            }
            _ => {}
        }
    }

    fn compare(&mut self, s: &Snapshot, t: &mut CheckTally) {
        let d = self.table.diff(&s.table);
        let diff = (!d.is_empty()).then(|| {
            format!(
                "table of {} rows (last result seq {}) against a fresh snapshot of {} rows at seq {}: {d}",
                self.table.len(),
                self.last_seq,
                s.table.len(),
                s.seq
            )
        });
        let rows = s.table.len() as u64;
        self.conclude(Verdict::Compared { rows, diff }, t);
    }

    /// No verdict will come: the connection ends, or the run does.
    pub(super) fn abandon(&mut self, t: &mut CheckTally) {
        self.conclude(Verdict::Unanswered, t);
    }

    fn conclude(&mut self, v: Verdict, t: &mut CheckTally) {
        match self.state {
            State::Done => return,
            State::Checking => t.in_flight -= 1,
            _ => {}
        }
        self.state = State::Done;
        self.table = Table::default();
        let r = &mut t.report;
        let mut example = None;
        match v {
            Verdict::Compared { rows, diff } => {
                r.checked += 1;
                r.rows += rows;
                match diff {
                    None => r.equal += 1,
                    Some(d) => {
                        r.different += 1;
                        example = Some(d);
                    }
                }
            }
            Verdict::Unsupported => r.unsupported += 1,
            Verdict::Error(e) => {
                r.errors += 1;
                example = Some(e);
            }
            Verdict::Unanswered => r.unanswered += 1,
        }
        if r.example.is_none() {
            r.example = example;
        }
    }
}

impl Engine {
    /// After the window: every connection whose table is live asks for a fresh snapshot.
    /// False when none did.
    pub(super) fn start_table_check(&mut self) -> bool {
        let Some(msg) = self.cfg.check.as_ref().map(|c| c.check_msg.clone()) else {
            return false;
        };
        let mut asked = false;
        for i in 0..self.conns.len() {
            let Some(client) = self.conns[i].as_mut() else {
                continue;
            };
            let Some(tc) = client.track.table.as_deref_mut() else {
                continue;
            };
            if tc.state != State::Live || !client.conn.is_open() {
                continue;
            }
            client.conn.out().text(&msg);
            tc.state = State::Checking;
            self.c.check.in_flight += 1;
            asked = true;
            self.flush(i);
        }
        asked
    }

    /// Fresh snapshots still awaited.
    pub(super) fn table_checks_in_flight(&self) -> u64 {
        self.c.check.in_flight
    }

    /// The end of the run: every table without a verdict is unanswered.
    pub(super) fn abandon_table_checks(&mut self) {
        for client in self.conns.iter_mut().flatten() {
            if let Some(tc) = client.track.table.as_deref_mut() {
                tc.abandon(&mut self.c.check);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(sample: usize) -> TableCheckConfig {
        let msg = r#"{"type":"subscribe","id":"s1","data":{"subscription":"main","filters":{"scans":["firehose"]}}}"#;
        let cfg = TableCheckConfig::from_subscribe(msg, sample, Duration::from_secs(1)).unwrap();
        let first: Value = serde_json::from_slice(cfg.first_message()).unwrap();
        assert_eq!(first["data"]["snapshot"], json!(true));
        assert_eq!(first["data"]["subscription"], json!("main"));
        assert_eq!(first["id"], json!("s1"));
        cfg
    }

    fn result(seq: u64, event: &str, symbol: &str, price: f64, subs: &[&str]) -> Vec<u8> {
        json!({"type": "result", "timestamp": "2026-11-28T06:23:33Z",
               "data": {"seq": seq, "event": event, "symbol": symbol, "scan": "firehose",
                        "score": 1.0, "price": price, "subscriptions": subs}})
        .to_string()
        .into_bytes()
    }

    fn snapshot(name: &str, seq: u64, rows: &[(&str, f64)]) -> Vec<u8> {
        let rows: Vec<Value> = rows
            .iter()
            .map(|(s, p)| json!({"seq": 1, "event": "new", "symbol": s, "scan": "firehose", "price": p}))
            .collect();
        json!({"type": "snapshot", "data": {"subscription": name, "seq": seq, "results": rows}})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn the_second_subscribe_has_the_same_filters_and_another_name() {
        let c = cfg(0);
        let second: Value = serde_json::from_slice(c.check_message()).unwrap();
        assert_eq!(second["data"]["subscription"], json!("main-table-check"));
        assert_eq!(second["data"]["filters"], json!({"scans": ["firehose"]}));
        assert_eq!(second["data"]["snapshot"], json!(true));
        assert!(second.get("id").is_none());
        let c = TableCheckConfig::from_subscribe(
            r#"{"type":"subscribe","data":{"subscription":"default"}}"#,
            0,
            Duration::ZERO,
        )
        .unwrap();
        assert_eq!(c.subscription(), "default");
        assert!(
            String::from_utf8(c.first_message().to_vec())
                .unwrap()
                .contains(r#""snapshot":true"#)
        );
        for bad in [
            r#"{"type":"ping"}"#,
            r#"{"type":"subscribe","data":{"since":5}}"#,
            "nope",
        ] {
            assert!(TableCheckConfig::from_subscribe(bad, 0, Duration::ZERO).is_err());
        }
    }

    /// Runs a connection's messages through a fresh table check.
    fn run(msgs: &[Vec<u8>], ask_at: usize) -> (CheckTally, TableCheck) {
        let c = cfg(0);
        let mut t = CheckTally::default();
        let mut tc = *sampled(Some(&c), &mut t).unwrap();
        for n in 0..=msgs.len() {
            if n == ask_at {
                assert_eq!(tc.state, State::Live);
                tc.state = State::Checking;
                t.in_flight += 1;
            }
            let Some(m) = msgs.get(n) else { break };
            let ty = match crate::msg::classify(m) {
                crate::msg::Kind::Other(ty) => Some(ty),
                _ => None,
            };
            match ty {
                Some(ty) => tc.on_other(ty, m, &mut t),
                None => tc.on_result(m, &mut t),
            }
        }
        (t, tc)
    }

    fn subscribed() -> Vec<u8> {
        br#"{"type":"subscribed","data":{"seq":10}}"#.to_vec()
    }

    #[test]
    fn a_table_kept_from_its_snapshot_equals_the_fresh_one() {
        let msgs = [
            subscribed(),
            snapshot("main", 10, &[("AAA", 1.0), ("BBB", 2.0)]),
            br#"{"type":"status","data":{}}"#.to_vec(),
            result(11, "clear", "AAA", 1.0, &["main"]),
            result(13, "update", "BBB", 2.5, &["main"]),
            result(14, "new", "CCC", 3.0, &["main"]),
            subscribed(),
            snapshot("main-table-check", 14, &[("BBB", 2.5), ("CCC", 3.0)]),
            // After the verdict nothing counts.
            result(15, "new", "DDD", 3.0, &["main", "main-table-check"]),
        ];
        let (t, tc) = run(&msgs, 6);
        assert_eq!(tc.state, State::Done);
        assert_eq!(t.in_flight, 0);
        let r = &t.report;
        assert_eq!(
            (r.sampled, r.checked, r.equal, r.different, r.rows),
            (1, 1, 1, 0, 2)
        );
        assert_eq!(r.verdict(), "pass");
        assert!(r.example.is_none());
    }

    #[test]
    fn a_missed_clear_is_a_difference() {
        let msgs = [
            subscribed(),
            snapshot("main", 10, &[("AAA", 1.0)]),
            result(12, "update", "BBB", 2.5, &["main"]),
            snapshot("main-table-check", 14, &[("BBB", 2.5), ("CCC", 3.0)]),
        ];
        let (t, _) = run(&msgs, 3);
        let r = &t.report;
        assert_eq!((r.checked, r.equal, r.different), (1, 0, 1));
        assert_eq!(r.verdict(), "fail");
        let ex = r.example.as_deref().unwrap();
        assert!(ex.contains("1 only in the table (AAA/firehose)"), "{ex}");
        assert!(ex.contains("1 only in the snapshot (CCC/firehose)"), "{ex}");
        assert!(ex.contains("last result seq 12"), "{ex}");
    }

    #[test]
    fn a_server_without_snapshots_is_unsupported() {
        let msgs = [subscribed(), result(11, "new", "AAA", 1.0, &["main"])];
        let (t, tc) = run(&msgs, usize::MAX);
        assert_eq!(tc.state, State::Done);
        assert_eq!(t.report.unsupported, 1);
        assert_eq!(t.report.verdict(), "unsupported");
        let (t, _) = run(
            &[subscribed(), br#"{"type":"status"}"#.to_vec()],
            usize::MAX,
        );
        assert_eq!(t.report.unsupported, 1);
    }

    #[test]
    fn errors_and_abandoned_tables() {
        let msgs = [
            subscribed(),
            snapshot("main", 10, &[]),
            br#"{"type":"result","data":{"seq":11}}"#.to_vec(),
        ];
        let (t, _) = run(&msgs, usize::MAX);
        assert_eq!(t.report.errors, 1);
        assert_eq!(t.report.verdict(), "fail");
        assert!(
            t.report
                .example
                .as_deref()
                .unwrap()
                .starts_with("unreadable result")
        );

        let msgs = [
            subscribed(),
            snapshot("main", 10, &[]),
            br#"{"type":"error"}"#.to_vec(),
        ];
        let (mut t, mut tc) = run(&msgs, 2);
        assert_eq!((t.report.errors, t.in_flight), (1, 0));
        tc.abandon(&mut t);
        assert_eq!(t.report.unanswered, 0, "a verdict is given once");

        let (mut t, mut tc) = run(&[subscribed(), snapshot("main", 10, &[])], 2);
        assert_eq!(t.in_flight, 1);
        tc.abandon(&mut t);
        assert_eq!((t.report.unanswered, t.in_flight), (1, 0));
        assert_eq!(t.report.verdict(), "incomplete");
    }

    #[test]
    fn only_the_sample_keeps_a_table() {
        let c = cfg(2);
        let mut t = CheckTally::default();
        let got: Vec<bool> = (0..4)
            .map(|_| sampled(Some(&c), &mut t).is_some())
            .collect();
        assert_eq!(got, [true, true, false, false]);
        assert_eq!(t.report.sampled, 2);
        assert!(sampled(None, &mut t).is_none());
    }
}
