//! A `synckit serve` child process for the network benchmarks: start, URL, resident memory,
//! metrics, stop.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The variable `cargo xtask bench net` sets to the release `synckit` binary.
const BIN_VAR: &str = "SYNCKIT_BIN";

/// A running hub process, killed when dropped.
pub struct HubProcess {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
}

impl HubProcess {
    /// Start `synckit serve` on a loopback port with `store` (`sled` or `memory`) in `data`.
    pub fn start(store: &str, data: &Path) -> Result<HubProcess> {
        HubProcess::start_with(store, data, &[])
    }

    /// [`HubProcess::start`] with more `synckit serve` arguments (tokens, a config file).
    pub fn start_with(store: &str, data: &Path, extra: &[&str]) -> Result<HubProcess> {
        let bin = binary()?;
        let mut child = Command::new(&bin)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--store",
                store,
                "--data",
            ])
            .arg(data)
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stdout = child.stdout.take().context("the hub's stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .context("the hub did not say it was listening within 30s")?;
        let Some(url) = line.strip_prefix("synckit hub listening on ") else {
            bail!("unexpected first line from the hub: {line}");
        };
        Ok(HubProcess {
            url: url.to_owned(),
            child,
        })
    }

    /// The hub's resident set size in bytes (`VmRSS` of /proc/PID/status).
    pub fn rss(&self) -> Result<u64> {
        rss_of(self.child.id())
    }

    /// A function that reads the hub's resident set size, for a sampling task.
    pub fn rss_reader(&self) -> impl Fn() -> Result<u64> + Send + 'static {
        let pid = self.child.id();
        move || rss_of(pid)
    }

    /// The value of an unlabelled metric from `/metrics`.
    pub async fn metric(&self, name: &str) -> Result<f64> {
        let address = self.url.trim_start_matches("http://");
        let mut stream = tokio::net::TcpStream::connect(address).await?;
        stream
            .write_all(format!("GET /metrics HTTP/1.0\r\nHost: {address}\r\n\r\n").as_bytes())
            .await?;
        let mut text = String::new();
        stream.read_to_string(&mut text).await?;
        text.lines()
            .find_map(|line| {
                let (metric, value) = line.split_once(' ')?;
                (metric == name).then(|| value.trim().parse::<f64>().ok())?
            })
            .with_context(|| format!("metric {name} not found in /metrics"))
    }

    /// Stop with SIGTERM (graceful shutdown) and wait for the exit.
    pub fn stop(mut self) -> Result<()> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        if !status.success() {
            bail!("kill -TERM failed");
        }
        let exit = self.child.wait()?;
        if !exit.success() {
            bail!("the hub exited with {exit}");
        }
        Ok(())
    }
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The release `synckit` binary named by [`BIN_VAR`].
fn binary() -> Result<PathBuf> {
    let path = std::env::var_os(BIN_VAR)
        .map(PathBuf::from)
        .with_context(|| {
            format!("{BIN_VAR} is not set: run this benchmark through `cargo xtask bench net`")
        })?;
    if !path.is_file() {
        bail!("{BIN_VAR}={} is not a file", path.display());
    }
    Ok(path)
}

/// `VmRSS` of process `pid`, in bytes.
pub fn rss_of(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS line")?;
    let kib: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(kib * 1024)
}
