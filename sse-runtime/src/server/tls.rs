//! TLS for [`serve`](crate::serve) (feature `tls`): rustls, with HTTP/2 or
//! HTTP/1.1 chosen by ALPN.
//!
//! Browsers speak HTTP/2 only over TLS, and over HTTP/1.1 they open at most
//! six connections per origin, shared by all tabs: the seventh `EventSource`
//! never opens. Over HTTP/2 every stream of an origin shares one connection.

use std::path::Path;
use std::sync::Arc;

use std::net::SocketAddr;
use std::time::Duration;
use tokio_rustls::TlsAcceptor;

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio_rustls::rustls::{self, ServerConfig};

use crate::server::tls_watch::Requests;
use crate::server::write_stall::{StallTimeout, WriteStallIo};
use crate::server::{Serve, Shared, drive, hyper_service};

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
    http2_idle_timeout: Duration,
    http2_ping_interval: Duration,
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
            http2_idle_timeout: TlsConfig::DEFAULT_HTTP2_IDLE_TIMEOUT,
            http2_ping_interval: TlsConfig::DEFAULT_HTTP2_PING_INTERVAL,
        }
    }

    /// The default of [`http2_idle_timeout`](TlsConfig::http2_idle_timeout).
    pub const DEFAULT_HTTP2_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
    /// The default of [`http2_ping_interval`](TlsConfig::http2_ping_interval).
    pub const DEFAULT_HTTP2_PING_INTERVAL: Duration = Duration::from_secs(20);

    /// How long an HTTP/2 connection stays open with no stream (default
    /// 60 s; zero is taken as one millisecond). Over HTTP/1.1 the
    /// [header read timeout](crate::Serve::header_read_timeout) bounds an
    /// idle connection.
    #[must_use]
    pub fn http2_idle_timeout(mut self, timeout: Duration) -> Self {
        self.http2_idle_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// How often an HTTP/2 connection is pinged (default 20 s); a peer that
    /// leaves a ping unanswered for as long again is taken as dead and its
    /// connection closed, with its streams and their registry entries.
    /// Zero is taken as one millisecond.
    #[must_use]
    pub fn http2_ping_interval(mut self, interval: Duration) -> Self {
        self.http2_ping_interval = interval.max(Duration::from_millis(1));
        self
    }
}

/// A TLS connection: the handshake, then HTTP/2 or HTTP/1.1 as ALPN chose,
/// both through hyper. The header read timeout runs from the accept to the
/// first request, whatever the protocol: a client that completes the
/// handshake and then says nothing is closed as a plain one is. An HTTP/2
/// connection is pinged (a dead peer is found within the ping interval
/// twice over), carries at most [`H2_MAX_STREAMS`] streams with
/// [`H2_SEND_BUFFER`] of unsent data each, and closes after its idle
/// timeout with no stream open. A stream whose client opens no
/// flow-control window ends after the write-stall timeout, as a connection
/// whose client reads nothing does.
pub(super) async fn serve_tls(
    shared: Arc<Shared>,
    io: WriteStallIo<TcpStream>,
    tls: TlsConfig,
    stall: StallTimeout,
    peer: SocketAddr,
) {
    let limit = shared
        .limits
        .header_read_timeout
        .unwrap_or(Serve::DEFAULT_HEADER_READ_TIMEOUT);
    let first_request_by = tokio::time::Instant::now() + limit;
    let stream = match tokio::time::timeout(limit, tls.acceptor.accept(io)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            tracing::debug!(%error, %peer, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let requests = Arc::new(Requests::default());
    let service = requests.counting(hyper_service(&shared, &stall, peer));
    let mut builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(shared.limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(tls.http2_ping_interval)
        .keep_alive_timeout(tls.http2_ping_interval)
        .max_concurrent_streams(H2_MAX_STREAMS)
        .max_send_buf_size(H2_SEND_BUFFER);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    // Closed (by dropping it) when no request comes in time, or when an
    // HTTP/2 connection stays without a stream.
    let watched = requests.watch(
        connection,
        first_request_by,
        tls.http2_idle_timeout,
        stall,
        peer,
    );
    drive(watched, shared.phase.clone(), peer, |watched| {
        watched.connection().graceful_shutdown();
    })
    .await;
}

/// The most streams one HTTP/2 connection carries at once. A page opens a
/// handful of event streams; 64 leaves room for many tabs of one origin.
const H2_MAX_STREAMS: u32 = 64;
/// The most unsent data one HTTP/2 stream holds: with [`H2_MAX_STREAMS`],
/// a connection whose client opens no flow-control window holds at most
/// 4 MiB here, plus what each stream's response holds (one batch, at most
/// 64 KiB).
const H2_SEND_BUFFER: usize = 64 * 1024;

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
