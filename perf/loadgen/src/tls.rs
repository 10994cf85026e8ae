//! The client's TLS settings for `wss://`: which certificates it believes (`--ca-file`,
//! or any with `--insecure`), the name it checks the server's against, what it offers
//! (in the order browsers do), and a full handshake every time. rustls with ring, TLS
//! 1.2 and 1.3, ALPN `http/1.1`. Builds a `ClientConnection` per connection and never
//! touches a socket: the bytes go through [`crate::transport`].

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::Resumption;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::crypto::ring::kx_group;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CipherSuite, ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore};

/// Which server certificates a `wss://` run believes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// The CA certificates in this PEM file; a self-signed server certificate is its own
    /// CA.
    CaFile(PathBuf),
    /// Any certificate for any name: the bytes are encrypted as for a real client, the
    /// server is not verified. For a throwaway test certificate.
    Insecure,
}

/// What every TLS connection of a run shares.
#[derive(Debug, Clone)]
pub struct Tls {
    config: Arc<ClientConfig>,
    /// The name the certificate must carry (and the SNI, for a DNS name).
    name: ServerName<'static>,
}

impl Tls {
    /// The settings for a server called `host` (a DNS name or an IP address, without a
    /// port or brackets), trusted as `trust` says.
    pub fn new(host: &str, trust: &Trust) -> Result<Tls, String> {
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| format!("`{host}` is no server name: {e}"))?;
        let provider = Arc::new(provider());
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let mut config = match trust {
            Trust::Insecure => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth(),
            Trust::CaFile(path) => {
                let bad = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
                let mut roots = RootCertStore::empty();
                for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(&e))? {
                    roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
                }
                if roots.is_empty() {
                    return Err(bad(&"no certificate in the file"));
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            }
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        // Every connection is a new client with a full handshake. Resuming from the cache
        // all connections would share (256 entries) would make a handshake cheap or not
        // by how many connections a run has and in what order they cycle.
        config.resumption = Resumption::disabled();
        Ok(Tls {
            config: Arc::new(config),
            name,
        })
    }

    /// A fresh client connection; its ClientHello waits in it for the socket.
    pub fn connection(&self) -> io::Result<Box<ClientConnection>> {
        ClientConnection::new(Arc::clone(&self.config), self.name.clone())
            .map(Box::new)
            .map_err(io::Error::other)
    }
}

/// ring, as the server uses, offering what browsers offer first: X25519 before the NIST
/// curves and AES-128-GCM before AES-256-GCM. A rustls server takes the first group and
/// suite of the client's lists it supports, and rustls's own lists start with P-384
/// (about 1 ms of CPU per handshake on each side with ring, X25519 a tenth of that) and
/// AES-256.
fn provider() -> CryptoProvider {
    // rustls marks ring's provider deprecated for lacking post-quantum key exchange,
    // which a load test over loopback does without.
    #[allow(deprecated)]
    let mut p = rustls::crypto::ring::default_provider();
    p.kx_groups = vec![kx_group::X25519, kx_group::SECP256R1, kx_group::SECP384R1];
    // A stable sort: the AES-128 suites move ahead, the rest keep their order.
    p.cipher_suites.sort_by_key(|s| {
        !matches!(
            s.suite(),
            CipherSuite::TLS13_AES_128_GCM_SHA256
                | CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                | CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
        )
    });
    p
}

/// Believes any certificate, but still checks that the server holds its key, so the
/// handshake costs what a verified one does apart from the chain.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algs)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
