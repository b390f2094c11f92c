//! Shared test support: the PostgreSQL URL gate, fresh random schemas (dropped at the end) and
//! raw connections for tests that damage what the store wrote.
#![allow(dead_code)] // each test binary uses a different part of this module.

use std::sync::Mutex;
use std::time::Duration;

use synckit_store_postgres::{PostgresConfig, PostgresStore};

pub use synckit_testkit::services::postgres_url;

/// A random suffix for schema and role names.
pub fn random_suffix() -> String {
    format!("{}_{:016x}", std::process::id(), fastrand::u64(..))
}

/// One test's database: every schema and role it creates is dropped when it is dropped.
pub struct TestDb {
    pub url: String,
    schemas: Mutex<Vec<String>>,
    roles: Mutex<Vec<String>>,
}

impl TestDb {
    /// The test database, or `None` when the test is skipped.
    pub fn new(test: &str) -> Option<TestDb> {
        Some(TestDb {
            url: postgres_url(test)?,
            schemas: Mutex::new(Vec::new()),
            roles: Mutex::new(Vec::new()),
        })
    }

    /// A new schema name, unique to this run, dropped at the end.
    pub fn fresh_schema(&self) -> String {
        let schema = format!("synckit_test_{}", random_suffix());
        self.schemas.lock().unwrap().push(schema.clone());
        schema
    }

    /// Remember a role to drop at the end.
    pub fn track_role(&self, role: &str) {
        self.roles.lock().unwrap().push(role.to_owned());
    }

    /// A test configuration over `schema`: a small pool (the machine has 2 cores).
    pub fn config(&self, schema: &str) -> PostgresConfig {
        PostgresConfig::new(self.url.clone())
            .with_schema(schema)
            .with_pool_size(4)
            .with_statement_timeout(Some(Duration::from_secs(60)))
    }

    /// A store over `schema`.
    pub async fn open(&self, schema: &str) -> PostgresStore {
        PostgresStore::connect(self.config(schema))
            .await
            .unwrap_or_else(|e| panic!("connecting to schema {schema}: {e}"))
    }

    /// A store over a fresh schema.
    pub async fn store(&self) -> PostgresStore {
        let schema = self.fresh_schema();
        self.open(&schema).await
    }

    /// A plain driver connection, for tests that write behind the store's back.
    pub async fn raw(&self) -> tokio_postgres::Client {
        raw_client(&self.url).await
    }

    /// A libpq key-value connection string for `user` on the test server (no password:
    /// the test server trusts local connections).
    pub fn url_as(&self, user: &str) -> String {
        let config: tokio_postgres::Config = self.url.parse().unwrap();
        let host = match &config.get_hosts()[0] {
            tokio_postgres::config::Host::Tcp(host) => host.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let dbname = config.get_dbname().unwrap_or("postgres");
        format!("host={host} port={port} user={user} dbname={dbname}")
    }
}

/// A plain driver connection to `url`, its connection task spawned.
pub async fn raw_client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let schemas = std::mem::take(&mut *self.schemas.lock().unwrap_or_else(|e| e.into_inner()));
        let roles = std::mem::take(&mut *self.roles.lock().unwrap_or_else(|e| e.into_inner()));
        if schemas.is_empty() && roles.is_empty() {
            return;
        }
        let url = self.url.clone();
        // Drop runs inside the test's runtime: clean up on a thread with its own.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let client = raw_client(&url).await;
                // A failed test can leave a session holding locks until its runtime is gone:
                // give up on the cleanup rather than wait for it forever.
                let _ = client.batch_execute("SET lock_timeout = '10s'").await;
                if !schemas.is_empty() {
                    let list: Vec<String> = schemas.iter().map(|s| format!("\"{s}\"")).collect();
                    let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", list.join(", "));
                    if let Err(e) = client.batch_execute(&sql).await {
                        eprintln!("could not drop test schemas {schemas:?}: {e}");
                    }
                }
                for role in roles {
                    if let Err(e) = client
                        .batch_execute(&format!("DROP ROLE IF EXISTS \"{role}\""))
                        .await
                    {
                        eprintln!("could not drop test role {role}: {e}");
                    }
                }
            });
        });
        let _ = cleanup.join();
    }
}
