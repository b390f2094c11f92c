//! Throwaway certificates for TLS tests: a private CA, a hub certificate it signs for
//! `localhost` and `127.0.0.1`, and an unrelated CA that must not be trusted for it.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

/// PEM files written by [`TestCerts::write`].
#[derive(Debug, Clone)]
pub struct TestCerts {
    /// The CA that signed the hub certificate.
    pub ca: PathBuf,
    /// The hub's certificate, for `localhost` and `127.0.0.1`.
    pub cert: PathBuf,
    /// The hub's private key.
    pub key: PathBuf,
    /// A CA that signed nothing here.
    pub other_ca: PathBuf,
}

fn ca(name: &str) -> (CertificateParams, KeyPair) {
    let key = KeyPair::generate().expect("a CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    (params, key)
}

impl TestCerts {
    /// Generate fresh keys and certificates and write them as PEM into `dir`.
    pub fn write(dir: &Path) -> TestCerts {
        let (ca_params, ca_key) = ca("synckit test CA");
        let ca_cert = ca_params.self_signed(&ca_key).expect("the CA certificate");
        let issuer = Issuer::from_params(&ca_params, &ca_key);
        let hub_key = KeyPair::generate().expect("a hub key");
        let mut hub_params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("hub parameters");
        hub_params
            .distinguished_name
            .push(DnType::CommonName, "synckit test hub");
        let hub_cert = hub_params
            .signed_by(&hub_key, &issuer)
            .expect("the hub certificate");
        let (other_params, other_key) = ca("an unrelated CA");
        let other_cert = other_params
            .self_signed(&other_key)
            .expect("the other CA certificate");
        let write = |name: &str, text: String| {
            let path = dir.join(name);
            std::fs::write(&path, text).expect("writing a PEM file");
            path
        };
        TestCerts {
            ca: write("ca.crt", ca_cert.pem()),
            cert: write("hub.crt", hub_cert.pem()),
            key: write("hub.key", hub_key.serialize_pem()),
            other_ca: write("other-ca.crt", other_cert.pem()),
        }
    }
}
