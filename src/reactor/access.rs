//! Who may use what: the Host check, the token and the WebSocket origin allow-list
//! (PROTOCOL.md, "Access control"). Without a token everything is open; the default bind
//! is loopback, where only loopback host names are answered.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::host::HostCheck;
use super::http::{Request, Response};
use crate::config::{Config, Origin};
use crate::protocol::ErrorCode;

/// The access settings, checked per request.
#[derive(Debug, Default)]
pub struct Access {
    /// SHA-256 of the token: what is compared has one length whatever was sent.
    token: Option<[u8; 32]>,
    origins: Vec<Origin>,
    hosts: HostCheck,
}

impl Access {
    /// From the configuration.
    pub fn new(config: &Config) -> Access {
        Access {
            token: config.token.as_ref().map(|t| digest(t.as_bytes())),
            origins: config.allow_origin.clone(),
            hosts: HostCheck::new(config.listen, &config.allow_host),
        }
    }

    /// Every request: `None` when its `Host` may be answered, else the 403 (DNS rebinding:
    /// a browser that was made to resolve another name to this address sends that name).
    pub fn check_host(&self, req: &Request<'_, '_>) -> Option<Response> {
        if self.hosts.allows(req.host) {
            return None;
        }
        let shown: String = req.host.unwrap_or_default().chars().take(200).collect();
        Some(Response::error(
            403,
            ErrorCode::Forbidden,
            &format!(
                "host `{shown}` is not allowed; start the server with --allow-host {shown} to serve it"
            ),
        ))
    }

    /// A request that needs the token: `None` when it carries it (or none is set), else
    /// the 401 to answer. `query_ok` lets `?token=` stand in for the header, for browsers,
    /// which cannot set headers on a WebSocket.
    pub fn check_token(&self, req: &Request<'_, '_>, query_ok: bool) -> Option<Response> {
        let token = self.token.as_ref()?;
        let given = bearer(req).or_else(|| query_ok.then(|| query_token(req.query)).flatten());
        let message = match given {
            None => "this server needs a token: send `Authorization: Bearer <token>`",
            Some(given) if same(&digest(given.as_bytes()), token) => return None,
            Some(_) => "wrong token",
        };
        Some(
            Response::error(401, ErrorCode::Unauthorized, message)
                .with_header("WWW-Authenticate", "Bearer realm=\"scanstream\""),
        )
    }

    /// A WebSocket upgrade or a POST: `None` when its `Origin` is allowed, else the 403
    /// to answer. A request without `Origin` comes from a program, not a page, and the
    /// allow-list guards against pages.
    pub fn check_origin(&self, req: &Request<'_, '_>) -> Option<Response> {
        if self.origins.is_empty() {
            return None;
        }
        let origin = req.header("Origin")?;
        let allowed = self
            .origins
            .iter()
            .any(|o| o.as_str().as_bytes().eq_ignore_ascii_case(origin));
        if allowed {
            return None;
        }
        let shown: String = String::from_utf8_lossy(origin).chars().take(200).collect();
        Some(Response::error(
            403,
            ErrorCode::Forbidden,
            &format!("origin `{shown}` is not allowed"),
        ))
    }
}

/// The token in `Authorization: Bearer <token>`; the scheme is case-insensitive.
fn bearer<'r>(req: &'r Request<'_, '_>) -> Option<std::borrow::Cow<'r, str>> {
    let value = std::str::from_utf8(req.header("Authorization")?)
        .ok()?
        .trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start().into())
}

fn query_token(query: &str) -> Option<std::borrow::Cow<'_, str>> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v)
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Compares two digests in constant time: neither how much of a guess is right nor the
/// token's length shows in how long a refusal takes.
fn same(given: &[u8; 32], expected: &[u8; 32]) -> bool {
    given.ct_eq(expected).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_compares_whole_digests() {
        let token = digest(b"secret-token");
        assert!(same(&digest(b"secret-token"), &token));
        for wrong in [
            &b"secret-tokeN"[..],
            b"secret",
            b"",
            b"secret-token-and-more",
        ] {
            assert!(!same(&digest(wrong), &token), "{wrong:?}");
        }
    }
}
