//! A fault-injecting TCP proxy for tests and benchmarks: drop, reset, delay, cut a response
//! mid-body or blackhole connections, by schedule or at random with a printed, replayable seed.
//!
//! The proxy listens on loopback and forwards each accepted connection to one upstream address.
//! Each connection is assigned one [`Fault`] when it is accepted, by the proxy's [`Schedule`]:
//! a fixed sequence, or random draws from a seeded generator. Calling [`FaultProxy::heal`] (or
//! [`FaultProxy::set_schedule`]) changes what later connections get, and closes connections
//! held in a blackhole, as a healed network would let their clients notice.
//!
//! ```no_run
//! # async fn demo(hub: std::net::SocketAddr) -> std::io::Result<()> {
//! use std::time::Duration;
//! use synckit_testkit::fault_proxy::{Fault, FaultProxy, Schedule};
//!
//! // Every other connection fails in one of three ways; the seed is printed to stderr.
//! let proxy = FaultProxy::start(
//!     hub,
//!     Schedule::random_from_env(0.5, vec![Fault::Reset, Fault::CutResponse { after_bytes: 100 },
//!         Fault::Delay(Duration::from_millis(50))]),
//! )
//! .await?;
//! let url = proxy.url(); // point nodes here instead of at the hub
//! // ... run the workload ...
//! proxy.heal(); // the network is fine again
//! proxy.stop().await;
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The environment variable [`Schedule::random_from_env`] reads a seed from, to replay a run.
pub const SEED_VAR: &str = "SYNCKIT_FAULT_SEED";

/// What the proxy does to one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Forward both directions faithfully.
    Pass,
    /// Accept, then close at once without forwarding anything (the client reads EOF).
    Drop,
    /// Accept, then reset the connection (the client sees "connection reset").
    Reset,
    /// Forward both directions, each chunk held back this long first.
    Delay(Duration),
    /// Forward the request; of the response, only the first `after_bytes` bytes, then close
    /// both sides: a response cut mid-header or mid-body.
    CutResponse {
        /// Response bytes delivered before the cut.
        after_bytes: usize,
    },
    /// Accept and hold the connection open without forwarding or answering, until the proxy
    /// heals, its schedule changes or it stops.
    Blackhole,
}

impl Fault {
    /// A short name, for statistics.
    pub fn name(&self) -> &'static str {
        match self {
            Fault::Pass => "pass",
            Fault::Drop => "drop",
            Fault::Reset => "reset",
            Fault::Delay(_) => "delay",
            Fault::CutResponse { .. } => "cut_response",
            Fault::Blackhole => "blackhole",
        }
    }
}

/// How the proxy picks each connection's [`Fault`].
#[derive(Debug, Clone)]
pub enum Schedule {
    /// The faults in order, one per accepted connection; connections past the list pass.
    Sequence(Vec<Fault>),
    /// For each connection, with probability `fault_rate`, one of `faults` drawn uniformly;
    /// otherwise [`Fault::Pass`]. The same seed gives the same sequence of draws.
    Random {
        /// The generator's seed; printed when the proxy starts.
        seed: u64,
        /// The share of connections that get a fault, from 0.0 to 1.0.
        fault_rate: f64,
        /// The faults to draw from; none means every connection passes.
        faults: Vec<Fault>,
    },
}

impl Schedule {
    /// Every connection passes.
    pub fn healthy() -> Schedule {
        Schedule::Sequence(Vec::new())
    }

    /// Random faults with the seed from [`SEED_VAR`] when it is set (to replay a failure), or
    /// a fresh one otherwise. The proxy prints the seed either way.
    pub fn random_from_env(fault_rate: f64, faults: Vec<Fault>) -> Schedule {
        let seed = std::env::var(SEED_VAR)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or_else(|| fastrand::u64(..));
        Schedule::Random {
            seed,
            fault_rate,
            faults,
        }
    }
}

/// The state a schedule advances as connections arrive.
#[derive(Debug)]
struct Picker {
    schedule: Schedule,
    next: usize,
    rng: fastrand::Rng,
}

impl Picker {
    fn new(schedule: Schedule) -> Picker {
        let rng = match &schedule {
            Schedule::Random { seed, .. } => fastrand::Rng::with_seed(*seed),
            Schedule::Sequence(_) => fastrand::Rng::with_seed(0),
        };
        Picker {
            schedule,
            next: 0,
            rng,
        }
    }

    fn pick(&mut self) -> Fault {
        match &self.schedule {
            Schedule::Sequence(faults) => {
                let fault = faults.get(self.next).cloned().unwrap_or(Fault::Pass);
                self.next += 1;
                fault
            }
            Schedule::Random {
                fault_rate, faults, ..
            } => {
                if faults.is_empty() || self.rng.f64() >= *fault_rate {
                    Fault::Pass
                } else {
                    faults[self.rng.usize(..faults.len())].clone()
                }
            }
        }
    }
}

#[derive(Debug)]
struct Shared {
    picker: Mutex<Picker>,
    counts: Mutex<BTreeMap<&'static str, u64>>,
    /// Bumped by every schedule change; blackholed connections close when it moves.
    generation: watch::Sender<u64>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running proxy; see the module docs. Dropping it stops accepting and closes every
/// connection it forwards.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Listen on an ephemeral loopback port and forward to `upstream` under `schedule`. A
    /// random schedule's seed is printed to stderr, with how to replay it.
    pub async fn start(upstream: SocketAddr, schedule: Schedule) -> io::Result<FaultProxy> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        if let Schedule::Random { seed, .. } = &schedule {
            eprintln!(
                "fault proxy {addr}: random faults with seed {seed} (replay: {SEED_VAR}={seed})"
            );
        }
        let shared = Arc::new(Shared {
            picker: Mutex::new(Picker::new(schedule)),
            counts: Mutex::new(BTreeMap::new()),
            generation: watch::channel(0).0,
        });
        let (shutdown, stopped) = watch::channel(false);
        let task = tokio::spawn(accept_loop(
            listener,
            upstream,
            Arc::clone(&shared),
            stopped,
        ));
        Ok(FaultProxy {
            addr,
            shared,
            shutdown,
            task: Some(task),
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://` and [`FaultProxy::addr`], for HTTP clients.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Use `schedule` for the connections accepted from now on, and close blackholed ones.
    pub fn set_schedule(&self, schedule: Schedule) {
        if let Schedule::Random { seed, .. } = &schedule {
            eprintln!(
                "fault proxy {}: random faults with seed {seed} (replay: {SEED_VAR}={seed})",
                self.addr
            );
        }
        *lock(&self.shared.picker) = Picker::new(schedule);
        self.shared.generation.send_modify(|g| *g += 1);
    }

    /// Let every later connection pass, and close blackholed ones.
    pub fn heal(&self) {
        self.set_schedule(Schedule::healthy());
    }

    /// Connections accepted so far, by the name of the fault they got ([`Fault::name`]).
    pub fn counts(&self) -> BTreeMap<&'static str, u64> {
        lock(&self.shared.counts).clone()
    }

    /// Stop accepting, close every connection and wait for the proxy's tasks to end.
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    shared: Arc<Shared>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = stopped.changed() => break,
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else { continue };
                let fault = lock(&shared.picker).pick();
                *lock(&shared.counts).entry(fault.name()).or_default() += 1;
                let generation = shared.generation.subscribe();
                let stopped = stopped.clone();
                connections.spawn(async move {
                    tokio::select! {
                        _ = serve(client, upstream, fault, generation) => {}
                        _ = wait_true(stopped) => {}
                    }
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    // Dropping the set aborts every connection task, closing its sockets.
    connections.shutdown().await;
}

async fn wait_true(mut flag: watch::Receiver<bool>) {
    while !*flag.borrow_and_update() {
        if flag.changed().await.is_err() {
            return;
        }
    }
}

/// One connection under `fault`. Errors end the connection; the proxy goes on.
async fn serve(
    client: TcpStream,
    upstream: SocketAddr,
    fault: Fault,
    mut generation: watch::Receiver<u64>,
) {
    match fault {
        Fault::Drop => drop(client),
        Fault::Reset => {
            let _ = client.set_zero_linger();
            drop(client);
        }
        Fault::Blackhole => {
            generation.mark_unchanged();
            let _ = generation.changed().await;
            drop(client);
        }
        Fault::Pass => forward(client, upstream, None, None).await,
        Fault::Delay(delay) => forward(client, upstream, Some(delay), None).await,
        Fault::CutResponse { after_bytes } => {
            forward(client, upstream, None, Some(after_bytes)).await;
        }
    }
}

/// Copy both ways until either side closes; `delay` holds back each chunk, `cut` limits the
/// bytes delivered from upstream, after which both sides are closed.
async fn forward(
    client: TcpStream,
    upstream: SocketAddr,
    delay: Option<Duration>,
    cut: Option<usize>,
) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let up = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
            if server_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = server_write.shutdown().await;
    };
    let down = async {
        let mut buf = vec![0u8; 16 * 1024];
        let mut left = cut.unwrap_or(usize::MAX);
        while left > 0 {
            let n = match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n.min(left),
            };
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
            if client_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
            left -= n;
        }
        let _ = client_write.shutdown().await;
    };
    if cut.is_some() {
        // The response was cut: close both sides as soon as the downstream copy ends.
        tokio::select! {
            () = down => {}
            () = async { up.await; std::future::pending::<()>().await } => {}
        }
    } else {
        tokio::join!(up, down);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn picks(schedule: Schedule, n: usize) -> Vec<Fault> {
        let mut picker = Picker::new(schedule);
        (0..n).map(|_| picker.pick()).collect()
    }

    fn random(seed: u64, fault_rate: f64) -> Schedule {
        Schedule::Random {
            seed,
            fault_rate,
            faults: vec![Fault::Drop, Fault::Reset, Fault::Blackhole],
        }
    }

    #[test]
    fn a_sequence_is_followed_then_everything_passes() {
        let got = picks(Schedule::Sequence(vec![Fault::Reset, Fault::Drop]), 4);
        assert_eq!(got, [Fault::Reset, Fault::Drop, Fault::Pass, Fault::Pass]);
        assert!(
            picks(Schedule::healthy(), 3)
                .iter()
                .all(|f| *f == Fault::Pass)
        );
    }

    #[test]
    fn the_same_seed_replays_the_same_faults() {
        let a = picks(random(42, 0.5), 200);
        assert_eq!(a, picks(random(42, 0.5), 200));
        assert_ne!(a, picks(random(43, 0.5), 200));
        let faulty = a.iter().filter(|f| **f != Fault::Pass).count();
        assert!((50..150).contains(&faulty), "{faulty} of 200 at rate 0.5");
        for fault in [Fault::Drop, Fault::Reset, Fault::Blackhole] {
            assert!(a.contains(&fault), "{fault:?} never drawn");
        }
    }

    #[test]
    fn rates_zero_and_one_and_an_empty_fault_list() {
        assert!(picks(random(1, 0.0), 100).iter().all(|f| *f == Fault::Pass));
        assert!(picks(random(1, 1.0), 100).iter().all(|f| *f != Fault::Pass));
        let none = Schedule::Random {
            seed: 1,
            fault_rate: 1.0,
            faults: Vec::new(),
        };
        assert!(picks(none, 10).iter().all(|f| *f == Fault::Pass));
    }
}
