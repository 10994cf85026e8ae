//! HTTP/1.1 request heads and bodies parsed with httparse, and responses encoded into an
//! out buffer.
//!
//! Sans-IO: functions over byte slices. Parsing never allocates; a request borrows the
//! connection's buffer. Every limit breach maps to the status PROTOCOL.md gives it.

use std::io::Write;

use serde::Serialize;

use super::host::host_part;
use crate::protocol::ErrorBody;
use crate::protocol::ErrorCode;

/// Headers per request at most (431 past it).
pub const MAX_HEADERS: usize = 64;

/// Size limits on one request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes of the head.
    pub max_head: usize,
    /// Bytes of the body.
    pub max_body: usize,
}

/// A complete request, borrowing the connection's buffer.
#[derive(Debug)]
pub struct Request<'h, 'b> {
    /// Method as sent.
    pub method: &'b str,
    /// Path without the query.
    pub path: &'b str,
    /// The query, after `?` (empty without one).
    pub query: &'b str,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// `Host` without its port, checked for syntax; `None` when not sent (HTTP/1.0).
    pub host: Option<&'b str>,
    /// Headers as sent.
    pub headers: &'h [httparse::Header<'b>],
    /// The body (empty without `Content-Length`).
    pub body: &'b [u8],
}

impl Request<'_, '_> {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }

    /// Does a comma-separated header contain `token` (case-insensitive)?
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .flat_map(|h| h.value.split(|&b| b == b','))
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    }

    /// Whether the connection stays open after the response (RFC 9112 section 9.3).
    pub fn keep_alive(&self) -> bool {
        if self.has_token("Connection", "close") {
            return false;
        }
        self.minor_version >= 1 || self.has_token("Connection", "keep-alive")
    }
}

/// The outcome of parsing the front of a buffer.
#[derive(Debug)]
pub enum Parsed<'h, 'b> {
    /// More bytes are needed.
    Partial,
    /// A whole request, and how many bytes of the buffer it used.
    Complete(Request<'h, 'b>, usize),
    /// The request is refused: answer with this status and close.
    Error(HttpError),
}

/// A request refused while parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpError {
    /// The status to answer with.
    pub status: u16,
    /// The code of the JSON body.
    pub code: ErrorCode,
    /// Why, for the JSON body.
    pub message: &'static str,
}

const fn fail(status: u16, message: &'static str) -> HttpError {
    let code = match status {
        413 => ErrorCode::PayloadTooLarge,
        431 => ErrorCode::HeadersTooLarge,
        _ => ErrorCode::BadRequest,
    };
    HttpError {
        status,
        code,
        message,
    }
}

/// Parses one request from the front of `buf`.
pub fn parse<'h, 'b>(
    buf: &'b [u8],
    headers: &'h mut [httparse::Header<'b>; MAX_HEADERS],
    limits: Limits,
) -> Parsed<'h, 'b> {
    let mut req = httparse::Request::new(headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > limits.max_head => {
            return Parsed::Error(fail(431, "request head too large"));
        }
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => {
            return Parsed::Error(fail(431, "too many request headers"));
        }
        Err(_) => return Parsed::Error(fail(400, "malformed HTTP request")),
    };
    if head_len > limits.max_head {
        return Parsed::Error(fail(431, "request head too large"));
    }
    let (Some(method), Some(target), Some(minor_version)) = (req.method, req.path, req.version)
    else {
        return Parsed::Error(fail(400, "malformed HTTP request"));
    };
    let headers: &'h [httparse::Header<'b>] = req.headers;
    if headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case("Transfer-Encoding"))
    {
        return Parsed::Error(fail(
            400,
            "chunked request bodies are not supported; send Content-Length",
        ));
    }
    // RFC 9112 section 3.2: exactly one Host in HTTP/1.1, at most one and valid in any.
    let mut hosts = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("Host"));
    let host = match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => return Parsed::Error(fail(400, "more than one Host header")),
        (None, _) if minor_version >= 1 => {
            return Parsed::Error(fail(400, "an HTTP/1.1 request needs a Host header"));
        }
        (None, _) => None,
        (Some(h), None) => match host_part(h.value) {
            Some(host) => Some(host),
            None => return Parsed::Error(fail(400, "invalid Host header")),
        },
    };
    let mut body_len: Option<usize> = None;
    for h in headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("Content-Length"))
    {
        let Some(n) = std::str::from_utf8(h.value)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        else {
            return Parsed::Error(fail(400, "invalid Content-Length"));
        };
        if body_len.is_some_and(|m| m != n) {
            return Parsed::Error(fail(400, "conflicting Content-Length headers"));
        }
        body_len = Some(n);
    }
    let body_len = body_len.unwrap_or(0);
    if body_len > limits.max_body {
        return Parsed::Error(fail(413, "request body too large"));
    }
    let Some(body) = buf.get(head_len..head_len + body_len) else {
        return Parsed::Partial;
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let request = Request {
        method,
        path,
        query,
        minor_version,
        host,
        headers,
        body,
    };
    Parsed::Complete(request, head_len + body_len)
}

/// A response to encode.
#[derive(Debug)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// Extra headers.
    pub headers: Vec<(&'static str, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// A JSON response.
    pub fn json<T: Serialize + ?Sized>(status: u16, value: &T) -> Response {
        Response {
            status,
            content_type: "application/json",
            headers: Vec::new(),
            body: serde_json::to_vec(value).unwrap_or_default(),
        }
    }

    /// A JSON response of a body encoded already.
    pub fn raw_json(status: u16, body: &str) -> Response {
        Response {
            status,
            content_type: "application/json",
            headers: Vec::new(),
            body: body.as_bytes().to_vec(),
        }
    }

    /// A JSON error body `{"code", "message"}`.
    pub fn error(status: u16, code: ErrorCode, message: &str) -> Response {
        let code = code.as_str();
        Response::json(status, &ErrorBody { code, message })
    }

    /// A plain-text response.
    pub fn text(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            content_type,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    /// Encodes status line, headers and body onto `out`, for an HTTP/1.1 client.
    pub fn write(&self, out: &mut Vec<u8>, keep_alive: bool) {
        self.write_for(out, keep_alive, false);
    }

    /// Encodes the response for a client of HTTP/1.0 (`http10`) or 1.1.
    pub fn write_for(&self, out: &mut Vec<u8>, keep_alive: bool, http10: bool) {
        let _ = write!(
            out,
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len()
        );
        for (name, value) in &self.headers {
            let _ = write!(out, "{name}: {value}\r\n");
        }
        if !keep_alive {
            out.extend_from_slice(b"Connection: close\r\n");
        } else if http10 {
            // HTTP/1.0 closes by default; say that this one stays open.
            out.extend_from_slice(b"Connection: keep-alive\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
    }
}

impl From<HttpError> for Response {
    /// A refused request as a JSON error response.
    fn from(e: HttpError) -> Response {
        Response::error(e.status, e.code, e.message)
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_head: 256,
        max_body: 16,
    };

    /// `Ok(None)` partial, `Ok(Some(("METHOD path", used)))` complete, `Err(status)`.
    type Outcome = Result<Option<(String, usize)>, u16>;

    fn outcome(buf: &[u8]) -> Outcome {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        match parse(buf, &mut headers, LIMITS) {
            Parsed::Partial => Ok(None),
            Parsed::Complete(r, n) => Ok(Some((format!("{} {}", r.method, r.path), n))),
            Parsed::Error(e) => Err(e.status),
        }
    }

    #[test]
    fn parse_table() {
        let long = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(300));
        let many: String = (0..70).map(|i| format!("H{i}: v\r\n")).collect();
        let many = format!("GET / HTTP/1.1\r\n{many}\r\n");
        let cases: Vec<(&[u8], Outcome)> = vec![
            (
                b"GET /a?b=1 HTTP/1.1\r\nHost: h\r\n\r\n",
                Ok(Some(("GET /a".into(), 32))),
            ),
            (b"GET /a HTTP/1.1\r\nHost: x\r\n", Ok(None)),
            (
                b"POST /s HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nab",
                Ok(None),
            ),
            (
                b"POST /s HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabcGET",
                Ok(Some(("POST /s".into(), 51))),
            ),
            (
                b"POST /s HTTP/1.1\r\nHost: h\r\nContent-Length: 17\r\n\r\n",
                Err(413),
            ),
            (
                b"POST /s HTTP/1.1\r\nHost: h\r\nContent-Length: x\r\n\r\n",
                Err(400),
            ),
            (
                b"POST /s HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                Err(400),
            ),
            (
                b"POST /s HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
                Err(400),
            ),
            // RFC 9112 section 3.2: exactly one valid Host in HTTP/1.1, none needed in 1.0.
            (b"GET / HTTP/1.1\r\n\r\n", Err(400)),
            (b"GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n", Err(400)),
            (b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", Err(400)),
            (b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", Err(400)),
            (b"GET / HTTP/1.1\r\nHost: a:http\r\n\r\n", Err(400)),
            (b"GET / HTTP/1.0\r\n\r\n", Ok(Some(("GET /".into(), 18)))),
            (
                b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n",
                Ok(Some(("GET /".into(), 36))),
            ),
            (b"GARBAGE\r\n\r\n", Err(400)),
            (b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", Err(400)),
            (long.as_bytes(), Err(431)),
            (&long.as_bytes()[..280], Err(431)),
            (many.as_bytes(), Err(431)),
        ];
        for (buf, want) in cases {
            assert_eq!(outcome(buf), want, "{}", String::from_utf8_lossy(buf));
        }
    }

    #[test]
    fn keep_alive_rules() {
        let cases: [(&[u8], bool); 4] = [
            (b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", true),
            (
                b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
                false,
            ),
            (b"GET / HTTP/1.0\r\n\r\n", false),
            (b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", true),
        ];
        for (buf, want) in cases {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let Parsed::Complete(req, _) = parse(buf, &mut headers, LIMITS) else {
                panic!()
            };
            assert_eq!(req.keep_alive(), want);
        }
    }

    #[test]
    fn tokens_in_lists() {
        let buf = b"GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Upgrade\r\n\r\n";
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let Parsed::Complete(req, _) = parse(buf, &mut headers, LIMITS) else {
            panic!()
        };
        assert!(req.has_token("connection", "upgrade"));
        assert!(!req.has_token("connection", "close"));
    }

    #[test]
    fn response_encoding() {
        let mut out = Vec::new();
        Response::error(405, ErrorCode::MethodNotAllowed, "use GET")
            .with_header("Allow", "GET")
            .write(&mut out, false);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));
        assert!(text.contains("\r\nAllow: GET\r\n"));
        assert!(text.contains("\r\nConnection: close\r\n"));
        assert!(
            text.ends_with("\r\n\r\n{\"code\":\"method_not_allowed\",\"message\":\"use GET\"}")
        );
    }
}
