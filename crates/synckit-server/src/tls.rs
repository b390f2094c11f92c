//! TLS for the hub: a certificate chain and private key in PEM files, served with rustls.

use std::path::PathBuf;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use synckit_types::{Error, Result};
use tokio_rustls::TlsAcceptor;

/// Where the hub's certificate and key are (`synckit serve --tls-cert FILE --tls-key FILE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, the hub's own certificate first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl TlsFiles {
    /// Read both files and build the acceptor; every failure names the file and the fix.
    pub fn acceptor(&self) -> Result<TlsAcceptor> {
        let cert_file = self.cert.display();
        let certs = CertificateDer::pem_file_iter(&self.cert)
            .map_err(|e| {
                Error::config(format!("cannot read the TLS certificate {cert_file}: {e}"))
            })?
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| {
                Error::config(format!(
                    "the TLS certificate {cert_file} is not valid PEM: {e}"
                ))
            })?;
        if certs.is_empty() {
            return Err(Error::config(format!(
                "the TLS certificate file {cert_file} holds no CERTIFICATE block"
            )));
        }
        let key_file = self.key.display();
        let key = PrivateKeyDer::from_pem_file(&self.key).map_err(|e| {
            Error::config(format!(
                "cannot read a private key from {key_file} (PEM, PKCS#8, PKCS#1 or SEC1): {e}"
            ))
        })?;
        // ring rather than aws-lc-rs: it builds with a C compiler alone, everywhere synckit
        // builds. (rustls deprecates it for lacking post-quantum key exchange.)
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::config(format!("TLS protocol versions: {e}")))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| {
                Error::config(format!(
                    "the TLS key {key_file} does not fit the certificate {cert_file}: {e}"
                ))
            })?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}
