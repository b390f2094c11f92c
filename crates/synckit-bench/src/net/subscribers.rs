//! Subscribers: many SSE streams on one hub while events arrive at a steady rate; latency from
//! each append's acknowledgement (and, as an upper bound, from its sending) to each delivery,
//! and the hub's memory per idle subscriber.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use futures::StreamExt;
use serde_json::json;
use synckit_transport_http::HttpTransport;
use synckit_types::{Event, Hlc, Seq, Transport};

use super::Workload;
use super::hub::HubProcess;
use crate::stats::Figure;

/// How long every subscriber may take to receive the last event after the appends end.
const DRAIN: Duration = Duration::from_secs(30);

/// When an append was sent, and when its acknowledgement came back.
type Timing = (Instant, Instant);

/// One stamped event with `w.payload` bytes of payload.
fn event(w: &Workload, n: usize) -> Result<Event> {
    Ok(Event::builder("Measured", format!("agg-{}", n % 100))
        .origin("bench")
        .hlc(Hlc::new(1_700_000_000_000 + n as u64, 0))
        .data(json!("x".repeat(w.payload)))
        .build()?)
}

/// Measure idle memory per subscriber and ack-to-delivery latency.
pub async fn bench(w: &Workload) -> Result<Vec<Figure>> {
    let dir = tempfile::tempdir()?;
    let hub = HubProcess::start("sled", &dir.path().join("hub"))?;
    let transport = Arc::new(HttpTransport::new(&hub.url, None)?);
    // Warm the hub up: one append, one stream opened and dropped.
    transport.push(&[event(w, 0)?]).await?;
    drop(transport.subscribe(Seq(1)).await?);
    wait_for_subscribers(&hub, 0).await?;
    let before = hub.rss()?;

    let mut streams = Vec::with_capacity(w.subscribers);
    for _ in 0..w.subscribers {
        streams.push(transport.subscribe(Seq(1)).await?);
    }
    wait_for_subscribers(&hub, w.subscribers).await?;
    let after = hub.rss()?;
    let per_subscriber = after.saturating_sub(before) as f64 / w.subscribers as f64;
    println!(
        "net: hub RSS {:.1} MiB before {} subscribers, {:.1} MiB with them idle",
        before as f64 / 1048576.0,
        w.subscribers,
        after as f64 / 1048576.0
    );

    let total = usize::try_from(u64::from(w.rate) * w.listen.as_secs())?;
    // acks[i]: when the append of the event with seq i + 2 was sent and when it returned.
    let acks: Arc<Mutex<Vec<Option<Timing>>>> = Arc::new(Mutex::new(vec![None; total]));
    let listeners: Vec<_> = streams
        .into_iter()
        .map(|mut stream| {
            tokio::spawn(async move {
                let mut received: Vec<(Seq, Instant)> = Vec::with_capacity(total);
                while received.len() < total {
                    let item = tokio::time::timeout(DRAIN, stream.next())
                        .await
                        .context("a subscriber waited too long for the next event")?;
                    let event = item.context("a subscription ended early")??;
                    received.push((event.seq, Instant::now()));
                }
                anyhow::Ok(received)
            })
        })
        .collect();

    let mut tick = tokio::time::interval(Duration::from_secs(1) / w.rate);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for i in 0..total {
        tick.tick().await;
        let event = event(w, i + 1)?;
        let sent = Instant::now();
        let report = transport.push(&[event]).await?;
        let acked = Instant::now();
        ensure!(
            report.head == Seq(i as u64 + 2),
            "one writer: seqs in order"
        );
        acks.lock().map_err(|_| anyhow::anyhow!("poisoned"))?[i] = Some((sent, acked));
    }

    let acks = acks
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    let mut latencies = Vec::with_capacity(total * w.subscribers);
    // From sending the append: an upper bound that no early delivery flattens.
    let mut from_send = Vec::with_capacity(total * w.subscribers);
    let mut early = 0u64;
    for listener in listeners {
        let received = listener.await??;
        for (index, (seq, at)) in received.iter().enumerate() {
            if *seq != Seq(index as u64 + 2) {
                bail!("a subscriber got seq {seq} at position {index}: not exactly once in order");
            }
            let (sent, acked) = acks[index].context("every append was acknowledged")?;
            from_send.push(at.saturating_duration_since(sent).as_secs_f64() * 1e6);
            match at.checked_duration_since(acked) {
                Some(d) => latencies.push(d.as_secs_f64() * 1e6),
                None => {
                    // Delivered before the appender saw its acknowledgement.
                    early += 1;
                    latencies.push(0.0);
                }
            }
        }
    }
    hub.stop()?;
    latencies.sort_by(f64::total_cmp);
    from_send.sort_by(f64::total_cmp);
    let pick = |sorted: &[f64], per_mille: usize| sorted[(sorted.len() - 1) * per_mille / 1000];
    let (p50, p99) = (pick(&latencies, 500), pick(&latencies, 990));
    let (send_p50, send_p99) = (pick(&from_send, 500), pick(&from_send, 990));
    println!(
        "net: {} deliveries; {early} arrived before their append's acknowledgement (counted as 0)",
        latencies.len()
    );
    Ok(vec![
        Figure {
            name: format!("hub memory per idle subscriber ({})", w.subscribers),
            value: per_subscriber / 1024.0,
            unit: "KiB",
            baseline: None,
            target: Some("< 64 KiB".into()),
            ok: Some(per_subscriber < 64.0 * 1024.0),
        },
        Figure {
            name: format!("ack -> delivery p50, {} subscribers", w.subscribers),
            value: p50 / 1000.0,
            unit: "ms",
            baseline: None,
            target: Some("< 2 ms".into()),
            ok: Some(p50 < 2_000.0),
        },
        Figure {
            name: format!("ack -> delivery p99, {} subscribers", w.subscribers),
            value: p99 / 1000.0,
            unit: "ms",
            baseline: None,
            target: Some("< 20 ms".into()),
            ok: Some(p99 < 20_000.0),
        },
        Figure {
            name: format!("append sent -> delivery p50, {} subscribers", w.subscribers),
            value: send_p50 / 1000.0,
            unit: "ms",
            baseline: None,
            target: None,
            ok: None,
        },
        Figure {
            name: format!("append sent -> delivery p99, {} subscribers", w.subscribers),
            value: send_p99 / 1000.0,
            unit: "ms",
            baseline: None,
            target: None,
            ok: None,
        },
    ])
}

/// Wait until the hub's live-subscriber gauge reads `n`.
async fn wait_for_subscribers(hub: &HubProcess, n: usize) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let live = hub.metric("synckit_subscribers").await?;
        if live == n as f64 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the hub reports {live} subscribers, expected {n}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
