//! Rules files: the RULES.md examples in YAML and JSON build identical resolvers, priorities and
//! `enabled` are honoured, custom strategies get their options, and every validation error
//! carries its line and column.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use common::C;
use serde_json::{Value, json};
use synckit_resolve::{
    CompositeResolver, Conflict, ConflictResolver, Decision, DynResolver, FirstWriteWins, Format,
    LastWriteWins, Position, ResolutionContext, RulesDocument, RulesError, RulesErrorKind,
    RulesLoader, StrategyRegistry,
};

const RULES_MD: &str = include_str!("../RULES.md");

/// The first fenced block of `lang` in RULES.md.
fn example(lang: &str) -> &'static str {
    let fence = format!("```{lang}\n");
    let start = RULES_MD.find(&fence).expect("example present") + fence.len();
    let len = RULES_MD[start..].find("\n```").expect("closed fence");
    &RULES_MD[start..start + len + 1]
}

fn load(text: &str, format: Format) -> CompositeResolver {
    RulesLoader::default()
        .load_str(text, format)
        .unwrap_or_else(|e| panic!("{format:?} example: {e}"))
}

/// A small deterministic generator (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        let i = usize::try_from(self.next() % items.len() as u64).unwrap();
        items[i].clone()
    }
}

fn random_conflict(rng: &mut Rng) -> Conflict {
    let kinds = [
        "OrderCreated",
        "OrderImported",
        "OrderPriced",
        "OrderCancelled",
        "UserUpdated",
        "DocEdited",
    ];
    let aggregates = ["order-1", "order-22", "user-7", "doc-3", "x"];
    let roles = [Value::Null, json!("admin"), json!("user"), json!(["admin"])];
    let tiers = [
        Value::Null,
        json!(1),
        json!("1"),
        json!(2),
        json!(2.0),
        json!(3),
    ];
    let rush = [Value::Null, json!(true), json!("true")];
    let mut c = C::on(rng.pick(&aggregates));
    for _ in 0..=rng.next() % 2 {
        let mut metadata = Vec::new();
        for (key, values) in [
            ("role", &roles[..]),
            ("tier", &tiers[..]),
            ("rush", &rush[..]),
        ] {
            let v = rng.pick(values);
            if !v.is_null() {
                metadata.push((key, v));
            }
        }
        let data = json!({
            "total": rng.next() % 3,
            "lines": [{"price": rng.next() % 2}],
            "email": rng.pick(&["a@x", "b@x"]),
        });
        c = c.local(rng.pick(&kinds), data, &metadata);
    }
    for _ in 0..rng.next() % 3 {
        let data = json!({
            "total": rng.next() % 3,
            "lines": [{"price": rng.next() % 2}],
            "email": rng.pick(&["a@x", "b@x"]),
        });
        c = c.remote(rng.pick(&kinds), data);
    }
    c.build()
}

#[tokio::test]
async fn yaml_and_json_examples_build_identical_resolvers() {
    let yaml = load(example("yaml"), Format::Yaml);
    let json = load(example("json"), Format::Json);
    assert_eq!(yaml.describe(), json.describe());
    assert_eq!(yaml.name(), "shop");
    // Priority: `price` (5) before `created` and `legacy` (0, file order); the top-level rule
    // before every group; groups by priority, ties in file order.
    assert_eq!(
        yaml.rule_names(),
        [
            "admins",
            "orders.price",
            "orders.created",
            "orders.legacy",
            "orders.rush.any-change",
            "users.profile",
            "experiments.everything",
        ]
    );

    let ctx = ResolutionContext::default();
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    let mut deciders = BTreeSet::new();
    for i in 0..1000 {
        let c = random_conflict(&mut rng);
        let a = yaml.resolve(&c, &ctx).await.unwrap();
        let b = json.resolve(&c, &ctx).await.unwrap();
        assert_eq!(a, b, "conflict #{i}: {c:?}");
        // Deterministic on any node: resolving again, or with the remote events listed in
        // another order, gives the same answer.
        let mut shuffled = c.clone();
        shuffled.remote.reverse();
        assert_eq!(yaml.resolve(&shuffled, &ctx).await.unwrap(), a, "#{i}");
        let decider = a
            .rule
            .clone()
            .unwrap_or_else(|| a.reason.split(':').next().unwrap_or_default().to_owned());
        deciders.insert(decider);
    }
    // Every path was exercised, and the disabled rule and group never fired.
    let expected: BTreeSet<String> = [
        "admins",
        "orders.price",
        "orders.created",
        "orders.rush.any-change",
        "users.profile",
        "fallback of group orders",
        "global fallback",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(deciders, expected);
}

#[tokio::test]
async fn the_example_decides_as_documented() {
    let resolver = load(example("yaml"), Format::Yaml);
    let ctx = ResolutionContext::default();
    let decide = |c: Conflict| {
        let resolver = &resolver;
        let ctx = &ctx;
        async move { resolver.resolve(&c, ctx).await.unwrap() }
    };

    // A tier-2 price change on a created order: `price` (priority 5) beats `created`.
    let r = decide(
        C::on("order-1")
            .local("OrderCreated", json!({"total": 1}), &[("tier", json!(2))])
            .remote("OrderPriced", json!({"total": 2}))
            .build(),
    )
    .await;
    assert_eq!(r.rule.as_deref(), Some("orders.price"));
    assert_eq!(r.decision, Decision::KeepLocal);

    // tier "2" is a string: not a tier-2 order.
    let r = decide(
        C::on("order-1")
            .local("OrderCreated", json!({"total": 1}), &[("tier", json!("2"))])
            .remote("OrderPriced", json!({"total": 2}))
            .build(),
    )
    .await;
    assert_eq!(r.rule.as_deref(), Some("orders.created"));

    // Cancelled rush order: `any-change` does not hold, the disabled `legacy` does not fire,
    // so the `orders` fallback reviews it.
    let r = decide(
        C::on("order-9")
            .local("OrderCancelled", json!({}), &[("rush", json!(true))])
            .build(),
    )
    .await;
    assert_eq!(r.rule, None);
    assert_eq!(r.decision, Decision::Review);
    assert!(
        r.reason.starts_with("fallback of group orders:"),
        "{}",
        r.reason
    );
}

#[test]
fn custom_strategies_receive_their_options() {
    let mut registry = StrategyRegistry::new();
    registry
        .register_factory("pick", |options| {
            match options.get("side").and_then(Value::as_str) {
                Some("first") => Ok(Arc::new(FirstWriteWins) as DynResolver),
                Some("last") => Ok(Arc::new(LastWriteWins) as DynResolver),
                _ => Err(RulesError::new(
                    RulesErrorKind::InvalidValue,
                    format!("pick needs side: first or last, got {options}"),
                )),
            }
        })
        .unwrap();
    let loader = RulesLoader::new(registry);
    let yaml = "version: 1\nname: t\nrules:\n  - name: r\n    strategy:\n      name: pick\n      options: {side: first}\n";
    let json = r#"{"version": 1, "name": "t", "rules": [{"name": "r", "strategy": {"name": "pick", "options": {"side": "first"}}}]}"#;
    let a = loader.load_str(yaml, Format::Yaml).unwrap();
    let b = loader.load_str(json, Format::Json).unwrap();
    assert_eq!(a.describe(), b.describe());
    assert!(
        a.describe().contains("=> FirstWriteWins"),
        "{}",
        a.describe()
    );

    // The factory's own error is reported at the strategy's name.
    let bad = yaml.replace("side: first", "side: middle");
    let e = loader.load_str(&bad, Format::Yaml).unwrap_err();
    assert_eq!(e.kind(), RulesErrorKind::InvalidValue);
    assert_eq!(e.position(), Some(Position::new(6, 13)));
    // Built-ins take no options.
    let bad = yaml.replace("name: pick", "name: lww");
    let e = loader.load_str(&bad, Format::Yaml).unwrap_err();
    assert_eq!(e.kind(), RulesErrorKind::UnknownStrategy);
}

/// The error `text` gives in `format`.
fn error(text: &str, format: Format) -> RulesError {
    match RulesLoader::default().load_str(text, format) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e,
    }
}

/// (what, YAML text, JSON text, error kind, YAML (line, column), JSON (line, column)).
type Case = (
    &'static str,
    &'static str,
    &'static str,
    RulesErrorKind,
    (usize, usize),
    (usize, usize),
);

#[test]
fn validation_errors_carry_line_and_column() {
    // (what, yaml, json, kind, yaml position, json position)
    let cases: &[Case] = &[
        (
            "unknown strategy",
            "version: 1\nname: t\nrules:\n  - name: a\n    strategy: lwww\n",
            "{\n  \"version\": 1,\n  \"name\": \"t\",\n  \"rules\": [\n    {\"name\": \"a\", \"strategy\": \"lwww\"}\n  ]\n}",
            RulesErrorKind::UnknownStrategy,
            (5, 15),
            (5, 31),
        ),
        (
            "duplicate rule name",
            "version: 1\nname: t\nrules:\n  - name: a\n    strategy: lww\n  - name: a\n    strategy: fww\n",
            "{\"version\": 1, \"name\": \"t\", \"rules\": [\n  {\"name\": \"a\", \"strategy\": \"lww\"},\n  {\"name\": \"a\", \"strategy\": \"fww\"}\n]}",
            RulesErrorKind::DuplicateName,
            (6, 11),
            (3, 12),
        ),
        (
            "duplicate rule name across the same group",
            "version: 1\nname: t\ngroups:\n  - name: g\n    rules:\n      - name: a\n        strategy: lww\n      - name: a\n        strategy: lww\n",
            "{\"version\": 1, \"name\": \"t\", \"groups\": [{\"name\": \"g\", \"rules\": [\n  {\"name\": \"a\", \"strategy\": \"lww\"},\n  {\"name\": \"a\", \"strategy\": \"lww\"}]}]}",
            RulesErrorKind::DuplicateName,
            (8, 15),
            (3, 12),
        ),
        (
            "duplicate group name",
            "version: 1\nname: t\ngroups:\n  - name: g\n    fallback: lww\n  - name: g\n    fallback: lww\n",
            "{\"version\": 1, \"name\": \"t\", \"groups\": [\n  {\"name\": \"g\", \"fallback\": \"lww\"},\n  {\"name\": \"g\", \"fallback\": \"lww\"}]}",
            RulesErrorKind::DuplicateName,
            (6, 11),
            (3, 12),
        ),
        (
            "missing version",
            "name: t\nsettings:\n  default_fallback: lww\n",
            "{\"name\": \"t\", \"settings\": {\"default_fallback\": \"lww\"}}",
            RulesErrorKind::MissingField,
            (1, 1),
            (1, 1),
        ),
        (
            "missing name",
            "version: 1\nsettings:\n  default_fallback: lww\n",
            "\n  {\"version\": 1, \"settings\": {\"default_fallback\": \"lww\"}}",
            RulesErrorKind::MissingField,
            (1, 1),
            (2, 3),
        ),
        (
            "unsupported version",
            "version: 2\nname: t\n",
            "{\"version\": 2, \"name\": \"t\"}",
            RulesErrorKind::UnsupportedVersion,
            (1, 10),
            (1, 13),
        ),
        (
            "unknown field",
            "version: 1\nname: t\nrules:\n  - name: a\n    strategt: lww\n",
            "{\"version\": 1, \"name\": \"t\", \"rules\": [\n  {\"name\": \"a\", \"strategt\": \"lww\"}]}",
            RulesErrorKind::UnknownField,
            (5, 5),
            (2, 17),
        ),
        (
            "wrong type",
            "version: 1\nname: t\nrules:\n  - name: a\n    priority: high\n    strategy: lww\n",
            "{\"version\": 1, \"name\": \"t\", \"rules\": [\n  {\"name\": \"a\", \"priority\": \"high\", \"strategy\": \"lww\"}]}",
            RulesErrorKind::InvalidValue,
            (5, 15),
            (2, 29),
        ),
        (
            "bad glob",
            "version: 1\nname: t\nrules:\n  - name: a\n    conditions:\n      aggregate_ids: [\"ok-*\", \"[abc\"]\n    strategy: lww\n",
            "{\"version\": 1, \"name\": \"t\", \"rules\": [{\"name\": \"a\",\n  \"conditions\": {\"aggregate_ids\": [\"ok-*\", \"[abc\"]}, \"strategy\": \"lww\"}]}",
            RulesErrorKind::InvalidPattern,
            (6, 31),
            (2, 44),
        ),
        (
            "bad JSON path",
            "version: 1\nname: t\nrules:\n  - name: a\n    conditions:\n      changed_fields: \"a..b\"\n    strategy: lww\n",
            "{\"version\": 1, \"name\": \"t\", \"rules\": [{\"name\": \"a\",\n  \"conditions\": {\"changed_fields\": \"a..b\"}, \"strategy\": \"lww\"}]}",
            RulesErrorKind::InvalidPattern,
            (6, 23),
            (2, 36),
        ),
        (
            "empty alternatives",
            "version: 1\nname: t\nrules:\n  - name: a\n    conditions:\n      event_types: []\n    strategy: lww\n",
            "{\"version\": 1, \"name\": \"t\", \"rules\": [{\"name\": \"a\",\n  \"conditions\": {\"event_types\": []}, \"strategy\": \"lww\"}]}",
            RulesErrorKind::InvalidValue,
            (6, 20),
            (2, 33),
        ),
        (
            "dotted rule name",
            "version: 1\nname: t\nrules:\n  - name: a.b\n    strategy: lww\n",
            "{\"version\": 1, \"name\": \"t\", \"rules\": [{\"name\": \"a.b\", \"strategy\": \"lww\"}]}",
            RulesErrorKind::InvalidValue,
            (4, 11),
            (1, 48),
        ),
        (
            "nothing could ever decide",
            "version: 1\nname: t\nrules:\n  - name: a\n    enabled: false\n    strategy: lww\n",
            "{\"version\": 1, \"name\": \"t\", \"rules\": [{\"name\": \"a\", \"enabled\": false, \"strategy\": \"lww\"}]}",
            RulesErrorKind::Empty,
            (1, 1),
            (1, 1),
        ),
        (
            "too many rules",
            "version: 1\nname: t\nsettings:\n  limits: {max_rules: 1}\nrules:\n  - name: a\n    strategy: lww\n  - name: b\n    strategy: lww\n",
            "{\"version\": 1, \"name\": \"t\", \"settings\": {\"limits\": {\"max_rules\": 1}}, \"rules\": [\n  {\"name\": \"a\", \"strategy\": \"lww\"},\n  {\"name\": \"b\", \"strategy\": \"lww\"}]}",
            RulesErrorKind::LimitExceeded,
            (8, 5),
            (3, 3),
        ),
        (
            "groups too deep",
            "version: 1\nname: t\nsettings:\n  limits: {max_group_depth: 1}\ngroups:\n  - name: a\n    groups:\n      - name: b\n        fallback: lww\n",
            "{\"version\": 1, \"name\": \"t\", \"settings\": {\"limits\": {\"max_group_depth\": 1}},\n \"groups\": [{\"name\": \"a\", \"groups\": [{\"name\": \"b\", \"fallback\": \"lww\"}]}]}",
            RulesErrorKind::LimitExceeded,
            (8, 9),
            (2, 38),
        ),
        (
            "zero timeout",
            "version: 1\nname: t\nsettings:\n  resolution_timeout_ms: 0\n  default_fallback: lww\n",
            "{\"version\": 1, \"name\": \"t\", \"settings\": {\"resolution_timeout_ms\": 0, \"default_fallback\": \"lww\"}}",
            RulesErrorKind::InvalidValue,
            (4, 26),
            (1, 67),
        ),
        (
            "duplicate key",
            "version: 1\nname: t\nname: u\n",
            "{\"version\": 1, \"name\": \"t\",\n \"name\": \"u\"}",
            RulesErrorKind::Syntax,
            (3, 1),
            (2, 2),
        ),
        (
            "syntax",
            "version: 1\nname: t\nrules: [\n",
            "{\"version\": 1,\n \"name\": \"t\",,\n}",
            RulesErrorKind::Syntax,
            (4, 1),
            (2, 14),
        ),
    ];
    for (what, yaml, json, kind, yaml_at, json_at) in cases {
        for (format, text, at) in [(Format::Yaml, yaml, yaml_at), (Format::Json, json, json_at)] {
            let e = error(text, format);
            assert_eq!(e.kind(), *kind, "{what} ({format:?}): {e}");
            assert_eq!(
                e.position(),
                Some(Position::new(at.0, at.1)),
                "{what} ({format:?}): {e}\n{text}"
            );
            let shown = e.to_string();
            assert!(
                shown.starts_with(&format!("line {}, column {}: ", at.0, at.1)),
                "{shown}"
            );
        }
    }
}

#[test]
fn file_errors_name_the_file_and_position() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rules.yaml");
    std::fs::write(
        &path,
        "version: 1\nname: t\nrules:\n  - name: a\n    strategy: lwww\n",
    )
    .unwrap();
    let e = RulesLoader::default().load_file(&path).unwrap_err();
    assert_eq!(e.file(), Some(path.as_path()));
    let shown = e.to_string();
    assert!(
        shown.starts_with(&format!(
            "{}:5:15: unknown strategy \"lwww\"",
            path.display()
        )),
        "{shown}"
    );

    let missing = dir.path().join("none.json");
    let e = RulesLoader::default().load_file(&missing).unwrap_err();
    assert_eq!(e.kind(), RulesErrorKind::Io);
    let e = RulesLoader::default()
        .load_file(&dir.path().join("rules.toml"))
        .unwrap_err();
    assert_eq!(e.kind(), RulesErrorKind::InvalidValue);
    assert!(e.to_string().contains(".yaml, .yml or .json"), "{e}");

    // The same file as JSON loads when valid.
    let path = dir.path().join("rules.json");
    std::fs::write(
        &path,
        r#"{"version": 1, "name": "t", "settings": {"default_fallback": "lww"}}"#,
    )
    .unwrap();
    assert_eq!(RulesLoader::default().load_file(&path).unwrap().name(), "t");
}

#[test]
fn documents_expose_rules_with_full_names_and_positions() {
    let doc = RulesDocument::parse(example("yaml"), Format::Yaml).unwrap();
    let rules: Vec<_> = doc
        .rules()
        .into_iter()
        .map(|(name, rule)| (name, rule.name.position.line))
        .collect();
    assert_eq!(rules[0], ("admins".to_owned(), 12));
    assert!(
        rules.contains(&("orders.rush.any-change".to_owned(), 47)),
        "{rules:?}"
    );
    assert_eq!(
        doc.settings.resolution_timeout_ms.as_ref().map(|t| t.value),
        Some(250)
    );
}
