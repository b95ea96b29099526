use super::*;

fn limits(json: &str) -> Vec<Limit> {
    compile(&serde_json::from_str::<Vec<LimitConfig>>(json).unwrap()).unwrap()
}

fn facts<'a>(header: &'a dyn Fn(&str) -> Option<&'a str>) -> Facts<'a> {
    Facts { client: "c1", model: "gpt-4o", backend: "b", header, est_input: 10, max_output: 20 }
}

#[test]
fn periods_parse() {
    assert_eq!(parse_period("10s"), Some(10_000));
    assert_eq!(parse_period("1m"), Some(60_000));
    assert_eq!(parse_period("30d"), Some(30 * 86_400_000));
    assert_eq!(parse_period("0s"), None);
    assert_eq!(parse_period("m"), None);
    assert_eq!(parse_period("5y"), None);
}

#[test]
fn config_errors_name_the_field() {
    let bad = |json: &str| compile(&serde_json::from_str::<Vec<LimitConfig>>(json).unwrap()).unwrap_err().to_string();
    assert!(bad(r#"[{"name":"a","key":["client"],"requests":5}]"#).starts_with("limits[0].per"));
    assert!(bad(r#"[{"name":"a","key":["colour"],"requests":5,"per":"1m"}]"#).starts_with("limits[0].key[0]"));
    assert!(bad(r#"[{"name":"a","key":[],"requests":5,"tokens":3,"per":"1m"}]"#).contains("exactly one"));
    assert!(bad(r#"[{"name":"a","key":[],"tokens":5,"per":"1m","count":"weighted"}]"#).starts_with("limits[0].count"));
}

#[test]
fn window_boundaries_reset_counts_with_an_injected_clock() {
    let ls = limits(r#"[{"name":"rpm","key":["client"],"requests":2,"per":"1m"}]"#);
    let none = |_: &str| None;
    let cs = charges(&ls, &facts(&none));
    let store = LocalStore::default();
    let t0 = 120_000; // a window start
    assert!(matches!(store.admit(&cs, t0), Verdict::Admit(_)));
    assert!(matches!(store.admit(&cs, t0 + 59_000), Verdict::Admit(ref g) if g[0].used == 2 && g[0].reset_ms == 1_000));
    assert_eq!(store.admit(&cs, t0 + 59_999), Verdict::Deny { charge: 0, used: 2, retry_after_ms: 1 });
    assert!(matches!(store.admit(&cs, t0 + 60_000), Verdict::Admit(ref g) if g[0].used == 1));
}

#[test]
fn admission_is_all_or_nothing() {
    let ls = limits(
        r#"[{"name":"a","key":["client"],"requests":10,"per":"1m"},
            {"name":"b","key":["client"],"tokens":50,"per":"1m"}]"#,
    );
    let none = |_: &str| None;
    let cs = charges(&ls, &facts(&none));
    assert_eq!(cs[1].cost, 30);
    let store = LocalStore::default();
    assert!(matches!(store.admit(&cs, 0), Verdict::Admit(_)));
    assert!(matches!(store.admit(&cs, 1), Verdict::Deny { charge: 1, used: 30, .. }));
    // The denied attempt did not charge the request counter.
    assert!(matches!(store.admit(&cs[..1], 2), Verdict::Admit(ref g) if g[0].used == 2));
}

#[test]
fn header_keys_apply_only_when_present_and_models_filter() {
    let ls = limits(
        r#"[{"name":"user","key":["client","header:X-User-Id"],"requests":1,"per":"1m"},
            {"name":"claude","key":["client"],"models":["claude*"],"requests":1,"per":"1m"}]"#,
    );
    let none = |_: &str| None;
    assert!(charges(&ls, &facts(&none)).is_empty());
    let alice = |h: &str| (h == "x-user-id").then_some("alice|x");
    let cs = charges(&ls, &facts(&alice));
    assert_eq!(cs.len(), 1);
    assert_eq!(cs[0].key, "user|c1|alice%7Cx");
}

#[test]
fn settlement_reconciles_tokens_and_releases_concurrency() {
    let ls = limits(
        r#"[{"name":"t","key":["client"],"tokens":1000,"per":"1h","count":"output"},
            {"name":"w","key":["client"],"tokens":1000,"per":"1h","count":"weighted","weights":{"input":1,"output":3}},
            {"name":"c","key":["client"],"concurrent":2}]"#,
    );
    let none = |_: &str| None;
    let cs = charges(&ls, &facts(&none));
    assert_eq!(cs.iter().map(|c| c.cost).collect::<Vec<_>>(), vec![20, 70, 1]);
    let held =
        Held { entries: cs.iter().map(|c| (c.key.clone(), ls[c.limit].kind.clone(), c.cost)).collect(), est_input: 10 };
    let usage = Usage { input_tokens: 12, output_tokens: 5, ..Usage::default() };
    use Correction::{Add, Release};
    assert_eq!(
        held.settlement(Some(&usage), 0),
        vec![Add("t|c1".into(), -15), Add("w|c1".into(), -43), Release("c|c1".into())]
    );
    // Unknown usage: charged the input estimate and the estimated output, never zero.
    assert_eq!(
        held.settlement(None, 7),
        vec![Add("t|c1".into(), -13), Add("w|c1".into(), -39), Release("c|c1".into())]
    );
    assert_eq!(held.release_only(), vec![Release("c|c1".into())]);
}

#[test]
fn concurrency_counter_admits_up_to_max_until_released() {
    let ls = limits(r#"[{"name":"c","key":["client"],"concurrent":2}]"#);
    let none = |_: &str| None;
    let cs = charges(&ls, &facts(&none));
    let store = LocalStore::default();
    assert!(matches!(store.admit(&cs, 0), Verdict::Admit(_)));
    assert!(matches!(store.admit(&cs, 0), Verdict::Admit(_)));
    assert!(matches!(store.admit(&cs, 0), Verdict::Deny { retry_after_ms: 1000, .. }));
    store.adjust("c|c1", -1);
    assert!(matches!(store.admit(&cs, 0), Verdict::Admit(_)));
}

#[test]
fn headers_report_the_tightest_limit_and_reset_format() {
    let ls = limits(
        r#"[{"name":"a","key":["client"],"requests":10,"per":"1m"},
            {"name":"b","key":["model"],"requests":3,"per":"1h"}]"#,
    );
    let none = |_: &str| None;
    let cs = charges(&ls, &facts(&none));
    let granted = vec![
        Granted { key: "a".into(), used: 1, reset_ms: 30_000 },
        Granted { key: "b".into(), used: 1, reset_ms: 3_000_000 },
    ];
    let h = headers(&ls, &cs, &granted);
    assert_eq!(h[0], ("x-ratelimit-limit-requests".into(), "3".into()));
    assert_eq!(h[1], ("x-ratelimit-remaining-requests".into(), "2".into()));
    assert_eq!(h[2], ("x-ratelimit-reset-requests".into(), "50m0s".into()));
    assert_eq!(format_reset(90_500), "1m31s");
    assert_eq!(format_reset(0), "0ms");
}

#[test]
fn redis_reply_parsing() {
    let ok = [ReplyItem::Int(1), ReplyItem::Text("k@0".into()), ReplyItem::Int(3), ReplyItem::Int(500)];
    assert_eq!(
        parse_redis_admit(&ok),
        Some(Verdict::Admit(vec![Granted { key: "k@0".into(), used: 3, reset_ms: 500 }]))
    );
    let deny = [ReplyItem::Int(0), ReplyItem::Int(2), ReplyItem::Int(9), ReplyItem::Int(100)];
    assert_eq!(parse_redis_admit(&deny), Some(Verdict::Deny { charge: 1, used: 9, retry_after_ms: 100 }));
    assert_eq!(parse_redis_admit(&[ReplyItem::Text("x".into())]), None);
}
