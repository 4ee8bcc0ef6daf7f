//! TLS for [`serve`](crate::serve) (feature `tls`): rustls, with HTTP/2 or
//! HTTP/1.1 chosen by ALPN.
//!
//! Browsers speak HTTP/2 only over TLS, and over HTTP/1.1 they open at most
//! six connections per origin, shared by all tabs: the seventh `EventSource`
//! never opens. Over HTTP/2 every stream of an origin shares one connection.

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{self, ServerConfig};

/// A certificate chain and key for [`Serve::tls`](crate::Serve::tls).
///
/// ```no_run
/// # async fn run(app: axum::Router) -> Result<(), Box<dyn std::error::Error>> {
/// use sse_runtime::TlsConfig;
///
/// let tls = TlsConfig::from_pem_files("cert.pem", "key.pem")?;
/// let listener = tokio::net::TcpListener::bind("0.0.0.0:443").await?;
/// sse_runtime::serve(listener, app).tls(tls).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct TlsConfig {
    pub(crate) acceptor: TlsAcceptor,
}

/// Why a TLS configuration could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The PEM held no certificate, or no private key, or did not parse.
    #[error("{0}")]
    Pem(String),
    /// rustls refused the certificate and key.
    #[error("the certificate and key were refused: {0}")]
    Rustls(#[from] rustls::Error),
}

impl TlsConfig {
    /// From a PEM file holding the certificate chain (leaf first) and one
    /// holding its private key.
    pub fn from_pem_files(
        certificates: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<TlsConfig, TlsError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                path: path.display().to_string(),
                source,
            })
        };
        TlsConfig::from_pem(&read(certificates.as_ref())?, &read(key.as_ref())?)
    }

    /// From PEM text: the certificate chain (leaf first) and its private key.
    pub fn from_pem(certificates: &[u8], key: &[u8]) -> Result<TlsConfig, TlsError> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let chain = CertificateDer::pem_slice_iter(certificates)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| TlsError::Pem(format!("certificates: {error}")))?;
        if chain.is_empty() {
            return Err(TlsError::Pem("no certificate in the PEM".into()));
        }
        let key = PrivateKeyDer::from_pem_slice(key)
            .map_err(|error| TlsError::Pem(format!("private key: {error}")))?;
        let config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_no_client_auth()
                .with_single_cert(chain, key)?;
        Ok(TlsConfig::from_rustls(config))
    }

    /// From a rustls configuration of your own; its ALPN protocols are set to
    /// `h2` and `http/1.1`.
    pub fn from_rustls(mut config: ServerConfig) -> TlsConfig {
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        TlsConfig {
            acceptor: TlsAcceptor::from(Arc::new(config)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_without_a_certificate_or_with_a_bad_key_is_refused_with_the_reason() {
        let error = TlsConfig::from_pem(b"", b"").err().expect("refused");
        assert!(error.to_string().contains("no certificate"), "{error}");
        let cert = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let error = TlsConfig::from_pem(cert, b"not a key")
            .err()
            .expect("refused");
        assert!(
            matches!(error, TlsError::Pem(_) | TlsError::Rustls(_)),
            "{error}"
        );
        let error = TlsConfig::from_pem_files("/nonexistent/cert.pem", "/nonexistent/key.pem")
            .err()
            .expect("refused");
        assert!(
            error.to_string().starts_with("/nonexistent/cert.pem"),
            "{error}"
        );
    }
}
