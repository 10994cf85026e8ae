//! The wire protocol of PROTOCOL.md as plain data: client messages, filters, error and
//! close codes, and the JSON envelope of server messages.
//!
//! Sans-IO: everything here works on byte buffers and values. It knows nothing of sockets,
//! frames or the reactor, so the client library and fuzzers can use it as it is.

mod filter;
mod message;

use std::time::SystemTime;

use serde::Serialize;
use serde_json::Value;

pub use filter::{Filter, FilterError, FilterSpec, MAX_SYMBOL_LEN};
pub use message::{
    ClientMessage, Rejection, Request, Subscribe, check_symbols, parse_request, peek_id,
};

use crate::timefmt::write_rfc3339;

/// The `code` of an `error` message (and of HTTP error bodies where it applies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// Not JSON, or not a JSON object.
    BadJson,
    /// A field is missing or has the wrong type.
    BadRequest,
    /// `type` names no message this server knows.
    UnknownType,
    /// The filters are invalid; the subscription was not changed.
    BadFilter,
    /// The named subscription, alert or path does not exist.
    NotFound,
    /// The ad-hoc scan queue is full; try again later.
    QueueFull,
    /// Missing or wrong token.
    Unauthorized,
    /// Over the per-connection message rate.
    RateLimited,
    /// Over a per-connection subscription or symbol limit; nothing changed.
    LimitExceeded,
    /// Unsent data passed the per-connection cap; the connection is closed with 4008.
    SlowConsumer,
    /// The scanner has failed: requests to it cannot be served (HTTP 503).
    Unavailable,
    /// HTTP: the path takes another method (405, with `Allow`).
    MethodNotAllowed,
    /// HTTP: the body is over the limit (413).
    PayloadTooLarge,
    /// HTTP: the request head is over the limit (431).
    HeadersTooLarge,
    /// HTTP: `/stream` without a WebSocket upgrade (426).
    UpgradeRequired,
    /// HTTP: the request head did not arrive in time (408).
    RequestTimeout,
    /// HTTP: the connection limit is reached (503).
    ServerFull,
    /// HTTP: the origin or host is not allowed (403).
    Forbidden,
    /// HTTP: `/healthz` once the scanner has failed (503).
    Degraded,
}

impl ErrorCode {
    /// Every code sent in a WebSocket `error`, for metrics.
    pub const ALL: [ErrorCode; 11] = [
        ErrorCode::BadJson,
        ErrorCode::BadRequest,
        ErrorCode::UnknownType,
        ErrorCode::BadFilter,
        ErrorCode::NotFound,
        ErrorCode::QueueFull,
        ErrorCode::Unauthorized,
        ErrorCode::RateLimited,
        ErrorCode::LimitExceeded,
        ErrorCode::SlowConsumer,
        ErrorCode::Unavailable,
    ];

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad_json",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::BadFilter => "bad_filter",
            ErrorCode::NotFound => "not_found",
            ErrorCode::QueueFull => "queue_full",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::LimitExceeded => "limit_exceeded",
            ErrorCode::SlowConsumer => "slow_consumer",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::HeadersTooLarge => "headers_too_large",
            ErrorCode::UpgradeRequired => "upgrade_required",
            ErrorCode::RequestTimeout => "request_timeout",
            ErrorCode::ServerFull => "server_full",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Degraded => "degraded",
        }
    }

    /// The HTTP status a refusal with this code gets (PROTOCOL.md, "HTTP endpoints").
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadJson
            | ErrorCode::BadRequest
            | ErrorCode::UnknownType
            | ErrorCode::BadFilter
            | ErrorCode::LimitExceeded => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::RequestTimeout => 408,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::UpgradeRequired => 426,
            ErrorCode::RateLimited => 429,
            ErrorCode::HeadersTooLarge => 431,
            ErrorCode::QueueFull
            | ErrorCode::SlowConsumer
            | ErrorCode::Unavailable
            | ErrorCode::ServerFull
            | ErrorCode::Degraded => 503,
        }
    }
}

/// WebSocket close codes. 4000-4499 mean "reconnect", 4500-4999 "do not".
pub mod close {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// The server is shutting down: reconnect with jitter.
    pub const GOING_AWAY: u16 = 1001;
    /// RFC 6455 protocol violation.
    pub const PROTOCOL: u16 = 1002;
    /// A binary message, which this protocol does not take.
    pub const UNSUPPORTED_DATA: u16 = 1003;
    /// A text message that is not UTF-8.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// A message over the inbound limit.
    pub const TOO_BIG: u16 = 1009;
    /// The connection did not keep up; resume with `since`.
    pub const SLOW_CONSUMER: u16 = 4008;
    /// The connection kept sending past its message rate.
    pub const RATE_LIMIT: u16 = 4029;
    /// No reconnect: the token is wrong.
    pub const UNAUTHORIZED: u16 = 4500;
    /// No reconnect: the server is full.
    pub const SERVER_FULL: u16 = 4503;
}

/// Appends `{"type":…,"timestamp":…,"data":…,"id":…}`; `data` and `id` only when given.
pub fn write_envelope<T: Serialize + ?Sized>(
    out: &mut Vec<u8>,
    ty: &str,
    data: Option<&T>,
    id: Option<&Value>,
) {
    match data {
        // Serialising strings, numbers and derived structs into a Vec cannot fail.
        Some(data) => write_envelope_raw(
            out,
            ty,
            Some(|out: &mut Vec<u8>| {
                let _ = serde_json::to_writer(out, data);
            }),
            id,
        ),
        None => write_envelope_raw(out, ty, None::<fn(&mut Vec<u8>)>, id),
    }
}

/// Like [`write_envelope`], with `data` written by a function that appends raw JSON
/// (for payloads made of already-encoded results).
pub fn write_envelope_raw(
    out: &mut Vec<u8>,
    ty: &str,
    data: Option<impl FnOnce(&mut Vec<u8>)>,
    id: Option<&Value>,
) {
    out.extend_from_slice(br#"{"type":"#);
    let _ = serde_json::to_writer(&mut *out, ty);
    out.extend_from_slice(br#","timestamp":""#);
    write_rfc3339(out, SystemTime::now());
    out.push(b'"');
    if let Some(data) = data {
        out.extend_from_slice(br#","data":"#);
        data(out);
    }
    if let Some(id) = id {
        out.extend_from_slice(br#","id":"#);
        let _ = serde_json::to_writer(&mut *out, id);
    }
    out.push(b'}');
}

/// The `data` of an `error` message and the body of an HTTP error.
#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    /// Machine-readable code.
    pub code: &'a str,
    /// What was wrong, for a person.
    pub message: &'a str,
}

/// Appends an `error` message.
pub fn write_error(out: &mut Vec<u8>, code: ErrorCode, message: &str, id: Option<&Value>) {
    let body = ErrorBody {
        code: code.as_str(),
        message,
    };
    write_envelope(out, "error", Some(&body), id);
}

/// Appends `"name"` JSON-escaped, as the `subscriptions` list of a result holds it.
pub fn json_string(s: &str) -> Box<str> {
    serde_json::to_string(s)
        .unwrap_or_default()
        .into_boxed_str()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_codes_and_statuses_as_protocol_md_lists_them() {
        let cases = [
            (ErrorCode::MethodNotAllowed, "method_not_allowed", 405),
            (ErrorCode::PayloadTooLarge, "payload_too_large", 413),
            (ErrorCode::HeadersTooLarge, "headers_too_large", 431),
            (ErrorCode::UpgradeRequired, "upgrade_required", 426),
            (ErrorCode::RequestTimeout, "request_timeout", 408),
            (ErrorCode::ServerFull, "server_full", 503),
            (ErrorCode::Forbidden, "forbidden", 403),
            (ErrorCode::Degraded, "degraded", 503),
            (ErrorCode::Unauthorized, "unauthorized", 401),
            (ErrorCode::NotFound, "not_found", 404),
            (ErrorCode::LimitExceeded, "limit_exceeded", 400),
            (ErrorCode::QueueFull, "queue_full", 503),
        ];
        for (code, word, status) in cases {
            assert_eq!((code.as_str(), code.http_status()), (word, status));
        }
    }

    #[test]
    fn envelope_has_type_timestamp_data_and_id() {
        let mut out = Vec::new();
        let id = Value::from("r1");
        write_error(&mut out, ErrorCode::BadFilter, "bad \"x\"", Some(&id));
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["data"]["code"], "bad_filter");
        assert_eq!(v["data"]["message"], "bad \"x\"");
        assert_eq!(v["id"], "r1");
        assert_eq!(v["timestamp"].as_str().unwrap().len(), 30);
    }

    #[test]
    fn envelope_without_data_or_id() {
        let mut out = Vec::new();
        write_envelope::<()>(&mut out, "pong", None, None);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v.as_object().unwrap().len(), 2);
    }
}
