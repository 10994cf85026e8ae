//! Close codes as the client reads them: whether to come back, and in words.

use crate::protocol::close;

/// Close code for a connection that ended without a close frame (RFC 6455 7.1.5).
pub const ABNORMAL: u16 = 1006;

/// Whether a connection that ended with `code` should be opened again.
///
/// PROTOCOL.md: 1001 (server going away), 1006 (no close frame: a network fault) and
/// 4000-4499 reconnect; 4500-4999 do not. Beyond it: the server-side failures RFC 6455
/// registers as passing (1011 internal error, 1012 restart, 1013 try again later, 1014
/// bad gateway) reconnect; a normal close (1000) and the codes that say this client broke
/// the protocol (1002, 1003, 1007, 1008, 1009, 1010) do not, since coming back would only
/// repeat the mistake. Codes no one has defined reconnect, so a server that grows new
/// codes does not strand its clients.
pub fn should_reconnect(code: u16) -> bool {
    !matches!(code, 1000 | 1002 | 1003 | 1007..=1010 | 4500..=4999)
}

/// Words for the close codes PROTOCOL.md and RFC 6455 define.
pub fn describe(code: u16) -> &'static str {
    match code {
        1000 => "normal close",
        1001 => "server going away",
        1002 => "protocol error",
        1003 => "unsupported data",
        1005 => "closed without a code",
        1006 => "connection lost",
        1007 => "invalid payload",
        1009 => "message too big",
        1011 => "server error",
        1012 => "server restarting",
        1013 => "try again later",
        close::SLOW_CONSUMER => "slow consumer",
        close::RATE_LIMIT => "rate limited",
        close::UNAUTHORIZED => "unauthorized",
        close::SERVER_FULL => "server full",
        4000..=4007 | 4009..=4028 | 4030..=4499 => "server asked to reconnect",
        4501 | 4502 | 4504..=4999 => "server asked not to reconnect",
        _ => "closed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes_decide_reconnects() {
        for code in [1001, 1006, 1011, 1012, 1013, 4000, 4008, 4029, 4499] {
            assert!(should_reconnect(code), "{code}");
        }
        for code in [1000, 1002, 1003, 1007, 1008, 1009, 1010, 4500, 4503, 4999] {
            assert!(!should_reconnect(code), "{code}");
        }
    }
}
