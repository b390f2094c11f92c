//! The node's TLS client settings: Mozilla's roots plus an optional PEM file of extra
//! certificate authorities.

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use synckit_types::{Error, Result};

/// A rustls client configuration trusting Mozilla's roots and every certificate in `ca_file`.
pub(crate) fn client_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let file = path.display();
        let mut added = 0;
        for cert in CertificateDer::pem_file_iter(path)
            .map_err(|e| Error::config(format!("cannot read the CA file {file}: {e}")))?
        {
            let cert = cert
                .map_err(|e| Error::config(format!("the CA file {file} is not valid PEM: {e}")))?;
            roots.add(cert).map_err(|e| {
                Error::config(format!(
                    "the CA file {file} holds an unusable certificate: {e}"
                ))
            })?;
            added += 1;
        }
        if added == 0 {
            return Err(Error::config(format!(
                "the CA file {file} holds no CERTIFICATE block"
            )));
        }
    }
    // ring rather than aws-lc-rs: it builds with a C compiler alone, everywhere synckit builds.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::config(format!("TLS protocol versions: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
