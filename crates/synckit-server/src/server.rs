//! Running a hub: bind, serve with graceful shutdown, close the store.

use std::net::SocketAddr;
use std::sync::Arc;

use synckit_types::{DynEventStore, Error, Result};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::config::HubConfig;
use crate::hub::{HubState, SharedHub};
use crate::routes::router;

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
        let state = self.state.clone();
        let app = self.router();
        let shutdown = state.shutdown.clone();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await
                .map_err(|e| Error::unavailable(format!("serving: {e}")));
            // Flush and release the store once in-flight requests are done.
            let closed = state.store.close().await;
            served.and(closed)
        });
        tracing::info!(%addr, anonymous = self.state.auth.is_anonymous(), "hub listening");
        Ok(RunningHub {
            addr,
            state: self.state,
            task,
        })
    }
}

/// A hub serving in the background. Dropping it does not stop it; call [`RunningHub::shutdown`].
#[derive(Debug)]
pub struct RunningHub {
    addr: SocketAddr,
    state: SharedHub,
    task: JoinHandle<Result<()>>,
}

impl RunningHub {
    /// The address the hub listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://HOST:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
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
