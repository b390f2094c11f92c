//! Test helpers: a sink that records every attempt, follows a script of failures, can be held
//! at a gate, and reports successful writes on a channel.
#![allow(dead_code)] // each test binary uses a different part of the helpers.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use synckit_buffer::{Batch, Sink, SinkError};
use synckit_types::Error;
use tokio::sync::{Semaphore, mpsc};

/// A scriptable sink for tests.
pub struct TestSink<T> {
    written: Mutex<Vec<Batch<T>>>,
    attempts: Mutex<Vec<Batch<T>>>,
    script: Mutex<VecDeque<Error>>,
    fail_always: AtomicBool,
    permanent: AtomicBool,
    gate: Option<Arc<Semaphore>>,
    delay: Option<Duration>,
    entered: Option<mpsc::UnboundedSender<usize>>,
    done: Mutex<Option<mpsc::UnboundedSender<Batch<T>>>>,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
}

impl<T> fmt::Debug for TestSink<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TestSink")
    }
}

impl<T> Default for TestSink<T> {
    fn default() -> Self {
        TestSink {
            written: Mutex::new(Vec::new()),
            attempts: Mutex::new(Vec::new()),
            script: Mutex::new(VecDeque::new()),
            fail_always: AtomicBool::new(false),
            permanent: AtomicBool::new(false),
            gate: None,
            delay: None,
            entered: None,
            done: Mutex::new(None),
            in_flight: Arc::new(AtomicUsize::new(0)),
            max_in_flight: Arc::new(AtomicUsize::new(0)),
        }
    }
}

impl<T: Clone + Send + Sync + 'static> TestSink<T> {
    pub fn new() -> Self {
        TestSink::default()
    }

    /// Each write waits for a permit of `gate` (which it keeps).
    pub fn gated(mut self, gate: Arc<Semaphore>) -> Self {
        self.gate = Some(gate);
        self
    }

    /// Each write takes `delay` (tokio time).
    pub fn delayed(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    /// Report each write's start (batch length) on a channel.
    pub fn on_enter(mut self, tx: mpsc::UnboundedSender<usize>) -> Self {
        self.entered = Some(tx);
        self
    }

    /// Share in-flight counters with other sinks (to measure concurrency across stores).
    pub fn counting(mut self, in_flight: Arc<AtomicUsize>, max: Arc<AtomicUsize>) -> Self {
        self.in_flight = in_flight;
        self.max_in_flight = max;
        self
    }

    /// Report every successful batch on the returned channel.
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<Batch<T>> {
        let (tx, rx) = mpsc::unbounded_channel();
        *self.done.lock().unwrap() = Some(tx);
        rx
    }

    /// The next writes fail with these errors, in order.
    pub fn fail_next(&self, errors: impl IntoIterator<Item = Error>) {
        self.script.lock().unwrap().extend(errors);
    }

    /// Every write fails (retryable unless `permanent`) until told otherwise.
    pub fn fail_always(&self, on: bool, permanent: bool) {
        self.permanent.store(permanent, Ordering::SeqCst);
        self.fail_always.store(on, Ordering::SeqCst);
    }

    pub fn written(&self) -> Vec<Batch<T>> {
        self.written.lock().unwrap().clone()
    }

    pub fn written_items(&self) -> Vec<T> {
        self.written()
            .into_iter()
            .flat_map(Batch::into_items)
            .collect()
    }

    pub fn sizes(&self) -> Vec<usize> {
        self.written().iter().map(Batch::len).collect()
    }

    pub fn attempts(&self) -> Vec<Batch<T>> {
        self.attempts.lock().unwrap().clone()
    }

    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl<T: Clone + Send + Sync + 'static> Sink<T> for TestSink<T> {
    async fn write(&self, batch: &Batch<T>) -> Result<(), SinkError> {
        self.attempts.lock().unwrap().push(batch.clone());
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        if let Some(tx) = &self.entered {
            let _ = tx.send(batch.len());
        }
        if let Some(gate) = &self.gate {
            gate.acquire().await.unwrap().forget();
        }
        if let Some(delay) = self.delay {
            tokio::time::sleep(delay).await;
        }
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        if let Some(error) = self.script.lock().unwrap().pop_front() {
            return Err(error);
        }
        if self.fail_always.load(Ordering::SeqCst) {
            return Err(if self.permanent.load(Ordering::SeqCst) {
                Error::invalid_input("refused for good")
            } else {
                Error::unavailable("down for now")
            });
        }
        self.written.lock().unwrap().push(batch.clone());
        if let Some(tx) = &*self.done.lock().unwrap() {
            let _ = tx.send(batch.clone());
        }
        Ok(())
    }
}

/// A retry policy with short, fixed waits.
pub fn quick_retry() -> synckit_buffer::RetryPolicy {
    let mut retry = synckit_buffer::RetryPolicy::default();
    retry.initial_backoff = Duration::from_millis(10);
    retry.max_backoff = Duration::from_millis(10);
    retry.jitter = 0.0;
    retry
}
