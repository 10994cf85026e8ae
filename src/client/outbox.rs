//! The requests (scans, acks) a client owes the server: waiting to be sent, or sent and
//! not yet answered. Both count against one capacity, so a caller cannot pile up more
//! than it by sending faster than the server answers. Sans-IO: it hands out the text to
//! send and never writes it.

use std::collections::VecDeque;

use serde_json::{Value, json};

/// A request waiting to be sent, or sent and not yet answered.
#[derive(Debug, Clone)]
pub(super) struct Request {
    pub id: u64,
    pub kind: &'static str,
    pub data: Value,
    /// The pacing round it was last sent in ([`super::pacing::Pacing::round`]).
    pub round: u32,
}

impl Request {
    fn message(&self) -> String {
        json!({"type": self.kind, "id": self.id, "data": self.data}).to_string()
    }
}

/// Requests in order, bounded: `queue` waits to be sent, `in_flight` waits for answers.
#[derive(Debug)]
pub(super) struct Outbox {
    queue: VecDeque<Request>,
    in_flight: Vec<Request>,
    capacity: usize,
}

impl Outbox {
    pub fn new(capacity: usize) -> Outbox {
        Outbox {
            queue: VecDeque::new(),
            in_flight: Vec::new(),
            capacity,
        }
    }

    /// The most requests it holds, sent or not.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Takes a request, or gives it back when the outbox is full.
    pub fn push(&mut self, req: Request) -> Result<(), Request> {
        if self.queue.len() + self.in_flight.len() >= self.capacity {
            return Err(req);
        }
        self.queue.push_back(req);
        Ok(())
    }

    /// Requests wait to be sent.
    pub fn is_waiting(&self) -> bool {
        !self.queue.is_empty()
    }

    /// Moves the next waiting request in flight, stamped with `round`; its text to send.
    pub fn send_next(&mut self, round: u32) -> Option<String> {
        let mut req = self.queue.pop_front()?;
        req.round = round;
        let text = req.message();
        self.in_flight.push(req);
        Some(text)
    }

    /// The request in flight that `id` answers, no longer in flight.
    pub fn answered(&mut self, id: u64) -> Option<Request> {
        let at = self.in_flight.iter().position(|r| r.id == id)?;
        Some(self.in_flight.remove(at))
    }

    /// Puts a refused request back to be sent again: ahead of everything never sent, and
    /// behind requests refused before it (the server answers in order, and ids grow in
    /// the order requests are taken).
    pub fn retry(&mut self, req: Request) {
        let at = self
            .queue
            .iter()
            .position(|r| r.id > req.id)
            .unwrap_or(self.queue.len());
        self.queue.insert(at, req);
    }

    /// The connection dropped: what was in flight goes out again, in order with what was
    /// refused, ahead of everything never sent.
    pub fn requeue_in_flight(&mut self) {
        for req in std::mem::take(&mut self.in_flight) {
            self.retry(req);
        }
    }

    #[cfg(test)]
    fn ids(&self) -> (Vec<u64>, Vec<u64>) {
        (
            self.queue.iter().map(|r| r.id).collect(),
            self.in_flight.iter().map(|r| r.id).collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(id: u64) -> Request {
        Request {
            id,
            kind: "ack",
            data: json!({"alert_id": format!("a-{id}")}),
            round: 0,
        }
    }

    #[test]
    fn waiting_and_in_flight_share_the_capacity() {
        let mut o = Outbox::new(3);
        for id in 1..=3 {
            assert!(o.push(req(id)).is_ok());
        }
        assert_eq!(o.push(req(4)).map_err(|r| r.id), Err(4));
        // Sent but unanswered still counts.
        let text = o.send_next(7).unwrap();
        let sent: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            (sent["type"].as_str(), sent["id"].as_u64()),
            (Some("ack"), Some(1))
        );
        assert!(o.push(req(4)).is_err());
        // An answer frees its place.
        assert_eq!(o.answered(1).map(|r| (r.id, r.round)), Some((1, 7)));
        assert!(o.answered(1).is_none());
        assert!(o.push(req(4)).is_ok());
        assert_eq!(o.ids(), (vec![2, 3, 4], vec![]));
    }

    #[test]
    fn refused_requests_go_back_in_order_ahead_of_the_unsent() {
        let mut o = Outbox::new(10);
        for id in 1..=6 {
            o.push(req(id)).unwrap();
        }
        for _ in 0..4 {
            o.send_next(0);
        }
        assert_eq!(o.ids(), (vec![5, 6], vec![1, 2, 3, 4]));
        o.answered(1);
        // 2 and 3 refused, in the order the server answers.
        for id in [2, 3] {
            let r = o.answered(id).unwrap();
            o.retry(r);
        }
        assert_eq!(o.ids(), (vec![2, 3, 5, 6], vec![4]));
        // The connection drops: 4 goes out again, after 2 and 3, before 5 and 6.
        o.requeue_in_flight();
        assert_eq!(o.ids(), (vec![2, 3, 4, 5, 6], vec![]));
    }
}
