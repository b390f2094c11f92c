//! The HTTP transport over TLS: a hub serving https with a certificate from a private CA passes
//! the transport conformance suite for a node that trusts that CA, and refuses, with a clear
//! error, nodes that trust only Mozilla's roots or an unrelated CA, or speak plain HTTP to it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;

use synckit_server::{Hub, HubConfig, RunningHub, TlsFiles};
use synckit_store_memory::MemoryStore;
use synckit_testkit::tls::TestCerts;
use synckit_testkit::transport_suite::{TransportFixture, transport_suite};
use synckit_transport_http::{HttpConfig, HttpTransport};
use synckit_types::{ErrorKind, Transport};

async fn https_hub(certs: &TestCerts) -> RunningHub {
    let config = HubConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        tokens: vec!["ta=a:write".parse().unwrap(), "tb=b:write".parse().unwrap()],
        tls: Some(TlsFiles {
            cert: certs.cert.clone(),
            key: certs.key.clone(),
        }),
        ..HubConfig::default()
    };
    Hub::new(Arc::new(MemoryStore::new()), config)
        .unwrap()
        .start()
        .await
        .unwrap()
}

fn transport(url: &str, token: &str, ca_file: Option<PathBuf>) -> HttpTransport {
    HttpTransport::with_config(HttpConfig {
        ca_file,
        ..HttpConfig::new(url, Some(token.to_owned()))
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_passes_the_suite_with_the_hub_ca() {
    let dir = tempfile::tempdir().unwrap();
    let certs = TestCerts::write(dir.path());
    let fixture = || {
        let certs = certs.clone();
        async move {
            // The hub keeps serving for the rest of the test process.
            let hub = https_hub(&certs).await;
            let url = hub.url();
            assert!(url.starts_with("https://127.0.0.1:"), "{url}");
            let connect = |token: &str| Arc::new(transport(&url, token, Some(certs.ca.clone())));
            TransportFixture {
                a: connect("ta"),
                a_again: connect("ta"),
                b: connect("tb"),
            }
        }
    };
    transport_suite(fixture).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_certificates_and_plain_http_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let certs = TestCerts::write(dir.path());
    let hub = https_hub(&certs).await;
    let url = hub.url();
    for (what, ca) in [
        ("Mozilla's roots only", None),
        ("an unrelated CA", Some(certs.other_ca.clone())),
    ] {
        let error = transport(&url, "ta", ca).head().await.unwrap_err();
        // Not retried: an untrusted certificate stays untrusted.
        assert_eq!(error.kind(), ErrorKind::Config, "{what}: {error}");
        assert!(!error.is_retryable(), "{what}: {error}");
        let text = format!("{error:#}").to_lowercase();
        assert!(
            text.contains("certificate") && text.contains("--ca-file"),
            "{what}: {text}"
        );
    }
    let plain = url.replacen("https://", "http://", 1);
    assert!(transport(&plain, "ta", None).head().await.is_err());
    // And the trusted node reaches it.
    let trusted = transport(&url, "ta", Some(certs.ca.clone()));
    assert_eq!(trusted.head().await.unwrap().get(), 0);
    hub.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_tls_files_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let certs = TestCerts::write(dir.path());
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a pem file").unwrap();
    let missing = dir.path().join("missing.pem");
    let cases = [
        (
            "missing certificate",
            missing.clone(),
            certs.key.clone(),
            "cannot read",
        ),
        (
            "certificate not PEM",
            garbage.clone(),
            certs.key.clone(),
            "no CERTIFICATE",
        ),
        (
            "missing key",
            certs.cert.clone(),
            missing.clone(),
            "private key",
        ),
        (
            "key not PEM",
            certs.cert.clone(),
            garbage.clone(),
            "private key",
        ),
        // The CA's certificate with the hub's key: a pair that does not fit.
        (
            "key of another certificate",
            certs.ca.clone(),
            certs.key.clone(),
            "does not fit",
        ),
    ];
    for (what, cert, key, expected) in cases {
        let config = HubConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            tls: Some(TlsFiles { cert, key }),
            ..HubConfig::default()
        };
        let error = Hub::new(Arc::new(MemoryStore::new()), config)
            .unwrap()
            .start()
            .await
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Config, "{what}: {error}");
        assert!(error.to_string().contains(expected), "{what}: {error}");
    }
    // The CA file of a node is checked as strictly.
    for (what, ca) in [("missing", missing), ("not PEM", garbage)] {
        let config = HttpConfig {
            ca_file: Some(ca),
            ..HttpConfig::new("https://127.0.0.1:1", None)
        };
        let error = HttpTransport::with_config(config).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Config, "CA file {what}: {error}");
    }
}
