//! What `--check` prints: the routing table a config resolves to — each route's model pattern, its
//! backends with priority, weight, traffic share and upstream model, the clients that may use it and
//! the limits that apply — so an operator sees what the config means. Pure: a snapshot in, text out.

use std::fmt::Write;

use crate::ratelimit::{Count, KeyPart, Kind, Limit};
use crate::router::{ModelPattern, Route};
use crate::snapshot::Snapshot;

/// The one-line summary (also logged on every reload).
pub fn summary(snapshot: &Snapshot) -> String {
    format!(
        "config OK: listen {}, {} backend(s), {} route(s), {} client(s)",
        snapshot.config.listen,
        snapshot.backends.len(),
        snapshot.router.routes.len(),
        snapshot.clients.len()
    )
}

/// The summary, the backends, and the routing table.
pub fn report(snapshot: &Snapshot) -> String {
    let mut out = summary(snapshot);
    out.push_str("\n\nbackends:\n");
    let rows: Vec<Vec<String>> = snapshot
        .backends
        .iter()
        .map(|b| {
            let url = if b.provider.mock().is_some() { "in process".to_string() } else { b.base_url().to_string() };
            vec![b.name.clone(), b.provider.schema().to_string(), url]
        })
        .collect();
    table(&mut out, "  ", &rows);
    out.push_str("\nroutes, in match order (the first match wins; lower priorities are tried first, weights split a priority's traffic):\n");
    if snapshot.router.routes.is_empty() {
        out.push_str("  none: every request answers 404\n");
    }
    for (i, route) in snapshot.router.routes.iter().enumerate() {
        describe_route(&mut out, snapshot, i, route);
    }
    out.push('\n');
    match &snapshot.redis {
        _ if snapshot.limits.is_empty() => out.push_str("limits: none configured\n"),
        None => out.push_str("limits are counted in this process\n"),
        Some(r) => {
            let _ =
                writeln!(out, "limits are counted in Redis at {}, shared by every instance using it", r.url.display());
        }
    }
    out
}

fn describe_route(out: &mut String, snapshot: &Snapshot, i: usize, route: &Route) {
    let _ = write!(out, "  [{i}] {}", route.model.label());
    for (name, value) in &route.headers {
        let _ = write!(out, "  when {name}: {value}");
    }
    out.push('\n');
    let indent = "      ";
    // An earlier route without header conditions that matches every model this one does hides it.
    let hidden_by = snapshot.router.routes[..i]
        .iter()
        .enumerate()
        .find(|(_, earlier)| earlier.headers.is_empty() && earlier.model.covers(&route.model));
    if let Some((j, earlier)) = hidden_by {
        let _ = writeln!(out, "{indent}never used: route [{j}] {} matches every model it does", earlier.model.label());
    }
    let mut rows = vec![["priority", "weight", "share", "backend", "upstream model"].map(String::from).to_vec()];
    for t in &route.targets {
        let same: u32 = route.targets.iter().filter(|o| o.priority == t.priority).map(|o| o.weight).sum();
        let share = (f64::from(t.weight) * 100.0 / f64::from(same.max(1))).round();
        rows.push(vec![
            t.priority.to_string(),
            t.weight.to_string(),
            format!("{share}%"),
            snapshot.backends[t.backend].name.clone(),
            t.model.clone().unwrap_or_else(|| "(as requested)".into()),
        ]);
    }
    table(out, indent, &rows);
    let _ = writeln!(out, "{indent}clients: {}", clients_of(snapshot, &route.model));
    let limits: Vec<String> =
        snapshot.limits.iter().filter(|l| applies(l, &route.model)).map(|l| limit_text(l, &route.model)).collect();
    if limits.is_empty() {
        let _ = writeln!(out, "{indent}limits:  none");
    } else {
        for (k, l) in limits.iter().enumerate() {
            let _ = writeln!(out, "{indent}{}{l}", if k == 0 { "limits:  " } else { "         " });
        }
    }
}

/// The clients whose allowed models overlap the route's pattern (with the narrower patterns named).
fn clients_of(snapshot: &Snapshot, pattern: &ModelPattern) -> String {
    if snapshot.clients.is_empty() {
        return "anyone (no clients are configured: the gateway is open)".into();
    }
    let names: Vec<String> = snapshot
        .clients
        .iter()
        .filter_map(|c| {
            if c.models.iter().any(|m| m.covers(pattern)) {
                return Some(c.name.clone());
            }
            let some: Vec<&str> = c.models.iter().filter(|m| m.overlaps(pattern)).map(|m| m.label()).collect();
            (!some.is_empty()).then(|| format!("{} (only {})", c.name, some.join(", ")))
        })
        .collect();
    if names.is_empty() {
        "none of the configured clients".into()
    } else {
        names.join(", ")
    }
}

fn applies(limit: &Limit, pattern: &ModelPattern) -> bool {
    limit.models.is_empty() || limit.models.iter().any(|m| m.overlaps(pattern))
}

fn limit_text(limit: &Limit, pattern: &ModelPattern) -> String {
    let amount = match &limit.kind {
        Kind::Requests { max, window_ms } => format!("{max} requests per {}", period(*window_ms)),
        Kind::Tokens { max, window_ms, count } => {
            let what = match count {
                Count::Input => "input tokens".to_string(),
                Count::Output => "output tokens".to_string(),
                Count::Total => "tokens".to_string(),
                Count::Weighted(w) => format!("weighted tokens (input x{}, output x{})", w.input, w.output),
            };
            format!("{max} {what} per {}", period(*window_ms))
        }
        Kind::Concurrent { max } => format!("{max} requests at once"),
    };
    let key: Vec<String> = limit
        .key
        .iter()
        .map(|k| match k {
            KeyPart::Client => "client".to_string(),
            KeyPart::Model => "model".to_string(),
            KeyPart::Backend => "backend".to_string(),
            KeyPart::Header(h) => format!("header {h}"),
        })
        .collect();
    let mut text =
        format!("{}: {amount}, per {}", limit.name, if key.is_empty() { "gateway".into() } else { key.join(" + ") });
    if !limit.models.is_empty() && !limit.models.iter().any(|m| m.covers(pattern)) {
        let some: Vec<&str> = limit.models.iter().filter(|m| m.overlaps(pattern)).map(|m| m.label()).collect();
        let _ = write!(text, " (only for {})", some.join(", "));
    }
    text
}

/// `60000` → `1m`: the largest unit that divides the period.
fn period(ms: u64) -> String {
    for (unit, size) in [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)] {
        if ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

/// Rows with columns padded to their widest cell (the last column unpadded).
fn table(out: &mut String, indent: &str, rows: &[Vec<String>]) {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let mut line = String::from(indent);
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}  ", width = widths[c]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Environment};

    fn nothing(_: &str) -> Option<String> {
        None
    }

    fn report_of(text: &str) -> String {
        let env = |n: &str| (n == "K").then(|| "sk-k".to_string());
        let snapshot = Snapshot::build(Config::parse(text).unwrap(), &Environment { var: &env, file: &nothing }, None);
        report(&snapshot.unwrap())
    }

    #[test]
    fn routing_table_names_shares_clients_limits_and_hidden_routes() {
        let text = report_of(
            r#"{"backends":[{"name":"a","schema":"mock"},{"name":"b","schema":"openai","base_url":"http://10.0.0.1:8000/v1"}],
                "routes":[{"model":"gpt*","backends":[{"backend":"a","weight":3},{"backend":"b"},{"backend":"b","model":"small","priority":1}]},
                          {"model":"gpt-4o","backends":[{"backend":"b"}]}],
                "clients":[{"name":"all","key":"k1"},{"name":"mini","key":"k2","models":["gpt-4o-mini","claude*"]},
                           {"name":"other","key_env":"K","models":["claude*"]}],
                "limits":[{"name":"rpm","key":["client","header:x-user"],"requests":60,"per":"1m"},
                          {"name":"w","key":["client"],"models":["gpt-4o*"],"tokens":1000,"count":"weighted","weights":{"input":1,"output":4},"per":"1d"},
                          {"name":"c","key":[],"concurrent":8},
                          {"name":"claude","key":["model"],"models":["claude*"],"tokens":5,"count":"output","per":"90s"}]}"#,
        );
        let expected = "\
config OK: listen 127.0.0.1:8080, 2 backend(s), 2 route(s), 3 client(s)

backends:
  a  mock    in process
  b  openai  http://10.0.0.1:8000/v1

routes, in match order (the first match wins; lower priorities are tried first, weights split a priority's traffic):
  [0] gpt*
      priority  weight  share  backend  upstream model
      0         3       75%    a        (as requested)
      0         1       25%    b        (as requested)
      1         1       100%   b        small
      clients: all, mini (only gpt-4o-mini)
      limits:  rpm: 60 requests per 1m, per client + header x-user
               w: 1000 weighted tokens (input x1, output x4) per 1d, per client (only for gpt-4o*)
               c: 8 requests at once, per gateway
  [1] gpt-4o
      never used: route [0] gpt* matches every model it does
      priority  weight  share  backend  upstream model
      0         1       100%   b        (as requested)
      clients: all
      limits:  rpm: 60 requests per 1m, per client + header x-user
               w: 1000 weighted tokens (input x1, output x4) per 1d, per client
               c: 8 requests at once, per gateway

limits are counted in this process
";
        assert_eq!(text, expected, "\n{text}");
    }

    #[test]
    fn open_gateway_and_empty_routes_are_said_so() {
        let text = report_of(
            r#"{"backends":[{"name":"a","schema":"mock"}],"routes":[{"model":"*","backends":[{"backend":"a"}]}]}"#,
        );
        assert!(text.contains("clients: anyone (no clients are configured: the gateway is open)"), "{text}");
        assert!(text.contains("limits: none configured"), "{text}");
        assert!(report_of("{}").contains("none: every request answers 404"));
    }
}
