//! The client's byte stream under tungstenite: plain TCP for `ws://`, rustls over it for
//! `wss://`. Both work blocking (the handshakes, under the connect timeout) and then
//! non-blocking (the session): rustls keeps what the socket did not take and sends it on
//! the next write or flush.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

use rustls::{ClientConfig, ClientConnection, StreamOwned};
use rustls_pki_types::ServerName;

/// One connection's stream.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Stream {
    /// Runs the TLS handshake with `host` on `socket`, blocking within the socket's
    /// timeouts.
    pub fn tls(
        config: Arc<ClientConfig>,
        host: &str,
        mut socket: TcpStream,
    ) -> Result<Stream, TlsFailure> {
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| TlsFailure::Setup(format!("server name {host}: {e}")))?;
        let mut tls =
            ClientConnection::new(config, name).map_err(|e| TlsFailure::Setup(e.to_string()))?;
        while tls.is_handshaking() {
            if let Err(e) = tls.complete_io(&mut socket) {
                return Err(match rustls_error(&e) {
                    // "invalid peer certificate: UnknownIssuer" and the like.
                    Some(why @ rustls::Error::InvalidCertificate(_)) => {
                        TlsFailure::Certificate(why.to_string())
                    }
                    _ => TlsFailure::Handshake(e.to_string()),
                });
            }
        }
        Ok(Stream::Tls(Box::new(StreamOwned::new(tls, socket))))
    }

    /// The socket, for timeouts and the poll.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.get_ref(),
        }
    }
}

/// Why a TLS connection did not come up.
pub enum TlsFailure {
    /// The server's certificate is not one this client trusts for this host: trying
    /// again will not change that.
    Certificate(String),
    /// The handshake broke off or timed out.
    Handshake(String),
    /// The host is not a name TLS can verify.
    Setup(String),
}

fn rustls_error(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref()?.downcast_ref::<rustls::Error>()
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}
