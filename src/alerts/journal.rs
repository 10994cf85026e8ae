//! The alert journal: one JSON line per alert and per acknowledgment, appended as they
//! happen and read back at start, so ids continue and nothing acknowledged comes back
//! unacknowledged. Past a size it is rewritten from the history (compacted).
//!
//! Appends are plain `write` calls from the reactor thread: alerts are throttled, so they
//! are rare, and a line in the page cache survives a crash of the process. A torn last
//! line (the process died mid-write) is reported, skipped and cut off before appending.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::{Alert, AlertLog, AlertWire, parse_id};
use crate::timefmt::{parse_time, rfc3339};

/// The journal's file name in the data directory.
pub const FILE: &str = "alerts.jsonl";

/// One line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum Line {
    Alert(AlertWire),
    Ack { alert_id: String, at: String },
}

/// What a journal held at start.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The newest alerts, oldest first, acknowledgments applied.
    pub alerts: Vec<Alert>,
    /// The id the next alert takes.
    pub next_id: u64,
    /// The last line was cut short by a crash.
    pub torn: bool,
    /// Lines that could not be read (reported with their numbers).
    pub bad_lines: u64,
}

/// An open journal.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
    size: u64,
    max_bytes: u64,
    /// Size past which the next compaction runs: at least `max_bytes`, and at least
    /// twice what the last compaction left, so a history larger than `max_bytes` is not
    /// rewritten on every check.
    threshold: u64,
}

impl Journal {
    /// Opens (or creates) the journal in `dir`, reads it back keeping the newest
    /// `capacity` alerts, and leaves it ready for appends.
    pub fn open(dir: &Path, capacity: usize, max_bytes: u64) -> io::Result<(Journal, Loaded)> {
        fs::create_dir_all(dir)?;
        let path = dir.join(FILE);
        let mut log = AlertLog::new(capacity);
        let mut loaded = Loaded {
            next_id: 1,
            ..Loaded::default()
        };
        let mut good_bytes = 0u64;
        if let Ok(file) = File::open(&path) {
            let mut reader = BufReader::new(file);
            let mut line = Vec::new();
            let mut number = 0u64;
            loop {
                line.clear();
                let n = reader.read_until(b'\n', &mut line)?;
                if n == 0 {
                    break;
                }
                number += 1;
                if line.last() != Some(&b'\n') {
                    // The process died in the middle of this write.
                    loaded.torn = true;
                    tracing::warn!(path = %path.display(), line = number, "alert journal: torn last line skipped");
                    break;
                }
                good_bytes += n as u64;
                match parse(&line) {
                    Ok(Line::Alert(w)) => match Alert::from_wire(w) {
                        // Ids ascend through the journal; the log's lookups rely on it.
                        Ok(alert) if alert.id < loaded.next_id || alert.id == u64::MAX => {
                            bad(&path, number, "alert id out of order", &mut loaded);
                        }
                        Ok(alert) => {
                            loaded.next_id = alert.id + 1;
                            log.push(alert);
                        }
                        Err(e) => bad(&path, number, &e, &mut loaded),
                    },
                    Ok(Line::Ack { alert_id, at }) => {
                        match (parse_id(&alert_id), parse_time(&at)) {
                            (Some(id), Some(at)) => {
                                log.ack(id, at);
                            }
                            _ => bad(&path, number, "bad ack", &mut loaded),
                        }
                    }
                    Err(e) => bad(&path, number, &e, &mut loaded),
                }
            }
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        if loaded.torn {
            // Appends must start on a line of their own.
            file.set_len(good_bytes)?;
        }
        let max_bytes = max_bytes.max(4096);
        let mut journal = Journal {
            size: good_bytes,
            path,
            file,
            max_bytes,
            threshold: max_bytes,
        };
        if loaded.bad_lines > 0 || journal.size > journal.threshold {
            journal.compact(&log)?;
        }
        loaded.alerts = log.iter().cloned().collect();
        Ok((journal, loaded))
    }

    /// Appends an alert.
    pub fn append_alert(&mut self, alert: &Alert) -> io::Result<()> {
        self.append(&Line::Alert(alert.wire_form()))
    }

    /// Appends an acknowledgment.
    pub fn append_ack(&mut self, id: u64, at: SystemTime) -> io::Result<()> {
        self.append(&Line::Ack {
            alert_id: format!("a-{id}"),
            at: rfc3339(at),
        })
    }

    fn append(&mut self, line: &Line) -> io::Result<()> {
        let mut buf = serde_json::to_vec(line)?;
        buf.push(b'\n');
        // One write per line, so a crash tears at most the last one.
        self.file.write_all(&buf)?;
        self.size += buf.len() as u64;
        Ok(())
    }

    /// Rewrites the journal from `log` when it has grown past its limit.
    pub fn compact_if_due(&mut self, log: &AlertLog) -> io::Result<()> {
        if self.size > self.threshold {
            self.compact(log)?;
        }
        Ok(())
    }

    /// Rewrites the journal as the alerts in `log` (acknowledgments folded in), through a
    /// temporary file and a rename, so a crash leaves the old or the new file whole.
    pub fn compact(&mut self, log: &AlertLog) -> io::Result<()> {
        let tmp = self.path.with_extension("jsonl.tmp");
        let mut out = io::BufWriter::new(File::create(&tmp)?);
        let mut size = 0u64;
        let next = log.last_id();
        for alert in log.iter() {
            let mut buf = serde_json::to_vec(&Line::Alert(alert.wire_form()))?;
            buf.push(b'\n');
            size += buf.len() as u64;
            out.write_all(&buf)?;
        }
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        fs::rename(&tmp, &self.path)?;
        self.file = OpenOptions::new().append(true).open(&self.path)?;
        self.size = size;
        self.threshold = self.max_bytes.max(size.saturating_mul(2));
        tracing::info!(alerts = log.len(), bytes = size, last_id = ?next, "alert journal compacted");
        Ok(())
    }

    /// The journal's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }
}

fn parse(line: &[u8]) -> Result<Line, String> {
    serde_json::from_slice(line).map_err(|e| e.to_string())
}

fn bad(path: &Path, number: u64, why: &str, loaded: &mut Loaded) {
    loaded.bad_lines += 1;
    tracing::warn!(path = %path.display(), line = number, reason = why, "alert journal: unreadable line skipped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::{Kind, Severity};
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    fn dir() -> PathBuf {
        static N: AtomicU32 = AtomicU32::new(0);
        let d = std::env::temp_dir().join(format!(
            "scanstream-journal-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn alert(id: u64) -> Alert {
        Alert {
            id,
            rule: "movers".into(),
            kind: Kind::PriceChange,
            severity: Severity::Warning,
            symbol: "TSLA".into(),
            scan: "price_change".into(),
            message: "TSLA change_pct 7.9 >= 5".into(),
            result_seq: id * 10,
            created: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + id),
            acked_at: None,
        }
    }

    #[test]
    fn alerts_and_acks_come_back_and_ids_continue() {
        let d = dir();
        let (mut j, loaded) = Journal::open(&d, 100, 1 << 20).unwrap();
        assert_eq!((loaded.alerts.len(), loaded.next_id), (0, 1));
        for id in 1..=3 {
            j.append_alert(&alert(id)).unwrap();
        }
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_100);
        j.append_ack(2, at).unwrap();
        drop(j);
        let (_, loaded) = Journal::open(&d, 100, 1 << 20).unwrap();
        assert_eq!(loaded.next_id, 4);
        assert!(!loaded.torn);
        let acked: Vec<Option<SystemTime>> = loaded.alerts.iter().map(|a| a.acked_at).collect();
        assert_eq!(acked, [None, Some(at), None]);
        assert_eq!(loaded.alerts[0], alert(1));
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_torn_last_line_is_skipped_and_cut_off() {
        let d = dir();
        let (mut j, _) = Journal::open(&d, 100, 1 << 20).unwrap();
        j.append_alert(&alert(1)).unwrap();
        drop(j);
        let path = d.join(FILE);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"op":"alert","alert_id":"a-2","ru"#)
            .unwrap();
        drop(f);
        let (mut j, loaded) = Journal::open(&d, 100, 1 << 20).unwrap();
        assert!(loaded.torn);
        assert_eq!((loaded.alerts.len(), loaded.next_id), (1, 2));
        // The next append starts on a line of its own.
        j.append_alert(&alert(2)).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2);
        for line in text.lines() {
            serde_json::from_str::<serde_json::Value>(line).unwrap();
        }
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_bad_line_in_the_middle_is_counted_and_compacted_away() {
        let d = dir();
        fs::create_dir_all(&d).unwrap();
        let (mut j, _) = Journal::open(&d, 100, 1 << 20).unwrap();
        j.append_alert(&alert(1)).unwrap();
        j.file.write_all(b"not json\n").unwrap();
        j.append_alert(&alert(2)).unwrap();
        drop(j);
        let (_, loaded) = Journal::open(&d, 100, 1 << 20).unwrap();
        assert_eq!(loaded.bad_lines, 1);
        assert_eq!(loaded.alerts.len(), 2);
        let text = fs::read_to_string(d.join(FILE)).unwrap();
        assert!(!text.contains("not json"));
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn compaction_keeps_the_newest_alerts_with_their_acks() {
        let d = dir();
        let (mut j, _) = Journal::open(&d, 2, 4096).unwrap();
        let mut log = AlertLog::new(2);
        for id in 1..=40 {
            j.append_alert(&alert(id)).unwrap();
            log.push(alert(id));
        }
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_900_000_000);
        log.ack(40, at);
        j.append_ack(40, at).unwrap();
        assert!(j.size() > 4096);
        j.compact_if_due(&log).unwrap();
        assert!(j.size() < 4096);
        drop(j);
        let (_, loaded) = Journal::open(&d, 2, 4096).unwrap();
        let ids: Vec<u64> = loaded.alerts.iter().map(|a| a.id).collect();
        assert_eq!(ids, [39, 40]);
        assert_eq!(loaded.alerts[1].acked_at, Some(at));
        assert_eq!(loaded.next_id, 41);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_history_larger_than_the_limit_is_not_rewritten_on_every_check() {
        use std::os::unix::fs::MetadataExt;
        let d = dir();
        let (mut j, _) = Journal::open(&d, 100, 4096).unwrap();
        let mut log = AlertLog::new(100);
        for id in 1..=100 {
            j.append_alert(&alert(id)).unwrap();
            log.push(alert(id));
        }
        j.compact_if_due(&log).unwrap();
        let inode = fs::metadata(d.join(FILE)).unwrap().ino();
        assert!(j.size() > 4096, "the history alone is past the limit");
        j.compact_if_due(&log).unwrap();
        assert_eq!(
            fs::metadata(d.join(FILE)).unwrap().ino(),
            inode,
            "not rewritten again"
        );
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn ids_out_of_order_or_at_the_end_of_the_range_are_bad_lines() {
        let d = dir();
        let (mut j, _) = Journal::open(&d, 100, 1 << 20).unwrap();
        j.append_alert(&alert(5)).unwrap();
        j.append_alert(&alert(3)).unwrap();
        let mut last = alert(7);
        last.id = u64::MAX;
        j.append_alert(&last).unwrap();
        drop(j);
        let (_, loaded) = Journal::open(&d, 100, 1 << 20).unwrap();
        assert_eq!(loaded.bad_lines, 2);
        assert_eq!((loaded.alerts.len(), loaded.next_id), (1, 6));
        fs::remove_dir_all(&d).unwrap();
    }
}
