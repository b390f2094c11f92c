//! Running a hub: bind, accept within the connection limit, serve each connection with header
//! timeouts and size limits, shut down gracefully, close the store.

use std::net::SocketAddr;
use std::sync::Arc;

use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use synckit_types::{DynEventStore, Error, Result};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::HubConfig;
use crate::hub::{HubState, SharedHub};
use crate::routes::router;
use crate::tls::TlsFiles;

/// A hub over an `EventStore`, ready to serve.
#[derive(Debug)]
pub struct Hub {
    state: SharedHub,
    config: HubConfig,
}

impl Hub {
    /// A hub over `store` configured by `config`.
    pub fn new(store: DynEventStore, config: HubConfig) -> Result<Hub> {
        Ok(Hub {
            state: Arc::new(HubState::new(store, &config)?),
            config,
        })
    }

    /// The shared state (metrics, store, shutdown token).
    pub fn state(&self) -> &SharedHub {
        &self.state
    }

    /// The routes, for embedding the hub in another axum application.
    pub fn router(&self) -> axum::Router {
        router(self.state.clone())
    }

    /// Bind `config.listen` (port 0 picks a free port), check the configuration against the
    /// real address, and serve in the background.
    pub async fn start(self) -> Result<RunningHub> {
        let listener = TcpListener::bind(self.config.listen).await.map_err(|e| {
            Error::config(format!("cannot listen on {}: {e}", self.config.listen)).with_source(e)
        })?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::internal(format!("local address: {e}")))?;
        self.config.validate(addr)?;
        let acceptor = self
            .config
            .tls
            .as_ref()
            .map(TlsFiles::acceptor)
            .transpose()?;
        let scheme = if acceptor.is_some() { "https" } else { "http" };
        let state = self.state.clone();
        let app = self.router();
        let task = tokio::spawn(async move {
            serve(listener, app, acceptor, state.clone()).await;
            // Flush and release the store once in-flight requests are done.
            state.store.close().await
        });
        tracing::info!(%addr, scheme, anonymous = self.state.auth.is_anonymous(), "hub listening");
        Ok(RunningHub {
            addr,
            scheme,
            state: self.state,
            task,
        })
    }
}

/// A hub serving in the background. Dropping it does not stop it; call [`RunningHub::shutdown`].
#[derive(Debug)]
pub struct RunningHub {
    addr: SocketAddr,
    scheme: &'static str,
    state: SharedHub,
    task: JoinHandle<Result<()>>,
}

impl RunningHub {
    /// The address the hub listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://HOST:PORT`, or `https://` when serving TLS.
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// The shared state (metrics, store).
    pub fn state(&self) -> &SharedHub {
        &self.state
    }

    /// Stop accepting, end streams, finish in-flight requests, close the store.
    pub async fn shutdown(self) -> Result<()> {
        self.state.shutdown.cancel();
        self.wait().await
    }

    /// Wait until the hub stops (after [`RunningHub::shutdown`] or a signal handled elsewhere).
    pub async fn wait(self) -> Result<()> {
        self.task
            .await
            .map_err(|e| Error::internal(format!("hub task failed: {e}")))?
    }
}

/// Accept until shutdown, then let every connection finish its in-flight request.
async fn serve(
    listener: TcpListener,
    app: axum::Router,
    acceptor: Option<TlsAcceptor>,
    state: SharedHub,
) {
    let limits = &state.limits;
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(crate::config::MIN_HEADER_BYTES));
    let connections = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            biased;
            _ = state.shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: wait a little rather than spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            state.metrics.connections_refused.inc();
            connections.spawn(refuse(stream));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (http, app, shutdown) = (http.clone(), app.clone(), state.shutdown.clone());
        let acceptor = acceptor.clone();
        let handshake_timeout = limits.header_read_timeout;
        connections.spawn(async move {
            match acceptor {
                None => serve_connection(stream, &http, app, shutdown).await,
                Some(acceptor) => {
                    // The handshake counts against the header deadline, so a client that
                    // opens TLS slowly is cut off like one that sends headers slowly.
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => serve_connection(tls, &http, app, shutdown).await,
                        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// Serve HTTP/1.1 (and WebSocket upgrades) on one connection until it ends; on shutdown,
/// finish the request in flight and close.
async fn serve_connection<I>(
    io: I,
    http: &hyper::server::conn::http1::Builder,
    app: axum::Router,
    shutdown: CancellationToken,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = TowerToHyperService::new(app);
    let connection = http
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    let mut connection = std::pin::pin!(connection);
    let served = tokio::select! {
        served = connection.as_mut() => served,
        _ = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = served {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Answer a connection over the limit with 503 and close it, spending at most a second on it.
async fn refuse(mut stream: TcpStream) {
    const BODY: &str = r#"{"error":{"code":"too_many_connections","message":"the hub is at its connection limit; retry later"}}"#;
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
}
