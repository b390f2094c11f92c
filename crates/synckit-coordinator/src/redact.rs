//! Secret redaction: finds cloud keys, bearer tokens, private keys and API keys in text and in
//! JSON string values, replaces each with `[REDACTED:<kind>]`, and counts them per kind.
//!
//! The patterns are compiled once per process. Redaction is idempotent (redacting redacted
//! text changes nothing): a replacement starts with `[`, which no pattern accepts as the first
//! character of a secret, and key-value shapes keep their key and replace only the value.
//!
//! What is recognised:
//! - AWS access key ids (`AKIA…`, `ASIA…` and 16 more upper-case letters or digits), and AWS
//!   secret keys written as `aws_secret_access_key=…` (also `:`, quotes, any case);
//! - bearer tokens: `Bearer <token>` (any case) with a token of at least 12 characters that
//!   are not all letters (so "bearer authentication" in prose stays);
//! - private key blocks from `-----BEGIN … PRIVATE KEY-----` to the matching `END` line (or to
//!   the end of the text when the block is cut off);
//! - GitHub (`ghp_`, `gho_`, `ghu_`, `ghs_`, `ghr_`, `github_pat_`), Slack (`xoxb-`, `xoxa-`,
//!   `xoxp-`, `xoxr-`, `xoxs-`), Stripe live (`sk_live_`, `rk_live_`) and Google (`AIza…`) keys;
//! - generic assignments whose key ends in `api_key`, `apikey`, `secret`, `token`, `password`
//!   or `passwd` (`api_key=…`, `apikey: …`, `"token": "…"`) with a value of 16 or more
//!   characters;
//! - in JSON objects, the string value (8 or more characters) of a member whose *name* has one
//!   of those endings, for example `{"password": "hunter2hunter2"}`.
//!
//! Object member names themselves are not searched.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::LazyLock;

use regex::{Captures, Regex, RegexSet};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::pipeline::{Record, Transform, TransformStats};

/// What kind of secret was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SecretKind {
    /// An AWS access key id (`AKIA…`, `ASIA…`).
    AwsAccessKeyId,
    /// An AWS secret access key, recognised by its `aws_secret_access_key` label.
    AwsSecretAccessKey,
    /// The token of a `Bearer` authorization.
    BearerToken,
    /// A PEM private key block.
    PrivateKey,
    /// A GitHub token.
    GithubToken,
    /// A Slack token.
    SlackToken,
    /// A Stripe live secret or restricted key.
    StripeKey,
    /// A Google API key.
    GoogleApiKey,
    /// A value assigned to a key named like a secret (`api_key`, `token`, `password`, …).
    GenericSecret,
}

impl SecretKind {
    /// Every kind, in a stable order.
    pub const ALL: [SecretKind; 9] = [
        SecretKind::AwsAccessKeyId,
        SecretKind::AwsSecretAccessKey,
        SecretKind::BearerToken,
        SecretKind::PrivateKey,
        SecretKind::GithubToken,
        SecretKind::SlackToken,
        SecretKind::StripeKey,
        SecretKind::GoogleApiKey,
        SecretKind::GenericSecret,
    ];

    /// A stable snake_case name, used in replacements, logs and status.
    pub fn as_str(self) -> &'static str {
        match self {
            SecretKind::AwsAccessKeyId => "aws_access_key_id",
            SecretKind::AwsSecretAccessKey => "aws_secret_access_key",
            SecretKind::BearerToken => "bearer_token",
            SecretKind::PrivateKey => "private_key",
            SecretKind::GithubToken => "github_token",
            SecretKind::SlackToken => "slack_token",
            SecretKind::StripeKey => "stripe_key",
            SecretKind::GoogleApiKey => "google_api_key",
            SecretKind::GenericSecret => "generic_secret",
        }
    }

    /// The text a secret of this kind is replaced with.
    pub fn replacement(self) -> &'static str {
        match self {
            SecretKind::AwsAccessKeyId => "[REDACTED:aws_access_key_id]",
            SecretKind::AwsSecretAccessKey => "[REDACTED:aws_secret_access_key]",
            SecretKind::BearerToken => "[REDACTED:bearer_token]",
            SecretKind::PrivateKey => "[REDACTED:private_key]",
            SecretKind::GithubToken => "[REDACTED:github_token]",
            SecretKind::SlackToken => "[REDACTED:slack_token]",
            SecretKind::StripeKey => "[REDACTED:stripe_key]",
            SecretKind::GoogleApiKey => "[REDACTED:google_api_key]",
            SecretKind::GenericSecret => "[REDACTED:generic_secret]",
        }
    }
}

impl fmt::Display for SecretKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How many secrets of each kind were redacted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RedactionCounts(BTreeMap<SecretKind, u64>);

impl RedactionCounts {
    /// No redactions.
    pub fn new() -> Self {
        RedactionCounts::default()
    }

    /// Redactions of one kind.
    pub fn get(&self, kind: SecretKind) -> u64 {
        self.0.get(&kind).copied().unwrap_or(0)
    }

    /// Redactions of every kind together.
    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    /// Whether nothing was redacted.
    pub fn is_empty(&self) -> bool {
        self.total() == 0
    }

    /// Count `n` more redactions of `kind`.
    pub fn add(&mut self, kind: SecretKind, n: u64) {
        if n > 0 {
            *self.0.entry(kind).or_insert(0) += n;
        }
    }

    /// Add every count of `other`.
    pub fn merge(&mut self, other: &RedactionCounts) {
        for (kind, n) in &other.0 {
            self.add(*kind, *n);
        }
    }

    /// The kinds with at least one redaction and their counts, in [`SecretKind`] order.
    pub fn iter(&self) -> impl Iterator<Item = (SecretKind, u64)> + '_ {
        self.0.iter().map(|(k, n)| (*k, *n))
    }
}

impl fmt::Display for RedactionCounts {
    /// `aws_access_key_id 1, bearer_token 2` (empty when nothing was redacted).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (kind, n)) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{kind} {n}")?;
        }
        Ok(())
    }
}

/// Whether a rule replaces its whole match or only the value after a kept label.
#[derive(Debug, Clone, Copy)]
enum Shape {
    Whole,
    /// Keep capture groups 1 and 2 (label and separator), replace group 3 (the value).
    LabelledValue,
}

struct Rule {
    kind: SecretKind,
    shape: Shape,
    pattern: &'static str,
    /// A check of the secret's text beyond what the pattern can say; `None` accepts all.
    accept: Option<fn(&str) -> bool>,
}

/// Bearer tokens are random: one made of letters only is an English word after "bearer".
fn not_only_letters(token: &str) -> bool {
    !token.chars().all(|c| c.is_ascii_alphabetic())
}

/// Value characters of tokens and keys written after a label.
const VALUE: &str = r"[A-Za-z0-9\-._~+/=]";

/// The rules, most specific first: a later rule sees the text earlier rules produced, so a
/// GitHub token after `token=` is counted once, as a GitHub token.
fn rules() -> Vec<Rule> {
    vec![
        Rule {
            kind: SecretKind::PrivateKey,
            shape: Shape::Whole,
            pattern: r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY-----(?s:.*?)(?:-----END[A-Z0-9 ]*PRIVATE KEY-----|\z)",
            accept: None,
        },
        Rule {
            kind: SecretKind::AwsAccessKeyId,
            shape: Shape::Whole,
            pattern: r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b",
            accept: None,
        },
        Rule {
            kind: SecretKind::AwsSecretAccessKey,
            shape: Shape::LabelledValue,
            pattern: r#"(?i)(aws_?secret_?(?:access_?)?key)(["']?\s*[:=]\s*["']?)([A-Za-z0-9/+=]{16,})"#,
            accept: None,
        },
        Rule {
            kind: SecretKind::GithubToken,
            shape: Shape::Whole,
            pattern: r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})",
            accept: None,
        },
        Rule {
            kind: SecretKind::SlackToken,
            shape: Shape::Whole,
            pattern: r"\bxox[baprs]-[A-Za-z0-9-]{10,}",
            accept: None,
        },
        Rule {
            kind: SecretKind::StripeKey,
            shape: Shape::Whole,
            pattern: r"\b[sr]k_live_[A-Za-z0-9]{16,}",
            accept: None,
        },
        Rule {
            kind: SecretKind::GoogleApiKey,
            shape: Shape::Whole,
            pattern: r"\bAIza[0-9A-Za-z_\-]{35}",
            accept: None,
        },
        Rule {
            kind: SecretKind::BearerToken,
            shape: Shape::LabelledValue,
            pattern: r"(?i)\b(bearer)(\s+)([A-Za-z0-9\-._~+/]{12,}=*)",
            accept: Some(not_only_letters),
        },
        Rule {
            kind: SecretKind::GenericSecret,
            shape: Shape::LabelledValue,
            // The label is a word ending in one of the secret names; VALUE is spliced in below.
            pattern: r#"(?i)\b([A-Za-z0-9_.\-]*(?:api[_\-]?key|apikey|secret|token|password|passwd))(["']?\s*[:=]\s*["']?)(VALUE{16,})"#,
            accept: None,
        },
    ]
}

struct CompiledRule {
    kind: SecretKind,
    shape: Shape,
    regex: Regex,
    accept: Option<fn(&str) -> bool>,
}

struct Compiled {
    set: RegexSet,
    rules: Vec<CompiledRule>,
    secret_member: Regex,
    aws_secret_member: Regex,
}

/// Compiled once; the patterns are constants, so a failure is a bug caught by every test.
static COMPILED: LazyLock<Result<Compiled, regex::Error>> = LazyLock::new(compile);

fn compile() -> Result<Compiled, regex::Error> {
    let rules = rules();
    let patterns: Vec<String> = rules
        .iter()
        .map(|r| r.pattern.replace("VALUE", VALUE))
        .collect();
    let set = RegexSet::new(&patterns)?;
    let compiled = rules
        .iter()
        .zip(&patterns)
        .map(|(r, p)| {
            Ok(CompiledRule {
                kind: r.kind,
                shape: r.shape,
                regex: Regex::new(p)?,
                accept: r.accept,
            })
        })
        .collect::<Result<Vec<_>, regex::Error>>()?;
    Ok(Compiled {
        set,
        rules: compiled,
        secret_member: Regex::new(r"(?i)(?:api[_\-]?key|apikey|secret|token|password|passwd)$")?,
        aws_secret_member: Regex::new(r"(?i)^aws_?secret_?(?:access_?)?key$")?,
    })
}

/// Shortest string value redacted because of its member name alone.
const MIN_MEMBER_SECRET_LEN: usize = 8;

/// The built-in secret-redaction transform. Cheap to create and to clone: the patterns are
/// shared by every instance.
#[derive(Debug, Clone, Copy, Default)]
pub struct Redactor;

impl Redactor {
    /// A redactor with the built-in patterns.
    pub fn new() -> Self {
        Redactor
    }

    fn compiled() -> Option<&'static Compiled> {
        match &*COMPILED {
            Ok(c) => Some(c),
            Err(e) => {
                // Unreachable with the constant patterns; never pass secrets through silently.
                tracing::error!(error = %e, "secret patterns failed to compile");
                None
            }
        }
    }

    /// Redact the secrets in `text`, counting them in `counts`. Borrows when nothing matched.
    pub fn redact_str<'a>(&self, text: &'a str, counts: &mut RedactionCounts) -> Cow<'a, str> {
        let Some(compiled) = Self::compiled() else {
            counts.add(SecretKind::GenericSecret, 1);
            return Cow::Borrowed(SecretKind::GenericSecret.replacement());
        };
        // Most text holds no secret: one pass of the set answers that.
        if !compiled.set.is_match(text) {
            return Cow::Borrowed(text);
        }
        let mut out = Cow::Borrowed(text);
        // Every rule runs on the text the rules before it produced, so what a replacement
        // brings together is still seen, and a second pass finds nothing (idempotence).
        for rule in &compiled.rules {
            let mut n = 0u64;
            let replaced = rule.regex.replace_all(&out, |caps: &Captures<'_>| {
                let whole = caps.get(0).map_or("", |m| m.as_str());
                let secret = match rule.shape {
                    Shape::Whole => whole,
                    Shape::LabelledValue => caps.get(3).map_or("", |m| m.as_str()),
                };
                if rule.accept.is_some_and(|accept| !accept(secret)) {
                    return whole.to_owned();
                }
                n += 1;
                match rule.shape {
                    Shape::Whole => rule.kind.replacement().to_owned(),
                    Shape::LabelledValue => format!(
                        "{}{}{}",
                        caps.get(1).map_or("", |m| m.as_str()),
                        caps.get(2).map_or("", |m| m.as_str()),
                        rule.kind.replacement()
                    ),
                }
            });
            if n > 0 {
                counts.add(rule.kind, n);
                out = Cow::Owned(replaced.into_owned());
            }
        }
        out
    }

    /// Redact every string in `value`, recursively through arrays and objects, counting in
    /// `counts`. A string member whose name ends like a secret (`password`, `api_key`,
    /// `token`, …) and is 8 or more characters long is replaced whole.
    pub fn redact_value(&self, value: &mut Value, counts: &mut RedactionCounts) {
        match value {
            Value::String(s) => self.redact_string(s, counts),
            Value::Array(items) => {
                for item in items {
                    self.redact_value(item, counts);
                }
            }
            Value::Object(members) => {
                for (name, member) in members.iter_mut() {
                    self.redact_value(member, counts);
                    if let Value::String(s) = member
                        && let Some(kind) = Self::member_secret_kind(name)
                        && s.chars().count() >= MIN_MEMBER_SECRET_LEN
                        && !s.starts_with("[REDACTED:")
                    {
                        counts.add(kind, 1);
                        *s = kind.replacement().to_owned();
                    }
                }
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }

    fn redact_string(&self, s: &mut String, counts: &mut RedactionCounts) {
        if let Cow::Owned(redacted) = self.redact_str(s, counts) {
            *s = redacted;
        }
    }

    fn member_secret_kind(name: &str) -> Option<SecretKind> {
        let compiled = Self::compiled()?;
        if compiled.aws_secret_member.is_match(name) {
            Some(SecretKind::AwsSecretAccessKey)
        } else if compiled.secret_member.is_match(name) {
            Some(SecretKind::GenericSecret)
        } else {
            None
        }
    }
}

impl Transform for Redactor {
    fn name(&self) -> &str {
        "redact"
    }

    fn apply(
        &self,
        mut record: Record,
        stats: &mut TransformStats,
    ) -> Result<Option<Record>, synckit_types::BoxError> {
        self.redact_value(&mut record.value, &mut stats.redactions);
        Ok(Some(record))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_compile() {
        assert!(COMPILED.is_ok(), "{:?}", COMPILED.as_ref().err());
    }

    #[test]
    fn clean_text_is_borrowed() {
        let mut counts = RedactionCounts::new();
        let text = "GET /health 200 in 3ms";
        assert!(matches!(
            Redactor.redact_str(text, &mut counts),
            Cow::Borrowed(_)
        ));
        assert!(counts.is_empty());
    }

    #[test]
    fn counts_display_and_merge() {
        let mut a = RedactionCounts::new();
        a.add(SecretKind::BearerToken, 2);
        let mut b = RedactionCounts::new();
        b.add(SecretKind::AwsAccessKeyId, 1);
        b.add(SecretKind::BearerToken, 0);
        a.merge(&b);
        assert_eq!(a.to_string(), "aws_access_key_id 1, bearer_token 2");
        assert_eq!(a.total(), 3);
        assert_eq!(
            serde_json::to_value(&a).unwrap(),
            serde_json::json!({"aws_access_key_id": 1, "bearer_token": 2})
        );
    }
}
