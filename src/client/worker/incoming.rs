//! What the server sends, routed: results and snapshots to the subscription manager,
//! replies to the requests waiting for them, the rest to the caller as events.

use serde_json::Value;
use tungstenite::WebSocket;

use super::Worker;
use super::stream::Stream;
use crate::client::message::{Envelope, ErrorData, Event, ResultMessage, SnapshotData, Subscribed};

impl Worker {
    /// One text message from the server.
    pub(super) fn message(&mut self, text: &str, ws: &mut WebSocket<Stream>) {
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
