//! The fault proxy against a real loopback server: each fault does to a connection what it
//! says, and healing lets connections through again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use synckit_testkit::fault_proxy::{Fault, FaultProxy, Schedule};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The upstream's answer to every request: 4,000 bytes, then it closes.
const RESPONSE: usize = 4_000;

/// A server that reads one line and answers [`RESPONSE`] bytes, for every connection.
async fn upstream() -> SocketAddr {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut line = Vec::new();
                let mut byte = [0u8; 1];
                while socket.read(&mut byte).await.unwrap_or(0) == 1 && byte[0] != b'\n' {
                    line.push(byte[0]);
                }
                let body: Vec<u8> = (0..RESPONSE)
                    .map(|i| u8::try_from(i % 251).unwrap())
                    .collect();
                let _ = socket.write_all(&body).await;
            });
        }
    });
    addr
}

/// Send a request line through `proxy` and read until EOF or an error.
async fn request(proxy: &FaultProxy) -> std::io::Result<Vec<u8>> {
    let mut socket = TcpStream::connect(proxy.addr()).await?;
    socket.write_all(b"GET\n").await?;
    let mut out = Vec::new();
    socket.read_to_end(&mut out).await?;
    Ok(out)
}

#[tokio::test]
async fn each_fault_does_what_it_says_in_schedule_order() {
    let server = upstream().await;
    let proxy = FaultProxy::start(
        server,
        Schedule::Sequence(vec![
            Fault::Pass,
            Fault::Drop,
            Fault::Reset,
            Fault::CutResponse { after_bytes: 100 },
            Fault::Delay(Duration::from_millis(30)),
        ]),
    )
    .await
    .unwrap();

    let whole = request(&proxy).await.unwrap();
    assert_eq!(whole.len(), RESPONSE, "pass forwards everything");

    // Drop: the client can only see the end of the stream (or a reset, if its write raced).
    match request(&proxy).await {
        Ok(bytes) => assert!(bytes.is_empty(), "drop forwarded {} bytes", bytes.len()),
        Err(e) => assert!(
            matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe),
            "{e}"
        ),
    }

    let reset = request(&proxy).await.expect_err("reset must fail the read");
    assert!(
        matches!(
            reset.kind(),
            ErrorKind::ConnectionReset | ErrorKind::BrokenPipe
        ),
        "{reset}"
    );

    let cut = request(&proxy).await.unwrap();
    assert_eq!(cut, whole[..100], "the response is cut after 100 bytes");

    let started = Instant::now();
    let delayed = request(&proxy).await.unwrap();
    assert_eq!(delayed, whole, "delay forwards everything");
    assert!(
        started.elapsed() >= Duration::from_millis(30),
        "the delay was applied"
    );

    // Past the sequence, connections pass.
    assert_eq!(request(&proxy).await.unwrap(), whole);
    let counts = proxy.counts();
    assert_eq!(counts.get("pass"), Some(&2));
    for name in ["drop", "reset", "cut_response", "delay"] {
        assert_eq!(counts.get(name), Some(&1), "{name}");
    }
    proxy.stop().await;
}

#[tokio::test]
async fn a_blackhole_holds_until_the_network_heals() {
    let server = upstream().await;
    let proxy = FaultProxy::start(server, Schedule::Sequence(vec![Fault::Blackhole]))
        .await
        .unwrap();
    let mut socket = TcpStream::connect(proxy.addr()).await.unwrap();
    socket.write_all(b"GET\n").await.unwrap();
    let mut buf = [0u8; 16];
    // Nothing comes back while the hole holds the connection.
    let held = tokio::time::timeout(Duration::from_millis(200), socket.read(&mut buf)).await;
    assert!(held.is_err(), "a blackholed connection answered: {held:?}");

    proxy.heal();
    // Healing closes the held connection, and new ones pass.
    let n = socket.read(&mut buf).await.unwrap_or(0);
    assert_eq!(n, 0, "the held connection was closed, not answered");
    assert_eq!(request(&proxy).await.unwrap().len(), RESPONSE);
    proxy.stop().await;
}

#[tokio::test]
async fn stop_closes_open_connections() {
    let server = upstream().await;
    let proxy = FaultProxy::start(server, Schedule::Sequence(vec![Fault::Blackhole]))
        .await
        .unwrap();
    let mut socket = TcpStream::connect(proxy.addr()).await.unwrap();
    socket.write_all(b"GET\n").await.unwrap();
    // Wait until the proxy has taken the connection.
    while !proxy.counts().contains_key("blackhole") {
        tokio::task::yield_now().await;
    }
    proxy.stop().await;
    let mut buf = [0u8; 16];
    let n = socket.read(&mut buf).await.unwrap_or(0);
    assert_eq!(n, 0);
}
