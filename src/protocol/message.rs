//! Client-to-server messages: one JSON object per text frame, checked field by field so
//! that every mistake gets the error code PROTOCOL.md gives it.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::ErrorCode;
use super::filter::{Filter, FilterError, MAX_SYMBOL_LEN};

/// Longest subscription name or alert id accepted, in bytes.
const MAX_NAME_LEN: usize = 128;

/// A parsed client message and the `id` to echo on every reply.
#[derive(Debug)]
pub struct Request {
    /// The client's request id (a string or a number), echoed on replies.
    pub id: Option<Value>,
    /// What the client asked for.
    pub message: ClientMessage,
}

/// Everything a client may send.
#[derive(Debug)]
pub enum ClientMessage {
    /// Add or replace a subscription (boxed: the filter makes it the largest by far).
    Subscribe(Box<Subscribe>),
    /// Drop a subscription.
    Unsubscribe {
        /// Its name.
        subscription: String,
    },
    /// Application-level ping; answered with `pong`.
    Ping,
    /// Ad-hoc scan of these symbols.
    Scan {
        /// Symbols to scan now.
        symbols: Vec<String>,
    },
    /// Acknowledge an alert.
    Ack {
        /// Which alert.
        alert_id: String,
    },
}

/// A checked `subscribe` request.
#[derive(Debug, Clone)]
pub struct Subscribe {
    /// Subscription name, `"default"` unless given.
    pub subscription: String,
    /// What it matches.
    pub filter: Filter,
    /// Send a `snapshot` of the active set right after `subscribed`.
    pub snapshot: bool,
    /// Resume after this result sequence number.
    pub since: Option<u64>,
    /// The run `since` belongs to.
    pub epoch: Option<String>,
}

/// A refused message: the `error` reply to send.
#[derive(Debug, PartialEq)]
pub struct Rejection {
    /// Error code.
    pub code: ErrorCode,
    /// Human-readable reason.
    pub message: String,
    /// The request's id when it could be read.
    pub id: Option<Value>,
}

#[derive(Deserialize)]
struct SubscribeData {
    #[serde(default = "default_subscription")]
    subscription: String,
    #[serde(default)]
    filters: Option<Value>,
    #[serde(default)]
    snapshot: bool,
    #[serde(default)]
    since: Option<u64>,
    #[serde(default)]
    epoch: Option<String>,
}

#[derive(Deserialize)]
struct UnsubscribeData {
    #[serde(default = "default_subscription")]
    subscription: String,
}

#[derive(Deserialize)]
struct ScanData {
    symbols: Vec<String>,
}

#[derive(Deserialize)]
struct AckData {
    alert_id: String,
}

fn default_subscription() -> String {
    "default".to_owned()
}

/// Parses one client text message. `max_symbols` bounds filter and scan symbol lists.
pub fn parse_request(text: &str, max_symbols: usize) -> Result<Request, Rejection> {
    let mut object: Map<String, Value> = match serde_json::from_str(text) {
        Ok(Value::Object(map)) => map,
        Ok(_) => {
            return Err(reject(
                ErrorCode::BadJson,
                "message is not a JSON object",
                None,
            ));
        }
        Err(e) => return Err(reject(ErrorCode::BadJson, &format!("not JSON: {e}"), None)),
    };
    let id = match object.remove("id") {
        None | Some(Value::Null) => None,
        Some(id @ (Value::String(_) | Value::Number(_))) => Some(id),
        Some(_) => {
            return Err(reject(
                ErrorCode::BadRequest,
                "id must be a string or a number",
                None,
            ));
        }
    };
    let fail = |code, msg: &str| reject(code, msg, id.clone());
    let ty = match object.remove("type") {
        Some(Value::String(ty)) => ty,
        Some(_) => return Err(fail(ErrorCode::BadRequest, "type must be a string")),
        None => return Err(fail(ErrorCode::BadRequest, "missing field `type`")),
    };
    let data = object.remove("data").filter(|d| !d.is_null());
    let message = match ty.as_str() {
        "subscribe" => {
            let d: SubscribeData =
                data_of(data, &ty).map_err(|m| fail(ErrorCode::BadRequest, &m))?;
            check_name("subscription", &d.subscription)
                .map_err(|m| fail(ErrorCode::BadRequest, &m))?;
            let filter = Filter::from_json(d.filters, max_symbols).map_err(|e| match e {
                FilterError::Invalid(m) => fail(ErrorCode::BadFilter, &m),
                e @ FilterError::TooManySymbols { .. } => {
                    fail(ErrorCode::LimitExceeded, &e.to_string())
                }
            })?;
            ClientMessage::Subscribe(Box::new(Subscribe {
                subscription: d.subscription,
                filter,
                snapshot: d.snapshot,
                since: d.since,
                epoch: d.epoch,
            }))
        }
        "unsubscribe" => {
            let d: UnsubscribeData =
                data_of(data, &ty).map_err(|m| fail(ErrorCode::BadRequest, &m))?;
            ClientMessage::Unsubscribe {
                subscription: d.subscription,
            }
        }
        "ping" => ClientMessage::Ping,
        "scan" => {
            let d: ScanData = data_of(data, &ty).map_err(|m| fail(ErrorCode::BadRequest, &m))?;
            check_symbols(&d.symbols, max_symbols).map_err(|(code, m)| fail(code, &m))?;
            ClientMessage::Scan { symbols: d.symbols }
        }
        "ack" => {
            let d: AckData = data_of(data, &ty).map_err(|m| fail(ErrorCode::BadRequest, &m))?;
            check_name("alert_id", &d.alert_id).map_err(|m| fail(ErrorCode::BadRequest, &m))?;
            ClientMessage::Ack {
                alert_id: d.alert_id,
            }
        }
        other => {
            let shown: String = other.chars().take(64).collect();
            return Err(fail(
                ErrorCode::UnknownType,
                &format!("unknown message type `{shown}`"),
            ));
        }
    };
    Ok(Request { id, message })
}

/// The `id` of a message refused before it is parsed (past the rate limit), so the client
/// can tell which request to send again. Reads only `id`; anything else is skipped.
pub fn peek_id(text: &str) -> Option<Value> {
    #[derive(Deserialize)]
    struct IdOnly {
        #[serde(default)]
        id: Option<Value>,
    }
    // Serde would also read a struct from an array; only an object has an `id`.
    if !text.trim_start().starts_with('{') {
        return None;
    }
    match serde_json::from_str::<IdOnly>(text).ok()?.id? {
        id @ (Value::String(_) | Value::Number(_)) => Some(id),
        _ => None,
    }
}

/// Checks the symbol list of a scan request (WebSocket `scan` or `POST /scan`).
pub fn check_symbols(symbols: &[String], max: usize) -> Result<(), (ErrorCode, String)> {
    if symbols.is_empty() {
        return Err((ErrorCode::BadRequest, "symbols: empty list".into()));
    }
    if symbols.len() > max {
        let msg = format!(
            "{} symbols in one request, the limit is {max}",
            symbols.len()
        );
        return Err((ErrorCode::LimitExceeded, msg));
    }
    if symbols
        .iter()
        .any(|s| s.is_empty() || s.len() > MAX_SYMBOL_LEN)
    {
        let msg = format!("symbols: every symbol must be 1 to {MAX_SYMBOL_LEN} bytes");
        return Err((ErrorCode::BadRequest, msg));
    }
    Ok(())
}

fn data_of<T: DeserializeOwned>(data: Option<Value>, ty: &str) -> Result<T, String> {
    // A message without `data` is the same as one with `{}`: every field has its default.
    let data = data.unwrap_or_else(|| Value::Object(Map::new()));
    serde_json::from_value(data).map_err(|e| format!("{ty}: data: {e}"))
}

fn check_name(field: &str, value: &str) -> Result<(), String> {
    if value.is_empty() || value.len() > MAX_NAME_LEN {
        return Err(format!("{field} must be 1 to {MAX_NAME_LEN} bytes"));
    }
    Ok(())
}

fn reject(code: ErrorCode, message: &str, id: Option<Value>) -> Rejection {
    Rejection {
        code,
        message: message.to_owned(),
        id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code_of(text: &str) -> ErrorCode {
        parse_request(text, 4).unwrap_err().code
    }

    #[test]
    fn peek_id_reads_only_a_usable_id() {
        let cases = [
            (r#"{"type":"ping","id":"r1"}"#, Some(Value::from("r1"))),
            (r#"{"id":7,"data":{"x":[1,2]}}"#, Some(Value::from(7))),
            (r#"{"type":"ping"}"#, None),
            (r#"{"id":{"nested":1}}"#, None),
            (r#"{"id":null}"#, None),
            ("[1]", None),
            ("not json", None),
        ];
        for (text, want) in cases {
            assert_eq!(peek_id(text), want, "{text}");
        }
    }

    #[test]
    fn error_codes_table() {
        let cases = [
            ("not json", ErrorCode::BadJson),
            ("[1,2]", ErrorCode::BadJson),
            ("\"subscribe\"", ErrorCode::BadJson),
            ("{}", ErrorCode::BadRequest),
            (r#"{"type": 5}"#, ErrorCode::BadRequest),
            (
                r#"{"type": "subscribe", "id": {"a": 1}}"#,
                ErrorCode::BadRequest,
            ),
            (r#"{"type": "dance"}"#, ErrorCode::UnknownType),
            (
                r#"{"type": "subscribe", "data": {"since": "x"}}"#,
                ErrorCode::BadRequest,
            ),
            (
                r#"{"type": "subscribe", "data": {"subscription": ""}}"#,
                ErrorCode::BadRequest,
            ),
            (
                r#"{"type": "subscribe", "data": {"filters": {"x": 1}}}"#,
                ErrorCode::BadFilter,
            ),
            (
                r#"{"type": "subscribe", "data": {"filters": {"symbols": ["A","B","C","D","E"]}}}"#,
                ErrorCode::LimitExceeded,
            ),
            (r#"{"type": "scan"}"#, ErrorCode::BadRequest),
            (
                r#"{"type": "scan", "data": {"symbols": []}}"#,
                ErrorCode::BadRequest,
            ),
            (
                r#"{"type": "ack", "data": {"alert_id": 17}}"#,
                ErrorCode::BadRequest,
            ),
        ];
        for (text, want) in cases {
            assert_eq!(code_of(text), want, "{text}");
        }
    }

    #[test]
    fn id_is_echoed_on_rejection() {
        let err = parse_request(r#"{"type":"dance","id":"r9"}"#, 4).unwrap_err();
        assert_eq!(err.id, Some(Value::from("r9")));
    }

    #[test]
    fn subscribe_defaults_and_fields() {
        let req = parse_request(r#"{"type":"subscribe","id":3}"#, 4).unwrap();
        assert_eq!(req.id, Some(Value::from(3)));
        let ClientMessage::Subscribe(s) = req.message else {
            panic!("not subscribe")
        };
        assert_eq!(s.subscription, "default");
        assert!(!s.snapshot && s.since.is_none() && s.epoch.is_none());

        let text = r#"{"type":"subscribe","data":{"subscription":"main","snapshot":true,
            "since":12,"epoch":"e1","filters":{"scans":["new_high"]}}}"#;
        let ClientMessage::Subscribe(s) = parse_request(text, 4).unwrap().message else {
            panic!("not subscribe")
        };
        assert_eq!((s.subscription.as_str(), s.snapshot), ("main", true));
        assert_eq!((s.since, s.epoch.as_deref()), (Some(12), Some("e1")));
    }

    #[test]
    fn other_types_parse() {
        let ping = parse_request(r#"{"type":"ping"}"#, 4).unwrap();
        assert!(matches!(ping.message, ClientMessage::Ping));
        let scan = parse_request(r#"{"type":"scan","data":{"symbols":["A"]}}"#, 4).unwrap();
        assert!(matches!(scan.message, ClientMessage::Scan { symbols } if symbols == ["A"]));
        let ack = parse_request(r#"{"type":"ack","data":{"alert_id":"a-1"}}"#, 4).unwrap();
        assert!(matches!(ack.message, ClientMessage::Ack { alert_id } if alert_id == "a-1"));
        let un = parse_request(r#"{"type":"unsubscribe","data":{"subscription":"m"}}"#, 4);
        assert!(
            matches!(un.unwrap().message, ClientMessage::Unsubscribe { subscription } if subscription == "m")
        );
    }
}
