//! The `Host` header: its syntax (RFC 9112 section 3.2, RFC 3986 section 3.2.2) and the
//! check against DNS rebinding (PROTOCOL.md, "Access control").
//!
//! A page on `evil.example` can rebind that name to 127.0.0.1, and the browser then sends
//! it requests to this server as same-origin ones, with `Host: evil.example`. A server on
//! loopback answers only hosts that are loopback names or listed with `--allow-host`.
//!
//! Sans-IO: functions over the header's bytes.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::config::AllowedHost;

/// The host part of a `Host` value, without the port: `Some("")` for an empty value
/// (allowed for a target without authority), `None` when the value is not
/// `host [":" port]`.
pub fn host_part(value: &[u8]) -> Option<&str> {
    let value = std::str::from_utf8(value).ok()?;
    if value.is_empty() {
        return Some("");
    }
    let (host, port) = if let Some(rest) = value.strip_prefix('[') {
        let (literal, after) = rest.split_once(']')?;
        literal.parse::<Ipv6Addr>().ok()?;
        let port = match after {
            "" => None,
            after => Some(after.strip_prefix(':')?),
        };
        (&value[..literal.len() + 2], port)
    } else {
        let (host, port) = match value.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (value, None),
        };
        if host.is_empty() || !host.bytes().all(reg_name_byte) {
            return None;
        }
        (host, port)
    };
    let port_ok = port.is_none_or(|p| p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    port_ok.then_some(host)
}

/// RFC 3986 `reg-name`: unreserved, sub-delims and `%` of pct-encoding.
fn reg_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=".contains(&b)
}

/// `localhost`, an address in 127.0.0.0/8, or `[::1]` (also as an IPv4-mapped address).
pub fn is_loopback(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    if let Some(literal) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return literal.parse::<Ipv6Addr>().is_ok_and(|ip| {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        });
    }
    host.parse::<Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
}

/// Which hosts requests may name.
#[derive(Debug, Default)]
pub enum HostCheck {
    /// Any host: the server is on a public address and no list was given.
    #[default]
    Off,
    /// Loopback names and the listed ones.
    Only(Vec<AllowedHost>),
}

impl HostCheck {
    /// On for a loopback listener or whenever names are listed.
    pub fn new(listen: SocketAddr, allowed: &[AllowedHost]) -> HostCheck {
        if listen.ip().is_loopback() || !allowed.is_empty() {
            HostCheck::Only(allowed.to_vec())
        } else {
            HostCheck::Off
        }
    }

    /// May a request name `host` (its `Host` without the port; `None` or empty when it
    /// sent none, which only a program does, never a browser)?
    pub fn allows(&self, host: Option<&str>) -> bool {
        let HostCheck::Only(allowed) = self else {
            return true;
        };
        let Some(host) = host.filter(|h| !h.is_empty()) else {
            return true;
        };
        is_loopback(host) || allowed.iter().any(|a| a.matches(host))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_syntax_table() {
        let cases: [(&[u8], Option<&str>); 17] = [
            (b"localhost", Some("localhost")),
            (b"localhost:8080", Some("localhost")),
            (b"127.0.0.1:80", Some("127.0.0.1")),
            (b"[::1]:8080", Some("[::1]")),
            (b"[::1]", Some("[::1]")),
            (b"scanner.example.com", Some("scanner.example.com")),
            (b"host:", Some("host")),
            (b"", Some("")),
            (b"a b", None),
            (b"a:b:c", None),
            (b":80", None),
            (b"[::1", None),
            (b"[nonsense]", None),
            (b"[::1]x", None),
            (b"host:123456", None),
            (b"user@host", None),
            (b"h\xc3\xa9", None),
        ];
        for (value, want) in cases {
            assert_eq!(host_part(value), want, "{}", String::from_utf8_lossy(value));
        }
    }

    #[test]
    fn loopback_names() {
        for host in [
            "localhost",
            "LocalHost",
            "localhost.",
            "127.0.0.1",
            "127.9.8.7",
            "[::1]",
        ] {
            assert!(is_loopback(host), "{host}");
        }
        for host in [
            "evil.example",
            "localhost.evil",
            "10.0.0.1",
            "128.0.0.1",
            "[::2]",
            "",
        ] {
            assert!(!is_loopback(host), "{host}");
        }
        assert!(is_loopback("[::ffff:127.0.0.1]"));
    }

    #[test]
    fn the_check_follows_the_listener_and_the_list() {
        let loopback: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let public: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let listed: Vec<AllowedHost> = vec!["scanner.example.com".parse().unwrap()];
        let on = HostCheck::new(loopback, &[]);
        assert!(on.allows(Some("localhost")) && on.allows(None) && on.allows(Some("")));
        assert!(!on.allows(Some("evil.example")));
        assert!(HostCheck::new(public, &[]).allows(Some("evil.example")));
        let list = HostCheck::new(public, &listed);
        assert!(list.allows(Some("Scanner.Example.com")) && list.allows(Some("127.0.0.1")));
        assert!(!list.allows(Some("evil.example")));
    }
}
