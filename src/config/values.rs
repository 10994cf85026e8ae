//! The values of settings that are more than a number or a path: the token, origins and
//! allowed host names, and the bus and the role a process plays on it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

/// The shared secret clients present. Its `Debug` does not show it, so a logged
/// configuration does not leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// The secret, to compare against.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(…)")
    }
}

impl Token {
    /// It travels in a header (and percent-encoded in a query string): visible ASCII.
    pub(super) fn is_valid(&self) -> bool {
        (8..=512).contains(&self.0.len()) && self.0.bytes().all(|b| b.is_ascii_graphic())
    }
}

// Parsing takes anything and `Config::validate` judges it: an error from here would be
// printed with the value in it, and the value is a secret.
impl FromStr for Token {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Token(s.to_owned()))
    }
}

impl<'de> Deserialize<'de> for Token {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Token)
    }
}

/// A web origin, `scheme://host[:port]`, kept lowercase as browsers send it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin(String);

impl Origin {
    /// As a browser sends it in `Origin`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Origin {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().trim_end_matches('/').to_ascii_lowercase();
        let Some((scheme, authority)) = lower.split_once("://") else {
            return Err(format!("an origin is scheme://host[:port], got `{s}`"));
        };
        let ok = matches!(scheme, "http" | "https")
            && !authority.is_empty()
            && authority
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
        if !ok {
            return Err(format!(
                "an origin is http(s)://host[:port] with no path, got `{s}`"
            ));
        }
        Ok(Origin(lower))
    }
}

impl<'de> Deserialize<'de> for Origin {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// A name requests may give in `Host` beside the loopback ones (`--allow-host`):
/// `scanner.example.com`, `.example.com` for it and every name under it, or `*` for any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHost(String);

impl AllowedHost {
    /// Does `host` (a `Host` value without its port) match?
    pub fn matches(&self, host: &str) -> bool {
        let host = host.strip_suffix('.').unwrap_or(host);
        match self.0.as_str() {
            "*" => true,
            suffix if suffix.starts_with('.') => {
                let (host, suffix) = (host.as_bytes(), suffix.as_bytes());
                host.eq_ignore_ascii_case(&suffix[1..])
                    || (host.len() > suffix.len()
                        && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix))
            }
            name => host.eq_ignore_ascii_case(name),
        }
    }
}

impl FromStr for AllowedHost {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        let name = lower.strip_suffix('.').unwrap_or(&lower);
        let body = name.strip_prefix('.').unwrap_or(name);
        let ok = match body.strip_prefix('[') {
            _ if name == "*" => true,
            Some(literal) => literal
                .strip_suffix(']')
                .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok()),
            None => {
                !body.is_empty()
                    && body
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
            }
        };
        if !ok {
            return Err(format!(
                "an allowed host is a name or an address without port (or .suffix, or *), got `{s}`"
            ));
        }
        Ok(AllowedHost(name.to_owned()))
    }
}

impl<'de> Deserialize<'de> for AllowedHost {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// What carries events and commands between the producer and the edges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusSpec {
    /// Channels inside this process (no `--bus`).
    Local,
    /// Redis Streams at this URL: `redis://HOST:PORT[/DB]` or `redis+unix:///PATH`.
    Redis(String),
}

impl FromStr for BusSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s == "local" {
            return Ok(BusSpec::Local);
        }
        let redis = ["redis://", "rediss://", "redis+unix://", "unix://"];
        if redis.iter().any(|scheme| s.starts_with(scheme)) && s.len() > "unix://".len() {
            return Ok(BusSpec::Redis(s.to_owned()));
        }
        Err(format!(
            "a bus is redis://HOST:PORT[/DB], redis+unix:///PATH or local, got `{s}`"
        ))
    }
}

impl fmt::Display for BusSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BusSpec::Local => f.write_str("local"),
            // Without a password that the URL may carry.
            BusSpec::Redis(url) => match url.split_once('@') {
                Some((scheme_user, host)) => {
                    let scheme = scheme_user.split("://").next().unwrap_or("redis");
                    write!(f, "{scheme}://…@{host}")
                }
                None => f.write_str(url),
            },
        }
    }
}

impl<'de> Deserialize<'de> for BusSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// What a process does on a bus between processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The producer and edges in one process.
    All,
    /// The scanner and alerts, publishing to the bus; it serves HTTP too.
    Producer,
    /// Edges alone, serving from the bus.
    Edge,
}

impl Role {
    /// Does this process run the scanner?
    pub fn produces(self) -> bool {
        matches!(self, Role::All | Role::Producer)
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "all" => Ok(Role::All),
            "producer" => Ok(Role::Producer),
            "edge" => Ok(Role::Edge),
            other => Err(format!("a role is all, producer or edge, got `{other}`")),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::All => "all",
            Role::Producer => "producer",
            Role::Edge => "edge",
        })
    }
}

impl<'de> Deserialize<'de> for Role {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}
