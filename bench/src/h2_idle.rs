//! Idle event streams multiplexed over one HTTP/2 connection over TLS: the
//! server's memory per stream where browsers share one connection per origin.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{self, DigitallySignedStruct, SignatureScheme};

use crate::sample_process;
use crate::server_process::start_with;

/// Accepts the server's self-signed certificate: this talks to a server it
/// started itself, on 127.0.0.1.
#[derive(Debug)]
struct TrustTheTestServer;

impl ServerCertVerifier for TrustTheTestServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Starts `bench-ours` over TLS, opens `streams` ping streams over one
/// HTTP/2 connection, and returns the server's RSS growth per stream.
pub async fn rss_per_stream(streams: usize) -> f64 {
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let dir = std::env::temp_dir().join(format!("sse-h2-idle-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
    let server = start_with(
        "bench-ours",
        &[
            ("TLS_CERT", cert.display().to_string()),
            ("TLS_KEY", key.display().to_string()),
        ],
    )
    .await;
    let before = sample_process(server.pid).unwrap_or_default().rss_bytes;

    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(TrustTheTestServer))
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap();
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(connection);
    let mut bodies = Vec::with_capacity(streams);
    for _ in 0..streams {
        let mut sender = sender.clone();
        let request = http::Request::get(format!("https://{}/events/sse-stream", server.addr))
            .body(Empty::<bytes::Bytes>::new())
            .unwrap();
        sender.ready().await.unwrap();
        let response = sender.send_request(request).await.unwrap();
        // Read each stream, so the server's windows never fill up.
        let mut body = response.into_body();
        bodies.push(tokio::spawn(async move {
            while let Some(Ok(_)) = body.frame().await {}
        }));
    }
    // Let every stream see a ping, so their buffers are in use.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let after = sample_process(server.pid).unwrap_or_default().rss_bytes;
    for body in bodies {
        body.abort();
    }
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    (after as f64 - before as f64) / streams as f64
}
