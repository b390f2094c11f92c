//! The built-in secret redaction: every secret shape is replaced and counted under its kind,
//! look-alikes that are not secrets pass untouched, JSON is redacted recursively, and
//! redaction is idempotent (property test).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test.

use proptest::prelude::*;
use serde_json::{Value, json};
use synckit_coordinator::{RedactionCounts, Redactor, SecretKind};

fn redact(text: &str) -> (String, RedactionCounts) {
    let mut counts = RedactionCounts::new();
    let out = Redactor::new().redact_str(text, &mut counts).into_owned();
    (out, counts)
}

const PEM: &str = "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA0Z3VS5JJcds3xfn/ygWyF8PbnGy0AHB7MhgwMbRvI0MBZhpF\nx2Kj+u3PZt9nvbDQ7Vh5rHc=\n-----END RSA PRIVATE KEY-----";

#[test]
fn each_secret_shape_is_redacted_and_counted() {
    use SecretKind::*;
    let ghp = format!("ghp_{}", "a1B2c3D4e5".repeat(4).get(..36).unwrap());
    let cases: Vec<(String, String, SecretKind)> = vec![
        (
            "login with AKIAIOSFODNN7EXAMPLE ok".into(),
            "login with [REDACTED:aws_access_key_id] ok".into(),
            AwsAccessKeyId,
        ),
        (
            "sts=ASIAY34FZKBOKMUTVV7A".into(),
            "sts=[REDACTED:aws_access_key_id]".into(),
            AwsAccessKeyId,
        ),
        (
            "aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            "aws_secret_access_key=[REDACTED:aws_secret_access_key]".into(),
            AwsSecretAccessKey,
        ),
        (
            r#"{"AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}"#.into(),
            r#"{"AWS_SECRET_ACCESS_KEY": "[REDACTED:aws_secret_access_key]"}"#.into(),
            AwsSecretAccessKey,
        ),
        (
            "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln-bmF0dXJl".into(),
            "Authorization: Bearer [REDACTED:bearer_token]".into(),
            BearerToken,
        ),
        (
            "authorization: bearer 0123456789abcdef==".into(),
            "authorization: bearer [REDACTED:bearer_token]".into(),
            BearerToken,
        ),
        (
            format!("key:\n{PEM}\nafter"),
            "key:\n[REDACTED:private_key]\nafter".into(),
            PrivateKey,
        ),
        (
            "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA (cut off".into(),
            "[REDACTED:private_key]".into(),
            PrivateKey,
        ),
        (
            format!("push with {ghp}"),
            "push with [REDACTED:github_token]".into(),
            GithubToken,
        ),
        (
            "gho_16C7e42F292c6912E7710c838347Ae178B4a".into(),
            "[REDACTED:github_token]".into(),
            GithubToken,
        ),
        (
            "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz".into(),
            "[REDACTED:github_token]".into(),
            GithubToken,
        ),
        (
            "slack xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx".into(),
            "slack [REDACTED:slack_token]".into(),
            SlackToken,
        ),
        (
            "xoxp-1234567890-abcdef".into(),
            "[REDACTED:slack_token]".into(),
            SlackToken,
        ),
        (
            "charge with sk_live_4eC39HqLyjWDarjtT1zdp7dc.".into(),
            "charge with [REDACTED:stripe_key].".into(),
            StripeKey,
        ),
        (
            "rk_live_51H8abcdefghijklmnop".into(),
            "[REDACTED:stripe_key]".into(),
            StripeKey,
        ),
        (
            "maps?key=AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe&x=1".into(),
            "maps?key=[REDACTED:google_api_key]&x=1".into(),
            GoogleApiKey,
        ),
        (
            "api_key=0123456789abcdef0123".into(),
            "api_key=[REDACTED:generic_secret]".into(),
            GenericSecret,
        ),
        (
            "apikey: Zm9vYmFyYmF6cXV4cXV1eA".into(),
            "apikey: [REDACTED:generic_secret]".into(),
            GenericSecret,
        ),
        (
            "GET /cb?token=f00dfeedf00dfeedf00d&page=2".into(),
            "GET /cb?token=[REDACTED:generic_secret]&page=2".into(),
            GenericSecret,
        ),
        (
            r#"refresh_token = "r3fr3sh-t0k3n-v4lu3-xyz""#.into(),
            r#"refresh_token = "[REDACTED:generic_secret]""#.into(),
            GenericSecret,
        ),
        (
            "X-Api-Key: 9f8e7d6c5b4a39281706".into(),
            "X-Api-Key: [REDACTED:generic_secret]".into(),
            GenericSecret,
        ),
    ];
    for (input, expected, kind) in cases {
        let (out, counts) = redact(&input);
        assert_eq!(out, expected, "input {input:?}");
        assert_eq!(counts.get(kind), 1, "{kind} in {input:?}: {counts:?}");
        assert_eq!(counts.total(), 1, "only {kind} in {input:?}: {counts:?}");
    }
}

#[test]
fn look_alikes_that_are_not_secrets_pass_untouched() {
    let clean = [
        "GET /health 200 in 3ms",
        "AKIA is the prefix of AWS access key ids",
        "AKIASHORT1234",
        "xAKIAIOSFODNN7EXAMPLE1",
        "the bearer of bad news",
        "Bearer authentication is described in RFC 6750",
        "token=short",
        "api_key=0123456789",
        "tokens=123456789012345678",
        "ghp_tooshort",
        "sk_test_4eC39HqLyjWDarjtT1zdp7dc",
        "xoxq-123456789012",
        "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8A\n-----END PUBLIC KEY-----",
        "user=alice id=12345 secretary=bob",
        "[REDACTED:bearer_token] was here",
        "",
        "ünïcödé ✓ password",
    ];
    for text in clean {
        let (out, counts) = redact(text);
        assert_eq!(out, text);
        assert!(counts.is_empty(), "{text:?}: {counts:?}");
    }
}

#[test]
fn several_secrets_in_one_text_are_each_counted() {
    let text = "a=AKIAIOSFODNN7EXAMPLE b=AKIAI44QH8DHBEXAMPLE token=ghp_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa \
                Authorization: Bearer abc.def.ghi-123456";
    let (out, counts) = redact(text);
    assert_eq!(
        out,
        "a=[REDACTED:aws_access_key_id] b=[REDACTED:aws_access_key_id] \
         token=[REDACTED:github_token] Authorization: Bearer [REDACTED:bearer_token]"
    );
    assert_eq!(counts.get(SecretKind::AwsAccessKeyId), 2);
    // The GitHub token after `token=` is one secret, counted once under its precise kind.
    assert_eq!(counts.get(SecretKind::GithubToken), 1);
    assert_eq!(counts.get(SecretKind::GenericSecret), 0);
    assert_eq!(counts.get(SecretKind::BearerToken), 1);
    assert_eq!(counts.total(), 4);
}

#[test]
fn json_strings_are_redacted_recursively_and_other_values_kept() {
    let mut value = json!({
        "msg": "login AKIAIOSFODNN7EXAMPLE",
        "n": 42,
        "ok": true,
        "none": null,
        "password": "hunter2hunter2",
        "aws_secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "token": "short",
        "nested": {
            "headers": ["Accept: */*", "Authorization: Bearer 0123456789abcdef"],
            "deeper": [{"api_key": "k-0123456789abcdef"}],
            "AKIAIOSFODNN7EXAMPLE": "member names are not searched"
        }
    });
    let mut counts = RedactionCounts::new();
    Redactor::new().redact_value(&mut value, &mut counts);
    assert_eq!(
        value,
        json!({
            "msg": "login [REDACTED:aws_access_key_id]",
            "n": 42,
            "ok": true,
            "none": null,
            "password": "[REDACTED:generic_secret]",
            "aws_secret_access_key": "[REDACTED:aws_secret_access_key]",
            "token": "short",
            "nested": {
                "headers": ["Accept: */*", "Authorization: Bearer [REDACTED:bearer_token]"],
                "deeper": [{"api_key": "[REDACTED:generic_secret]"}],
                "AKIAIOSFODNN7EXAMPLE": "member names are not searched"
            }
        })
    );
    assert_eq!(counts.get(SecretKind::AwsAccessKeyId), 1);
    assert_eq!(counts.get(SecretKind::AwsSecretAccessKey), 1);
    assert_eq!(counts.get(SecretKind::BearerToken), 1);
    assert_eq!(counts.get(SecretKind::GenericSecret), 2);
    assert_eq!(counts.total(), 5);
}

/// Pieces that make secrets, near-secrets and the context around them.
fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("AKIAIOSFODNN7EXAMPLE".to_owned()),
        Just("ASIA".to_owned()),
        Just("aws_secret_access_key".to_owned()),
        Just("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".to_owned()),
        Just("Bearer ".to_owned()),
        Just("bearer".to_owned()),
        Just("-----BEGIN EC PRIVATE KEY-----".to_owned()),
        Just("-----END EC PRIVATE KEY-----".to_owned()),
        Just("ghp_".to_owned()),
        Just("github_pat_".to_owned()),
        Just("xoxb-".to_owned()),
        Just("sk_live_".to_owned()),
        Just("AIza".to_owned()),
        Just("api_key".to_owned()),
        Just("token".to_owned()),
        Just("password".to_owned()),
        Just("[REDACTED:".to_owned()),
        Just("]".to_owned()),
        prop::sample::select(vec![
            "=", ":", ": ", "\"", "'", " ", "\n", "_", "-", ".", "/"
        ])
        .prop_map(str::to_owned),
        "[A-Za-z0-9]{1,40}",
        "[A-Za-z0-9_\\-./+=]{10,45}",
        any::<String>(),
    ]
}

fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(fragment(), 0..14).prop_map(|parts| parts.concat())
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        text().prop_map(Value::String),
        any::<i64>().prop_map(Value::from),
        Just(Value::Null),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        let name = prop::sample::select(vec!["msg", "password", "api_key", "token", "data"]);
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(name.prop_map(str::to_owned), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn redacting_text_twice_changes_nothing_more(input in text()) {
        let (once, _) = redact(&input);
        let (twice, counts) = redact(&once);
        prop_assert_eq!(&twice, &once);
        prop_assert!(counts.is_empty(), "second pass counted {:?} in {:?}", counts, once);
    }

    #[test]
    fn redacting_json_twice_changes_nothing_more(mut value in json_value()) {
        let redactor = Redactor::new();
        let mut first = RedactionCounts::new();
        redactor.redact_value(&mut value, &mut first);
        let once = value.clone();
        let mut second = RedactionCounts::new();
        redactor.redact_value(&mut value, &mut second);
        prop_assert_eq!(&value, &once);
        prop_assert!(second.is_empty(), "second pass counted {:?}", second);
    }

    #[test]
    fn text_without_secret_markers_is_untouched(input in "[a-z ,.!?]{0,200}") {
        // Lower-case prose with no digits cannot hold a key, token or labelled secret value.
        let (out, counts) = redact(&input);
        prop_assert_eq!(out, input);
        prop_assert!(counts.is_empty());
    }
}
