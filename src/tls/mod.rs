//! The rustls settings of both ends: the server's certificate and key ([`server_config`]),
//! and what a client trusts ([`Trust`], [`client_config`]).

mod client;
mod server;

use std::path::Path;
use std::sync::Arc;

use rustls::CipherSuite;
use rustls::crypto::CryptoProvider;
use rustls::crypto::ring::kx_group;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

pub use client::{Trust, client_config};
pub use server::server_config;

/// Why TLS settings cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate file cannot be read or holds no certificate.
    #[error("certificate {path}: {message}")]
    Cert {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// The key file cannot be read or holds no private key.
    #[error("key {path}: {message}")]
    Key {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// rustls refused the pair (the key does not match, an unsupported key type).
    #[error("certificate and key: {0}")]
    Pair(String),
    /// No trust root to verify a server with.
    #[error("trust roots: {0}")]
    Roots(String),
}

/// The crypto both ends use: ring's, preferring what browsers prefer.
///
/// ring, not aws-lc-rs: it builds with nothing but a C compiler. rustls marks its provider
/// deprecated for lacking post-quantum key exchange, which TLS 1.3 with X25519 and P-256
/// does without. It lists P-384 first, which costs about 1 ms of CPU per handshake on each
/// side against 0.2 ms for X25519; and AES-128-GCM is cheaper per byte than AES-256 for
/// the same safety margin in practice. The sets are rustls' defaults, only reordered.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    #[allow(deprecated)]
    let mut p = rustls::crypto::ring::default_provider();
    p.kx_groups = vec![kx_group::X25519, kx_group::SECP256R1, kx_group::SECP384R1];
    // A stable sort: the AES-128 suites move ahead, the others keep their order.
    p.cipher_suites.sort_by_key(|s| {
        !matches!(
            s.suite(),
            CipherSuite::TLS13_AES_128_GCM_SHA256
                | CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                | CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
        )
    });
    Arc::new(p)
}

/// Every certificate in the PEM file at `path`; at least one.
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |message: String| TlsError::Cert {
        path: path.display().to_string(),
        message,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no certificate in the file".into()));
    }
    Ok(certs)
}
