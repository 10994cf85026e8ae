//! The HTTP control API: one function from a request to what to answer.
//!
//! It returns a value and never touches the connection: the reactor encodes the
//! response, performs the upgrade or renders metrics.

use serde::{Deserialize, Serialize};

use super::access::Access;
use super::app::App;
use super::http::{Request, Response};
use super::websocket::check_upgrade;
use crate::alerts::{Query, Severity};
use crate::bus::Command;
use crate::config::Config;
use crate::event::Scan;
use crate::protocol::ErrorCode;
use crate::protocol::MAX_SYMBOL_LEN;
use crate::scanner::{RunState, SourceSpec};

/// What the reactor does with a request.
#[derive(Debug)]
pub enum Action {
    /// Send this response.
    Respond(Response),
    /// Switch to WebSocket with this `Sec-WebSocket-Accept`.
    Upgrade(String),
    /// Send the metrics page (the reactor has the gauges).
    Metrics,
    /// Ask the producer to acknowledge this alert, and answer when it has.
    Ack(String),
}

/// The dashboard: a page, its style and its script, embedded so the binary serves it
/// offline and stands alone.
const DASHBOARD_HTML: &str = include_str!("dashboard/index.html");
const DASHBOARD_CSS: &str = include_str!("dashboard/dashboard.css");
const DASHBOARD_JS: &str = include_str!("dashboard/dashboard.js");

/// The page loads only what the server itself serves; `'self'` covers the page's own
/// `ws://` or `wss://` origin.
const DASHBOARD_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

#[derive(Deserialize)]
struct ScanBody {
    symbols: Vec<String>,
}

/// Routes one request.
pub fn route(req: &Request<'_, '_>, app: &mut App) -> Action {
    // Before anything else, the dashboard and `/stream` included: a rebound name must not
    // reach what it may read either.
    if let Some(refusal) = app.access.check_host(req) {
        return Action::Respond(refusal);
    }
    let allowed = match req.path {
        "/stream" => return upgrade(req, &app.access),
        "/" | "/dashboard.css" | "/dashboard.js" | "/healthz" | "/metrics" | "/stream/status"
        | "/scans" => "GET",
        "/stream/start" | "/stream/stop" | "/scan" => "POST",
        "/alerts" => "GET",
        path if ack_target(path).is_some() => "POST",
        _ => {
            let msg = format!(
                "no endpoint at {}",
                req.path.chars().take(200).collect::<String>()
            );
            return Action::Respond(Response::error(404, ErrorCode::NotFound, &msg));
        }
    };
    if req.method != allowed {
        let msg = format!("{} takes {allowed}", req.path);
        return Action::Respond(
            Response::error(405, ErrorCode::MethodNotAllowed, &msg).with_header("Allow", allowed),
        );
    }
    // A page elsewhere can make a browser POST here (no preflight for a plain form
    // post); the allow-list, when given, refuses those as it refuses upgrades.
    if req.method == "POST" {
        if let Some(refusal) = app.access.check_origin(req) {
            return Action::Respond(refusal);
        }
    }
    // PROTOCOL.md leaves only `/`, `/healthz` and `/metrics` open: `/stream/status` is
    // under `/stream`.
    let private = ["/alerts", "/stream/status", "/scans"];
    if req.method == "POST" || private.contains(&req.path) {
        if let Some(refusal) = app.access.check_token(req, false) {
            return Action::Respond(refusal);
        }
    }
    Action::Respond(match req.path {
        "/" => asset("text/html; charset=utf-8", DASHBOARD_HTML)
            .with_header("Content-Security-Policy", DASHBOARD_CSP)
            // The page address may carry the token: send it nowhere.
            .with_header("Referrer-Policy", "no-referrer"),
        "/dashboard.css" => asset("text/css; charset=utf-8", DASHBOARD_CSS),
        "/dashboard.js" => asset("text/javascript; charset=utf-8", DASHBOARD_JS),
        "/healthz" => healthz(app),
        "/metrics" => return Action::Metrics,
        "/stream/status" => Response::json(200, &app.status()),
        "/stream/start" => control(app, Command::Start, RunState::Running),
        "/stream/stop" => control(app, Command::Stop, RunState::Stopped),
        "/scan" => scan(req, app),
        "/alerts" => list_alerts(req, app),
        "/scans" => Response::raw_json(200, &app.scans),
        path => return Action::Ack(ack_target(path).unwrap_or_default().to_owned()),
    })
}

/// `GET /scans`: every scan a market source runs, with its definition, in the order it
/// runs them; the benchmark source runs `firehose` alone, which has none.
pub fn scan_list(config: &Config) -> String {
    #[derive(Serialize)]
    struct Entry<'a> {
        name: &'static str,
        builtin: bool,
        when: &'a [String],
        #[serde(skip_serializing_if = "Option::is_none")]
        score: Option<&'a str>,
    }
    let set = match config.source {
        SourceSpec::Firehose { .. } => None,
        _ => config.scan_set().ok(),
    };
    let scans: Vec<Entry<'_>> = match &set {
        None => vec![Entry {
            name: Scan::Firehose.name(),
            builtin: true,
            when: &[],
            score: None,
        }],
        Some(set) => set
            .definitions()
            .iter()
            .map(|d| Entry {
                name: d.scan.name(),
                builtin: !d.scan.is_custom(),
                when: &d.when,
                score: Some(&d.score),
            })
            .collect(),
    };
    serde_json::json!({ "scans": scans }).to_string()
}

/// One of the dashboard's files. `no-cache` lets a browser keep it but check with each
/// load, so a new server version is never shown with an old script.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    Response::text(200, content_type, body)
        .with_header("Cache-Control", "no-cache")
        .with_header("X-Content-Type-Options", "nosniff")
}

/// The alert id in `/alerts/{id}/ack`.
fn ack_target(path: &str) -> Option<&str> {
    let id = path.strip_prefix("/alerts/")?.strip_suffix("/ack")?;
    (!id.is_empty() && !id.contains('/')).then_some(id)
}

/// Alerts one `GET /alerts` lists at most: one answer stays small, whatever the history.
const MAX_ALERTS_LISTED: usize = 1000;
/// How long the bus may be away before `/healthz` says so.
const BUS_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Alerts kept, newest first: `?unacked=true&symbol=TSLA&severity=warning&limit=100`.
fn list_alerts(req: &Request<'_, '_>, app: &mut App) -> Response {
    let mut q = Query {
        limit: 100,
        ..Query::default()
    };
    for (key, value) in form_urlencoded::parse(req.query.as_bytes()) {
        let bad = |what: &str| {
            let shown: String = value.chars().take(100).collect();
            Response::error(
                400,
                ErrorCode::BadRequest,
                &format!("{key}: {what}, got `{shown}`"),
            )
        };
        match &*key {
            "unacked" => match &*value {
                "true" | "1" => q.unacked = true,
                "false" | "0" => q.unacked = false,
                _ => return bad("expected true or false"),
            },
            "symbol" if !value.is_empty() && value.len() <= MAX_SYMBOL_LEN => {
                q.symbol = Some(value.into_owned());
            }
            "symbol" => return bad(&format!("expected 1 to {MAX_SYMBOL_LEN} bytes")),
            "severity" => match Severity::from_name(&value) {
                Some(s) => q.severity = Some(s),
                None => return bad("expected info, warning or critical"),
            },
            "limit" => match value.parse::<usize>() {
                Ok(n) if (1..=MAX_ALERTS_LISTED).contains(&n) => q.limit = n,
                _ => return bad(&format!("expected 1 to {MAX_ALERTS_LISTED}")),
            },
            _ => {
                let shown: String = key.chars().take(100).collect();
                return Response::error(
                    400,
                    ErrorCode::BadRequest,
                    &format!(
                        "unknown parameter `{shown}`; known: unacked, symbol, severity, limit"
                    ),
                );
            }
        }
    }
    let alerts: Vec<_> = app
        .alerts
        .log()
        .query(&q)
        .into_iter()
        .map(|a| a.wire())
        .collect();
    Response::json(200, &alerts)
}

/// The origin is checked before the token, so a page from elsewhere learns nothing about
/// a token it may have guessed.
fn upgrade(req: &Request<'_, '_>, access: &Access) -> Action {
    if let Some(refusal) = access
        .check_origin(req)
        .or_else(|| access.check_token(req, true))
    {
        return Action::Respond(refusal);
    }
    match check_upgrade(req) {
        Ok(accept) => Action::Upgrade(accept),
        Err(response) => Action::Respond(response),
    }
}

/// `ok`, or 503 once the scanner has failed or the bus has been away past a grace period
/// (a short outage is ridden out: edges keep serving what they hold).
fn healthz(app: &App) -> Response {
    if let Some(why) = app.scanner_failure.as_deref() {
        let why: String = why.chars().take(200).collect();
        return Response::error(503, ErrorCode::Degraded, &format!("scanner failed: {why}"));
    }
    match app.shared.bus.current() {
        Some((problem, lasted)) if lasted >= BUS_GRACE => {
            let msg = format!("{} for {} s", problem.reason(), lasted.as_secs());
            Response::error(503, ErrorCode::Degraded, &msg)
        }
        _ => Response::text(200, "text/plain; charset=utf-8", "ok"),
    }
}

fn control(app: &mut App, cmd: Command, state: RunState) -> Response {
    if app.bus.command(cmd).is_err() {
        return Response::error(503, ErrorCode::Unavailable, "the scanner is not running");
    }
    // The scanner confirms with a status of its own; answer with the state it will have.
    app.status.scanner.state = state;
    Response::json(200, &app.status())
}

fn scan(req: &Request<'_, '_>, app: &mut App) -> Response {
    let body: ScanBody = match serde_json::from_slice(req.body) {
        Ok(body) => body,
        Err(e) if e.is_syntax() || e.is_eof() => {
            return Response::error(400, ErrorCode::BadJson, &format!("body is not JSON: {e}"));
        }
        Err(e) => return Response::error(400, ErrorCode::BadRequest, &format!("body: {e}")),
    };
    if let Err((code, msg)) = crate::protocol::check_symbols(&body.symbols, app.limits.max_symbols)
    {
        return Response::error(code.http_status(), code, &msg);
    }
    let n = body.symbols.len();
    match app.adhoc.request(&app.bus, body.symbols, None, None) {
        Ok(_) => Response::json(202, &serde_json::json!({ "queued": n })),
        Err(refusal) => {
            let (code, msg) = refusal.code();
            let response = Response::error(code.http_status(), code, msg);
            // A full queue empties within the scanner's next turns.
            if code == ErrorCode::QueueFull {
                response.with_header("Retry-After", "1")
            } else {
                response
            }
        }
    }
}
