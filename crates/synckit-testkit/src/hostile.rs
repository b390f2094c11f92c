//! Hostile events: a table of pushes whose events carry control characters, oversized or too
//! deeply nested fields, clocks from the future and wrong types, each of which a hub must refuse
//! per event with a clear code while storing nothing. Runs against any hub by URL, like the
//! rest of the hub suite.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hyper::Method;
use serde_json::{Value, json};

use crate::hub_suite::{HubClient, TenantTokens, bearer, nonce};

/// The per-event limits a hub was configured with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventLimits {
    /// Bytes of one event's metadata as JSON.
    pub max_metadata_bytes: usize,
    /// Nesting depth of one event, the event object being depth 1.
    pub max_json_depth: usize,
    /// How far ahead of the hub's clock an event's `hlc` may be, in milliseconds.
    pub max_clock_drift_ms: u64,
}

impl EventLimits {
    /// The defaults of a hub: 64 KiB of metadata, depth 32, five minutes of drift.
    pub const STATED: EventLimits = EventLimits {
        max_metadata_bytes: 64 << 10,
        max_json_depth: 32,
        max_clock_drift_ms: 5 * 60 * 1000,
    };
}

/// One hostile event and the code it must be refused with.
struct Case {
    what: &'static str,
    event: Value,
    code: &'static str,
}

/// `value` wrapped in `levels` single-key objects.
fn nested(levels: usize, value: Value) -> Value {
    (0..levels).fold(value, |inner, _| json!({ "n": inner }))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn cases(run: &str, limits: EventLimits) -> Vec<Case> {
    let id = |n: usize| format!("{run}-hostile-{n}");
    let base = |n: usize| json!({"id": id(n), "kind": "Noted", "aggregate_id": format!("hostile-{run}"), "data": {}});
    let with = |n: usize, field: &str, value: Value| {
        let mut event = base(n);
        event[field] = value;
        event
    };
    let long = "x".repeat(synckit_types::MAX_ID_LEN + 1);
    // The event object is depth 1 and `data` adds one more, so this many levels in `data`
    // land exactly one past the limit.
    let too_deep = nested(limits.max_json_depth, json!(1));
    let far_future = now_ms() + limits.max_clock_drift_ms + 24 * 3600 * 1000;
    let big_metadata = json!({ "pad": "m".repeat(limits.max_metadata_bytes) });
    let case = |what, event, code| Case { what, event, code };
    vec![
        case(
            "id with SOH",
            with(1, "id", json!(format!("{run}\u{1}"))),
            "invalid_id",
        ),
        case(
            "id with newline",
            with(2, "id", json!(format!("{run}\nx"))),
            "invalid_id",
        ),
        case(
            "id with NUL",
            with(3, "id", json!(format!("{run}\u{0}"))),
            "invalid_id",
        ),
        case(
            "id with DEL",
            with(4, "id", json!(format!("{run}\u{7f}"))),
            "invalid_id",
        ),
        case(
            "id with C1 control",
            with(5, "id", json!(format!("{run}\u{85}"))),
            "invalid_id",
        ),
        case("id too long", with(6, "id", json!(long)), "invalid_id"),
        case("id empty", with(7, "id", json!("")), "invalid_id"),
        case(
            "aggregate with NUL",
            with(8, "aggregate_id", json!("a\u{0}b")),
            "invalid_id",
        ),
        case(
            "aggregate with tab",
            with(9, "aggregate_id", json!("a\tb")),
            "invalid_id",
        ),
        case(
            "aggregate with ESC",
            with(10, "aggregate_id", json!("a\u{1b}[2J")),
            "invalid_id",
        ),
        case(
            "aggregate empty",
            with(11, "aggregate_id", json!("")),
            "invalid_id",
        ),
        case(
            "aggregate too long",
            with(12, "aggregate_id", json!(long)),
            "invalid_id",
        ),
        case("kind empty", with(13, "kind", json!("")), "invalid_event"),
        case(
            "kind with CR",
            with(14, "kind", json!("Noted\r")),
            "invalid_event",
        ),
        case(
            "kind too long",
            with(15, "kind", json!(long)),
            "invalid_event",
        ),
        case("kind a number", with(16, "kind", json!(7)), "invalid_event"),
        case(
            "kind missing",
            json!({"id": id(17), "aggregate_id": "a"}),
            "invalid_event",
        ),
        case(
            "aggregate missing",
            json!({"id": id(18), "kind": "Noted"}),
            "invalid_event",
        ),
        case(
            "metadata past the limit",
            with(19, "metadata", big_metadata),
            "too_large",
        ),
        case(
            "metadata an array",
            with(20, "metadata", json!([1])),
            "invalid_event",
        ),
        case(
            "metadata a string",
            with(21, "metadata", json!("m")),
            "invalid_event",
        ),
        case(
            "data nested past the limit",
            with(22, "data", too_deep.clone()),
            "too_deep",
        ),
        case(
            "metadata nested past the limit",
            with(23, "metadata", json!({ "m": too_deep.clone() })),
            "too_deep",
        ),
        case(
            "arrays nested past the limit",
            with(
                24,
                "data",
                (0..limits.max_json_depth).fold(json!(1), |v, _| json!([v])),
            ),
            "too_deep",
        ),
        case(
            "hlc a day past the allowed drift",
            with(25, "hlc", json!(format!("{far_future:016x}-00000000"))),
            "clock_drift",
        ),
        case(
            "hlc at the end of time",
            with(26, "hlc", json!("ffffffffffffffff-ffffffff")),
            "clock_drift",
        ),
        case(
            "hlc malformed",
            with(27, "hlc", json!("yesterday")),
            "invalid_event",
        ),
        case("hlc a number", with(28, "hlc", json!(12)), "invalid_event"),
        case(
            "origin with a control character",
            with(29, "origin", json!("n\u{7}")),
            "invalid_event",
        ),
        case(
            "origin empty",
            with(30, "origin", json!("")),
            "invalid_event",
        ),
        case(
            "expected_version a string",
            with(31, "expected_version", json!("one")),
            "invalid_event",
        ),
        case(
            "expected_version negative",
            with(32, "expected_version", json!(-1)),
            "invalid_event",
        ),
        case(
            "expected_version past u64",
            with(33, "expected_version", json!(1e30)),
            "invalid_event",
        ),
    ]
}

/// Push each hostile event alone and check it is answered `rejected` with its code, the id
/// echoed, and nothing stored; then push them all in one batch beside one valid event, which
/// alone is stored. Returns how many cases ran.
pub async fn check_hostile_events(url: &str, tenant: &TenantTokens, limits: EventLimits) -> usize {
    let hub = HubClient::new(url);
    let run = nonce();
    let cases = cases(&run, limits);
    let auth = bearer(&tenant.write);
    let headers = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    let push = |events: Vec<Value>| {
        let hub = hub.clone();
        let body = Bytes::from(json!({ "events": events }).to_string());
        async move { hub.call(Method::POST, "/v1/events", &headers, body).await }
    };
    let before = hub.head(&tenant.read).await;
    for case in &cases {
        let body = push(vec![case.event.clone()]).await.ok_json(case.what);
        let result = &body["results"][0];
        assert_eq!(result["status"], "rejected", "{}: {body}", case.what);
        assert_eq!(result["error"]["code"], case.code, "{}: {body}", case.what);
        assert!(
            result["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{}: no message in {body}",
            case.what
        );
        assert_eq!(
            result["id"], case.event["id"],
            "{}: the id is echoed",
            case.what
        );
        assert_eq!(body["head"], before, "{}: the head moved", case.what);
        assert_eq!(
            hub.head(&tenant.read).await,
            before,
            "{}: stored",
            case.what
        );
    }
    let valid = json!({"id": format!("{run}-hostile-valid"), "kind": "Noted",
        "aggregate_id": format!("hostile-{run}")});
    let mut batch: Vec<Value> = cases.iter().map(|c| c.event.clone()).collect();
    batch.insert(batch.len() / 2, valid);
    let body = push(batch).await.ok_json("the hostile batch");
    let statuses: Vec<&str> = body["results"]
        .as_array()
        .map(|r| r.iter().filter_map(|r| r["status"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(statuses.len(), cases.len() + 1, "{body}");
    assert_eq!(
        statuses.iter().filter(|s| **s == "accepted").count(),
        1,
        "only the valid event of the batch is stored: {body}"
    );
    assert_eq!(hub.head(&tenant.read).await, before + 1);
    cases.len()
}
