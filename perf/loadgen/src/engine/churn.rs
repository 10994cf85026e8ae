//! Churn mode: each slot connects, subscribes, leaves once `subscribed` arrives and starts
//! over. [`churn_step`] holds a slot's transitions apart from sockets, so that they are
//! tested alone; the `Engine` methods here carry them out. A slot that failed starts
//! again only at the next tick, so a refusing server cannot make the slots spin.

use std::time::{Duration, Instant};

use super::{Churn, Engine};
use crate::conn::{End, Phase};

/// What wakes a churn slot.
#[derive(Debug)]
pub(super) enum SlotEvent<'a> {
    /// Its socket was read (or written); `end` when the connection ended.
    Read(Option<&'a End>),
    /// The periodic check: how long the cycle and the close have been going on.
    Tick {
        cycle_age: Duration,
        closing_age: Duration,
    },
}

/// What a churn slot does next.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Step {
    Wait,
    /// `subscribed` arrived: count the cycle and send our close frame.
    Leave,
    /// The connection is over: count a cycle if `subscribed` came with its end, drop the
    /// socket (with a reset when the server has not closed it, so no TIME_WAIT stays
    /// here), then start again; after an error only at the next tick, so that a refusing
    /// server does not make the slots spin.
    Finish {
        cycle: bool,
        error: Option<String>,
        reset: bool,
    },
}

/// A churn slot's transitions, apart from sockets so that they can be tested alone.
/// Connect and handshake failures other than timeouts take the connect-failure path.
pub(super) fn churn_step(state: Phase, subscribed: bool, ev: SlotEvent<'_>, churn: &Churn) -> Step {
    let finish = |cycle, error: Option<String>, reset| Step::Finish {
        cycle,
        error,
        reset,
    };
    match ev {
        SlotEvent::Read(None) if state == Phase::Open && subscribed => Step::Leave,
        SlotEvent::Read(None) => Step::Wait,
        SlotEvent::Read(Some(end)) => {
            // Only an EOF or a reset means the server has closed its side.
            let reset = !matches!(end, End::Abrupt);
            match (state, end) {
                // Answered close frames are consumed by the read loop; EOF ends the cycle.
                (Phase::Closing { .. }, End::CloseFrame(_)) => Step::Wait,
                (Phase::Closing { .. }, End::Abrupt) => finish(false, None, false),
                (_, End::Protocol(e)) => finish(
                    state == Phase::Open && subscribed,
                    Some(e.to_string()),
                    reset,
                ),
                (Phase::Open, _) if subscribed => finish(true, None, reset),
                (_, End::CloseFrame(code)) => finish(
                    false,
                    Some(format!(
                        "closed by the server ({}) before subscribed",
                        code.unwrap_or(1005)
                    )),
                    reset,
                ),
                (_, End::Abrupt) => finish(
                    false,
                    Some("connection ended before subscribed".into()),
                    reset,
                ),
            }
        }
        SlotEvent::Tick {
            cycle_age,
            closing_age,
        } => match state {
            Phase::Closing { .. } if closing_age > churn.close_wait => finish(
                false,
                Some(format!(
                    "server did not close within {:?} of our close",
                    churn.close_wait
                )),
                true,
            ),
            Phase::Closing { .. } => Step::Wait,
            _ if cycle_age <= churn.cycle_timeout => Step::Wait,
            Phase::Connecting => finish(false, Some("connect timed out".into()), true),
            Phase::Handshaking => finish(false, Some("handshake timed out".into()), true),
            Phase::Open => finish(
                false,
                Some(format!(
                    "no subscribed within {:?} of connect",
                    churn.cycle_timeout
                )),
                true,
            ),
        },
    }
}

impl Engine {
    pub(super) fn churn_error(&mut self, why: String) {
        *self.c.churn_errors.entry(why).or_default() += 1;
        if self.in_window {
            self.c.churn_errors_in_window += 1;
        }
    }

    /// Restarts the slots that failed, and ends the cycles and closes that took too long.
    pub(super) fn churn_tick(&mut self, now: Instant) {
        let Some(churn) = self.cfg.churn else { return };
        for i in std::mem::take(&mut self.restart) {
            if self.conns[i].is_none() {
                self.open(i);
            }
        }
        for i in 0..self.conns.len() {
            let Some(client) = self.conns[i].as_ref() else {
                continue;
            };
            let phase = client.conn.phase();
            let ev = SlotEvent::Tick {
                cycle_age: now.saturating_duration_since(client.conn.opened()),
                closing_age: match phase {
                    Phase::Closing { since, .. } => now.saturating_duration_since(since),
                    _ => Duration::ZERO,
                },
            };
            match churn_step(phase, client.track.subscribed, ev, &churn) {
                Step::Finish {
                    error: Some(why), ..
                } if matches!(phase, Phase::Connecting | Phase::Handshaking) => {
                    let client = self.conns[i].take();
                    self.fail(i, client, &why);
                }
                step @ Step::Finish { .. } => self.churn_finish(i, step),
                Step::Wait | Step::Leave => {}
            }
        }
    }

    /// After a read of a churn slot: records how it ended, if it did, and moves it on.
    /// Returns true when the socket may hold more to read.
    pub(super) fn churn_after_read(&mut self, i: usize, end: Option<End>, more: bool) -> bool {
        let Some(churn) = self.cfg.churn else {
            return false;
        };
        let Some(client) = self.conns[i].as_ref() else {
            return false;
        };
        let (phase, subscribed) = (client.conn.phase(), client.track.subscribed);
        match &end {
            Some(End::CloseFrame(code)) => {
                *self.c.close_codes.entry(code.unwrap_or(1005)).or_default() += 1;
            }
            // After the server's close frame, its EOF is the expected end, not a 1006.
            Some(End::Abrupt) if !matches!(phase, Phase::Closing { answered: true, .. }) => {
                *self.c.close_codes.entry(1006).or_default() += 1;
            }
            Some(End::Protocol(e)) => {
                self.c.protocol_errors += 1;
                self.c.last_protocol_error = Some(e.to_string());
            }
            _ => {}
        }
        if end.is_some() && phase == Phase::Open {
            self.c.disconnects += 1;
        }
        match churn_step(phase, subscribed, SlotEvent::Read(end.as_ref()), &churn) {
            Step::Wait => more,
            Step::Leave => {
                let opened = client.conn.opened();
                self.count_cycle(opened);
                if churn.reset {
                    if let Some(mut client) = self.conns[i].take() {
                        client.conn.out().close(1000);
                        let _ = client.conn.flush();
                        client.conn.close(self.poll.registry(), true);
                    }
                    self.open(i);
                    return false;
                }
                if let Some(client) = self.conns[i].as_mut() {
                    let _ = client.conn.start_close(Instant::now());
                }
                // Results may still precede the server's close frame; keep reading.
                true
            }
            step @ Step::Finish { .. } => {
                self.churn_finish(i, step);
                false
            }
        }
    }

    fn count_cycle(&mut self, opened: Instant) {
        self.c.cycles_total += 1;
        if self.in_window {
            self.c.cycles += 1;
            self.c.cycle_hist.record(opened.elapsed().as_nanos() as u64);
        }
    }

    fn churn_finish(&mut self, i: usize, step: Step) {
        let Step::Finish {
            cycle,
            error,
            reset,
        } = step
        else {
            return;
        };
        let Some(client) = self.conns[i].take() else {
            return;
        };
        if cycle {
            self.count_cycle(client.conn.opened());
        }
        if matches!(client.conn.phase(), Phase::Connecting | Phase::Handshaking) {
            self.pending -= 1;
        }
        client.conn.close(self.poll.registry(), reset);
        match error {
            Some(why) => {
                self.churn_error(why);
                self.restart.push(i);
            }
            None => self.open(i),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{self, Read, Write};
    use std::net::{SocketAddr, TcpListener};

    use crate::engine::Config;
    use crate::ws::{self, WsError};

    fn text(payload: &[u8], fin: bool, opcode: u8) -> Vec<u8> {
        ws::server_frame(opcode, payload, fin)
    }

    fn closing() -> Phase {
        Phase::Closing {
            since: Instant::now(),
            answered: false,
        }
    }

    const CHURN: Churn = Churn {
        cycle_timeout: Duration::from_secs(5),
        close_wait: Duration::from_secs(1),
        reset: false,
    };

    fn finish(cycle: bool, error: bool, reset: bool) -> impl Fn(Step) -> bool {
        move |s| matches!(s, Step::Finish { cycle: c, error: e, reset: r } if c == cycle && e.is_some() == error && r == reset)
    }

    #[test]
    fn churn_slot_transitions() {
        let read = |state, subscribed, end: Option<End>| {
            churn_step(state, subscribed, SlotEvent::Read(end.as_ref()), &CHURN)
        };
        // Waiting for `subscribed`, then leaving once it is there.
        assert_eq!(read(Phase::Open, false, None), Step::Wait);
        assert_eq!(read(Phase::Open, true, None), Step::Leave);
        // Closing: the server's close frame is not the end, its EOF is, and then no reset.
        assert_eq!(
            read(closing(), true, Some(End::CloseFrame(Some(1000)))),
            Step::Wait
        );
        assert!(finish(false, false, false)(read(
            closing(),
            true,
            Some(End::Abrupt)
        )));
        // Ended before `subscribed`: an error; reset unless the server already closed.
        assert!(finish(false, true, false)(read(
            Phase::Open,
            false,
            Some(End::Abrupt)
        )));
        assert!(finish(false, true, true)(read(
            Phase::Open,
            false,
            Some(End::CloseFrame(Some(1001)))
        )));
        // `subscribed` and the server's close in one read: the cycle still counts.
        assert!(finish(true, false, true)(read(
            Phase::Open,
            true,
            Some(End::CloseFrame(None))
        )));
        assert!(finish(true, true, true)(read(
            Phase::Open,
            true,
            Some(End::Protocol(WsError::Protocol("x")))
        )));

        let tick = |state, cycle_ms, closing_ms| {
            churn_step(
                state,
                false,
                SlotEvent::Tick {
                    cycle_age: Duration::from_millis(cycle_ms),
                    closing_age: Duration::from_millis(closing_ms),
                },
                &CHURN,
            )
        };
        for state in [Phase::Connecting, Phase::Handshaking, Phase::Open] {
            assert_eq!(tick(state, 4_999, 9_999), Step::Wait);
            assert!(finish(false, true, true)(tick(state, 5_001, 0)));
        }
        assert_eq!(tick(closing(), 9_999, 999), Step::Wait);
        assert!(finish(false, true, true)(tick(closing(), 0, 1_001)));
    }

    /// A server that does one connection at a time: handshake, `subscribed` for the
    /// subscribe, close for close, then closes its side first. Stops after `life`.
    fn churn_server(life: Duration) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        l.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            let until = Instant::now() + life;
            while Instant::now() < until {
                let Ok((mut s, _)) = l.accept() else {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                };
                let _ = s.set_nonblocking(false);
                let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                let _ = (|| -> io::Result<()> {
                    ws::answer_upgrade(&mut s)?;
                    assert_eq!(ws::read_client_frame(&mut s)?.0, ws::OP_TEXT);
                    s.write_all(&text(br#"{"type":"subscribed","data":{}}"#, true, 1))?;
                    assert_eq!(ws::read_client_frame(&mut s)?.0, ws::OP_CLOSE);
                    s.write_all(&text(&1000u16.to_be_bytes(), true, 8))?;
                    s.shutdown(std::net::Shutdown::Write)?;
                    let _ = s.read(&mut [0u8; 1])?;
                    Ok(())
                })();
            }
        });
        addr
    }

    #[test]
    fn churn_cycles_against_a_server_that_closes_first() {
        let addr = churn_server(Duration::from_secs(2));
        let cfg = Config {
            addr,
            tls: None,
            host: addr.to_string(),
            path: "/stream".into(),
            clients: 2,
            ramp: 1000.0,
            subscribe: Some(b"{}".to_vec()),
            warmup: Duration::ZERO,
            duration: Duration::from_millis(400),
            connect_timeout: Duration::from_secs(1),
            server_pid: None,
            max_frame: 1 << 20,
            churn: Some(CHURN),
            check: None,
        };
        let r = Engine::new(cfg).unwrap().run(false).unwrap();
        let c = r.churn.unwrap();
        assert!(c.cycles > 10, "only {} cycles", c.cycles);
        assert!(c.errors.is_empty(), "{:?}", c.errors);
        // The run may end between a client's close and the server's answer to it: at most
        // one cycle per client is counted without its close code.
        let closes = r.close_codes.get(&1000).copied().unwrap_or(0);
        assert!(
            (c.cycles_total.saturating_sub(2)..=c.cycles_total).contains(&closes),
            "{closes} closes for {} cycles",
            c.cycles_total
        );
        assert_eq!(r.connect_failures, 0);
    }
}
