//! The mock over TLS, as real providers are reached: HTTP/2 or HTTP/1.1 by ALPN (or HTTP/1.1
//! only), on a certificate chain and key given as PEM. With the `test-certs` feature,
//! `TestCerts` makes a throwaway certificate authority and a certificate for `localhost` and
//! `127.0.0.1` signed by it, so tests can trust the mock without touching the system's roots.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// How long a client has to complete its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Which HTTP versions the mock offers in the TLS handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    /// `h2` and `http/1.1` (as the providers' public endpoints do); the client picks.
    Both,
    /// `http/1.1` only.
    Http1,
}

/// A server-side TLS set-up from a PEM certificate chain (leaf first) and a PEM private key.
pub fn server_config(
    cert_chain_pem: &[u8],
    key_pem: &[u8],
    alpn: Alpn,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let chain = CertificateDer::pem_slice_iter(cert_chain_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the certificate file is not valid PEM: {e}"))?;
    if chain.is_empty() {
        return Err("the certificate file holds no certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| format!("the key file holds no usable private key: {e}"))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS set-up: {e}"))?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .map_err(|e| format!("the certificate and key do not make a TLS identity: {e}"))?;
    config.alpn_protocols = match alpn {
        Alpn::Both => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        Alpn::Http1 => vec![b"http/1.1".to_vec()],
    };
    Ok(Arc::new(config))
}

/// Serves the mock over TLS on `listener` until `shutdown` completes, then lets open requests
/// finish for up to two seconds. A handshake that fails (a client that does not trust the
/// certificate, say) closes that connection only. `http2_max_streams`: the HTTP/2
/// `SETTINGS_MAX_CONCURRENT_STREAMS` the mock announces (hyper's default, 200, when `None`), as
/// providers' edges announce theirs (commonly 100 to 250).
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    http2_max_streams: Option<u32>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let acceptor = TlsAcceptor::from(tls);
    let service = TowerToHyperService::new(crate::app());
    let mut builder = auto::Builder::new(TokioExecutor::new());
    if let Some(n) = http2_max_streams {
        builder.http2().max_concurrent_streams(n);
    }
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let tcp = tokio::select! {
            r = listener.accept() => match r {
                Ok((tcp, _)) => tcp,
                Err(_) => {
                    // out of descriptors, or a connection reset before it was accepted
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // No Nagle: each streamed token leaves at once.
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let service = service.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            // a client that never completes its handshake holds nothing for long
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
            let Ok(Ok(stream)) = handshake.await else {
                return;
            };
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            let _ = watcher.watch(conn.into_owned()).await;
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(Duration::from_secs(2), graceful.shutdown()).await;
    Ok(())
}

/// A throwaway certificate authority and a server certificate it signed, for `localhost` and
/// `127.0.0.1`, all PEM: what a test needs to run the mock over TLS and have a client trust it.
#[cfg(feature = "test-certs")]
pub struct TestCerts {
    /// The authority's certificate: what a client is told to trust.
    pub ca_pem: String,
    /// The server's certificate.
    pub cert_pem: String,
    /// The server's private key.
    pub key_pem: String,
}

#[cfg(feature = "test-certs")]
impl TestCerts {
    pub fn generate() -> Result<TestCerts, String> {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
        let err = |e: rcgen::Error| format!("could not make test certificates: {e}");
        let ca_key = KeyPair::generate().map_err(err)?;
        let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        ca.distinguished_name
            .push(DnType::CommonName, "tollway-mock test CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca.self_signed(&ca_key).map_err(err)?;
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = KeyPair::generate().map_err(err)?;
        let mut leaf =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .map_err(err)?;
        leaf.distinguished_name
            .push(DnType::CommonName, "tollway-mock");
        let cert = leaf.signed_by(&key, &issuer).map_err(err)?;
        Ok(TestCerts {
            ca_pem: ca_cert.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// The mock's TLS set-up on these certificates.
    pub fn server_config(&self, alpn: Alpn) -> Result<Arc<rustls::ServerConfig>, String> {
        server_config(self.cert_pem.as_bytes(), self.key_pem.as_bytes(), alpn)
    }
}
