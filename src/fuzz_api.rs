//! Entry points for the fuzz targets in `fuzz/` (another crate) and their regression
//! tests; not an API. Each takes arbitrary bytes, runs them through the same code the
//! server runs on input from the network or from files, and panics only when an
//! invariant breaks (a panic is what the fuzzer reports).

mod connection;
mod server_bytes;
mod tls;

use std::time::{Instant, SystemTime};

use crate::config::Config;
use crate::event::{EventKind, Scan, ScanEvent, ScanResult};
use crate::protocol::{ClientMessage, Filter, parse_request};
use crate::reactor::access::Access;
use crate::reactor::http::{self, Limits, MAX_HEADERS, Parsed, Response};
use crate::reactor::websocket::check_upgrade;
use crate::scanner::{CsvReplay, Speed, parse_line};

pub use connection::{connection, connection_tls};
pub use server_bytes::{check_server_bytes, check_tls_records};

const LIMITS: Limits = Limits {
    max_head: 16 * 1024,
    max_body: 64 * 1024,
};

/// One HTTP request head (and body) as the reactor parses it, then the checks a request
/// meets before routing: host, origin, token, upgrade. Every answer must encode as HTTP.
pub fn http_head(data: &[u8]) {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let response = match http::parse(data, &mut headers, LIMITS) {
        Parsed::Partial => {
            assert!(data.len() <= LIMITS.max_head + LIMITS.max_body);
            return;
        }
        Parsed::Error(e) => {
            assert!(matches!(e.status, 400 | 413 | 431 | 501 | 505), "{e:?}");
            Response::from(e)
        }
        Parsed::Complete(req, used) => {
            assert!(used <= data.len() && used > 0);
            assert!(req.body.len() <= LIMITS.max_body);
            let _ = req.keep_alive();
            let access = Access::new(&Config {
                token: FUZZ_TOKEN.parse().ok(),
                allow_origin: vec!["https://desk.example.com".parse().expect("origin")],
                ..Config::default()
            });
            if let Some(refusal) = access.check_host(&req) {
                assert_eq!(refusal.status, 403);
                refusal
            } else if let Some(refusal) = access.check_origin(&req) {
                refusal
            } else if let Some(refusal) = access.check_token(&req, true) {
                refusal
            } else {
                match check_upgrade(&req) {
                    Ok(accept) => {
                        assert_eq!(accept.len(), 28, "base64 of a SHA-1");
                        return;
                    }
                    Err(response) => response,
                }
            }
        }
    };
    let mut out = Vec::new();
    response.write(&mut out, false);
    let mut parsed = [httparse::EMPTY_HEADER; 16];
    let mut res = httparse::Response::new(&mut parsed);
    assert!(
        matches!(res.parse(&out), Ok(httparse::Status::Complete(_))),
        "the answer is not HTTP: {}",
        String::from_utf8_lossy(&out)
    );
}

/// One client text message as a WebSocket session decodes it; a subscribe's filter is
/// then matched against a result, and a filter read on its own must agree.
pub fn client_message(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return; // The WebSocket layer closes with 1007 before a message gets here.
    };
    if let Ok(req) = parse_request(text, 1024) {
        if let ClientMessage::Subscribe(sub) = req.message {
            let _ = sub.filter.matches(&sample_event());
        }
    }
    let value = serde_json::from_slice(data).ok();
    if let Ok(filter) = Filter::from_json(value, 1024) {
        let _ = filter.matches(&sample_event());
    }
}

fn sample_event() -> ScanEvent {
    let result = ScanResult {
        values: Vec::new(),
        rule_frame: None,
        symbol: "AAPL".into(),
        scan: Scan::PriceChange,
        event: EventKind::New,
        score: 3.0,
        price: 190.0,
        change_pct: -4.0,
        volume: 1000,
        volume_ratio: 2.0,
        rsi: Some(40.0),
        source_ts: None,
        adhoc: false,
    };
    ScanEvent::publish(&result, 1, SystemTime::UNIX_EPOCH)
}

/// A CSV file as the replay feed reads it: bad rows are counted, never fatal.
pub fn csv_file(data: &[u8]) {
    let _ = CsvReplay::from_reader("fuzz.csv", data, Speed::Max, Instant::now());
}

/// One JSONL line as the JSONL feed reads it.
pub fn jsonl_line(data: &[u8]) {
    if let Ok(line) = std::str::from_utf8(data) {
        if let Ok(tick) = parse_line(line) {
            assert!(tick.price.is_finite() && tick.price > 0.0);
        }
    }
}

/// A config file: parsed, merged over the defaults, range-checked, rules compiled.
pub fn config_file(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Config::from_text(text);
    }
}

/// A scan expression, as a condition and as a number: a refusal points inside the text
/// (or just past its end), a compiled program evaluates over any values without a panic,
/// and every indicator it names reads back as itself from its canonical form.
pub fn scan_expression(data: &[u8]) {
    use crate::expr::{self, Needs, cross_states, push_cross};
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let chars = text.chars().count();
    // As a rule's condition, too, with the result's fields as variables.
    fn rule(text: &str, needs: &mut Needs) -> Result<expr::Compiled, expr::Error> {
        expr::condition_with(text, &crate::alerts::VARS, needs)
    }
    let compilers: [fn(&str, &mut Needs) -> _; 3] = [expr::condition, expr::number, rule];
    for compile in compilers {
        let mut needs = Needs::default();
        match compile(text, &mut needs) {
            Err(e) => assert!(e.col >= 1 && e.col <= chars + 1, "{e} in {text:?}"),
            Ok(c) => {
                // Values from the input's own bytes, NaN and infinities among them.
                let pick = [0.0, -1.5, 30.0, f64::NAN, f64::INFINITY, 1e300];
                let values: Vec<f64> = (0..needs.indicators.len())
                    .map(|i| pick[data.get(i).map_or(0, |b| usize::from(*b)) % pick.len()])
                    .collect();
                let mut crosses = cross_states(needs.crosses.len());
                for (c, diff) in needs.crosses.iter().enumerate() {
                    push_cross(&mut crosses, c, diff.eval(&values, &[]));
                    push_cross(&mut crosses, c, -diff.eval(&values, &[]));
                }
                let vars = [2.5, f64::NAN, -1.0, f64::INFINITY];
                let _ = c
                    .program
                    .eval_with(&values, &crosses, &vars, &mut [0.0; expr::MAX_DEPTH]);
                for ind in &c.named {
                    let again = expr::number(&ind.to_string(), &mut Needs::default())
                        .unwrap_or_else(|e| panic!("{ind} does not read back: {e}"));
                    assert_eq!(again.named, [*ind]);
                }
            }
        }
    }
}

/// The fuzz servers' token: the valid upgrade carries it, and nothing without it may be
/// upgraded.
const FUZZ_TOKEN: &str = "fuzz-token-123";
