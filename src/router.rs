//! Routing: the request's model (and optionally headers) → an ordered list of backend candidates.
//! No IO; the random draw for weights is passed in.

use crate::config::{ConfigError, RetryConfig, RouteConfig};

/// A model name, or a prefix followed by `*` (`*` alone matches every model).
#[derive(Debug, Clone)]
pub struct ModelPattern {
    text: String,
    prefix: bool,
    /// As written in config (a bounded set: safe as a metric label).
    written: String,
    /// `written`'s metric label, interned once when the config is loaded.
    written_label: crate::metrics::Label,
}

impl ModelPattern {
    pub fn new(pattern: &str) -> ModelPattern {
        let written = pattern.to_string();
        let written_label = crate::metrics::label(pattern);
        match pattern.strip_suffix('*') {
            Some(prefix) => ModelPattern { text: prefix.to_string(), prefix: true, written, written_label },
            None => ModelPattern { text: pattern.to_string(), prefix: false, written, written_label },
        }
    }

    /// The metric label of `model`, a model this pattern matched: a model name is its own label, known
    /// since the config was loaded; one of the models a prefix matches is interned within the cap on
    /// distinct model names (`metrics::model_label`).
    pub fn label_of_matched(&self, model: &str) -> crate::metrics::Label {
        debug_assert!(self.matches(model));
        if self.prefix {
            crate::metrics::model_label(model)
        } else {
            self.written_label
        }
    }

    pub fn matches(&self, model: &str) -> bool {
        if self.prefix {
            model.starts_with(&self.text)
        } else {
            model == self.text
        }
    }

    /// The pattern as written in config (a bounded set: safe as a metric label).
    pub fn label(&self) -> &str {
        &self.written
    }

    /// Whether every model `other` matches is matched by this pattern too.
    pub fn covers(&self, other: &ModelPattern) -> bool {
        match (self.prefix, other.prefix) {
            (true, _) => other.text.starts_with(&self.text),
            (false, false) => self.text == other.text,
            (false, true) => false,
        }
    }

    /// Whether some model is matched by both patterns.
    pub fn overlaps(&self, other: &ModelPattern) -> bool {
        match (self.prefix, other.prefix) {
            (true, true) => self.text.starts_with(&other.text) || other.text.starts_with(&self.text),
            (true, false) => other.text.starts_with(&self.text),
            (false, true) => self.text.starts_with(&other.text),
            (false, false) => self.text == other.text,
        }
    }

    /// The name to list in `/v1/models`: only exact names are listable.
    pub fn exact_name(&self) -> Option<&str> {
        (!self.prefix).then_some(&self.text)
    }
}

/// One backend a route may send to.
#[derive(Debug, Clone)]
pub struct Target {
    /// Index into `Snapshot::backends`.
    pub backend: usize,
    /// The upstream model name when it differs from the client's.
    pub model: Option<String>,
    pub weight: u32,
    pub priority: u32,
}

#[derive(Debug, Clone)]
pub struct Route {
    pub model: ModelPattern,
    /// Lower-cased header name and the exact value required.
    pub headers: Vec<(String, String)>,
    /// Sorted by priority.
    pub targets: Vec<Target>,
    /// When a failed request is tried again.
    pub retry: RetryConfig,
}

#[derive(Debug, Default)]
pub struct Router {
    pub routes: Vec<Route>,
    /// Routes by path prefix for requests passed through without a model (`"passthrough": true`); their
    /// `model` pattern holds the path (its label in metrics and client permissions).
    pub passthrough: Vec<Route>,
}

impl Router {
    /// `backends` are the backend names, in config order (targets index into them).
    /// `retry` applies to routes without their own.
    pub fn build(routes: &[RouteConfig], backends: &[&str], retry: &RetryConfig) -> Result<Router, ConfigError> {
        let mut out = Vec::with_capacity(routes.len());
        let mut passthrough = Vec::new();
        for (i, r) in routes.iter().enumerate() {
            let error = |field: &str, message: &str| ConfigError {
                path: format!("routes[{i}]{field}"),
                message: message.to_string(),
            };
            match (r.passthrough, &r.path) {
                (true, None) => {
                    return Err(error(".path", "a passthrough route needs a path prefix like \"/v1/files\""))
                }
                (true, Some(_)) if !r.model.is_empty() => {
                    return Err(error(".model", "a passthrough route is chosen by path: it takes no model"))
                }
                (true, Some(p)) if !valid_path_prefix(p) => {
                    return Err(error(".path", "a path prefix under /v1 like \"/v1/files\" (no query, no `*`)"))
                }
                (false, Some(_)) => {
                    return Err(error(".path", "only passthrough routes (\"passthrough\": true) take a path"))
                }
                _ => {}
            }
            if !r.passthrough
                && (r.model.is_empty() || r.model.trim_end_matches('*').contains('*') || r.model.ends_with("**"))
            {
                return Err(ConfigError {
                    path: format!("routes[{i}].model"),
                    message: "a model name, optionally ending in a single `*`".into(),
                });
            }
            if r.backends.is_empty() {
                return Err(ConfigError {
                    path: format!("routes[{i}].backends"),
                    message: "at least one backend is required".into(),
                });
            }
            let mut targets = Vec::with_capacity(r.backends.len());
            for (j, t) in r.backends.iter().enumerate() {
                let Some(backend) = backends.iter().position(|b| *b == t.backend) else {
                    return Err(ConfigError {
                        path: format!("routes[{i}].backends[{j}].backend"),
                        message: format!("no backend named \"{}\"", t.backend),
                    });
                };
                if t.weight == 0 {
                    return Err(ConfigError {
                        path: format!("routes[{i}].backends[{j}].weight"),
                        message: "must be at least 1".into(),
                    });
                }
                targets.push(Target { backend, model: t.model.clone(), weight: t.weight, priority: t.priority });
            }
            targets.sort_by_key(|t| t.priority);
            let headers = r.headers.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.clone())).collect();
            let retry = r.retry.unwrap_or(*retry);
            match &r.path {
                Some(p) if r.passthrough => {
                    let path = p.trim_end_matches('/');
                    passthrough.push(Route { model: ModelPattern::new(path), headers, targets, retry });
                }
                _ => out.push(Route { model: ModelPattern::new(&r.model), headers, targets, retry }),
            }
        }
        Ok(Router { routes: out, passthrough })
    }

    /// The first passthrough route whose path prefix (whole segments) and headers match `path`.
    pub fn find_path<'a>(&self, path: &str, header: impl Fn(&str) -> Option<&'a str>) -> Option<&Route> {
        self.passthrough.iter().find(|r| {
            let prefix = r.model.label();
            path.strip_prefix(prefix).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
                && r.headers.iter().all(|(name, value)| header(name) == Some(value.as_str()))
        })
    }

    /// The first route whose model pattern and headers match. `header` looks a request header up by
    /// its lower-case name.
    pub fn find<'a>(&self, model: &str, header: impl Fn(&str) -> Option<&'a str>) -> Option<&Route> {
        self.routes.iter().find(|r| {
            r.model.matches(model) && r.headers.iter().all(|(name, value)| header(name) == Some(value.as_str()))
        })
    }
}

impl Route {
    /// The order in which to try this route's targets: by priority, and within one priority a
    /// weighted draw (`draw` is a uniformly random number) picks who goes first.
    pub fn plan(&self, mut draw: u64) -> Vec<&Target> {
        let mut plan: Vec<&Target> = Vec::with_capacity(self.targets.len());
        let mut start = 0;
        while start < self.targets.len() {
            let priority = self.targets[start].priority;
            let end = start + self.targets[start..].iter().take_while(|t| t.priority == priority).count();
            // The group is ordered in place, in the plan: each pick is moved to the front of what is left,
            // the rest keeping their order (as taking it out of a list would).
            let first = plan.len();
            plan.extend(&self.targets[start..end]);
            for at in first..plan.len() {
                let left = &plan[at..];
                let total: u64 = left.iter().map(|t| u64::from(t.weight)).sum();
                let mut pick = draw % total;
                draw = draw.rotate_left(17).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5851_F42D;
                let index = left
                    .iter()
                    .position(|t| {
                        let w = u64::from(t.weight);
                        if pick < w {
                            true
                        } else {
                            pick -= w;
                            false
                        }
                    })
                    .unwrap_or(0);
                plan[at..=at + index].rotate_right(1);
            }
            start = end;
        }
        plan
    }
}

/// `/v1` or a path below it, without a query, wildcard or empty segment.
fn valid_path_prefix(p: &str) -> bool {
    let p = p.trim_end_matches('/');
    (p == "/v1" || p.starts_with("/v1/"))
        && !p.contains(['?', '#', '*', ' '])
        && !p.contains("//")
        && p.bytes().all(|b| b.is_ascii_graphic())
}

/// A fast thread-local pseudo-random number (xorshift), for weighted picks. Not for secrets.
pub fn random_draw() -> u64 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new(
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
                | 1,
        );
    }
    STATE.with(|s| {
        let x = xorshift(s.get());
        s.set(x);
        x
    })
}

/// The next number of a xorshift sequence (Marsaglia's 13, 7, 17) from a non-zero `x`: the step of
/// [`random_draw`], and of the seeded sequences of the mock and of tests.
pub fn xorshift(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn build(json: &str) -> Result<Router, ConfigError> {
        let config = Config::parse(json).unwrap();
        let names: Vec<&str> = config.backends.iter().map(|b| b.name.as_str()).collect();
        Router::build(&config.routes, &names, &config.retry)
    }

    fn router(json: &str) -> Router {
        build(json).unwrap()
    }

    const TWO: &str = r#"{"backends":[{"name":"a","schema":"mock"},{"name":"b","schema":"mock"},{"name":"c","schema":"mock"}],
        "routes":[{"model":"gpt-4o","headers":{"X-Tier":"gold"},"backends":[{"backend":"c"}]},
                  {"model":"gpt-4o*","backends":[{"backend":"a","weight":3},{"backend":"b","weight":1},{"backend":"c","priority":1}]},
                  {"model":"*","backends":[{"backend":"c","model":"fallback"}]}]}"#;

    #[test]
    fn exact_and_prefix_match_first_wins_and_headers_narrow() {
        let r = router(TWO);
        let none = |_: &str| None;
        assert_eq!(r.find("gpt-4o", none).unwrap().targets.len(), 3);
        assert_eq!(r.find("gpt-4o", |h| (h == "x-tier").then_some("gold")).unwrap().targets.len(), 1);
        assert_eq!(r.find("gpt-4o-mini", none).unwrap().targets.len(), 3);
        assert_eq!(r.find("llama", none).unwrap().targets[0].model.as_deref(), Some("fallback"));
    }

    #[test]
    fn odd_model_patterns_are_config_errors_not_panics() {
        for model in ["gpt-ü", "ü*", "a*b", "**", "*"] {
            let json = format!(
                r#"{{"backends":[{{"name":"a","schema":"mock"}}],"routes":[{{"model":"{model}","backends":[{{"backend":"a"}}]}}]}}"#
            );
            let result = build(&json);
            assert_eq!(result.is_ok(), ["gpt-ü", "ü*", "*"].contains(&model), "{model}");
        }
    }

    #[test]
    fn passthrough_routes_match_whole_path_segments_and_are_checked() {
        let r = router(
            r#"{"backends":[{"name":"a","schema":"mock"}],
                "routes":[{"passthrough":true,"path":"/v1/files","backends":[{"backend":"a"}]},
                          {"model":"m","backends":[{"backend":"a"}]}]}"#,
        );
        let none = |_: &str| None;
        assert!(r.find_path("/v1/files", none).is_some());
        assert!(r.find_path("/v1/files/file-1/content", none).is_some());
        assert!(r.find_path("/v1/filesystem", none).is_none());
        assert_eq!(r.routes.len(), 1, "passthrough routes are not model routes");
        for (bad, path) in [
            (r#"{"passthrough":true,"backends":[{"backend":"a"}]}"#, "routes[0].path"),
            (r#"{"passthrough":true,"path":"/files","backends":[{"backend":"a"}]}"#, "routes[0].path"),
            (r#"{"passthrough":true,"path":"/v1/x","model":"m","backends":[{"backend":"a"}]}"#, "routes[0].model"),
            (r#"{"model":"m","path":"/v1/x","backends":[{"backend":"a"}]}"#, "routes[0].path"),
            (r#"{"backends":[{"backend":"a"}]}"#, "routes[0].model"),
        ] {
            let e = build(&format!(r#"{{"backends":[{{"name":"a","schema":"mock"}}],"routes":[{bad}]}}"#)).unwrap_err();
            assert_eq!(e.path, path, "{bad}: {e}");
        }
    }

    #[test]
    fn weights_split_traffic_and_priority_orders_fallback() {
        let r = router(TWO);
        let route = r.find("gpt-4o-mini", |_| None).unwrap();
        let mut first_a = 0;
        for draw in 0..4000u64 {
            let plan = route.plan(draw.wrapping_mul(0x2545_F491_4F6C_DD1D));
            assert_eq!(plan.len(), 3);
            assert_eq!(plan[2].backend, 2, "priority 1 is always last");
            if plan[0].backend == 0 {
                first_a += 1;
            }
        }
        assert!((2700..3300).contains(&first_a), "weight 3:1 gave {first_a}/4000");
    }

    /// The plan of a weighted pick that takes each choice out of a list: what `plan` did before it
    /// ordered the groups in place, kept here as the model it must match draw for draw.
    fn plan_by_removal(targets: &[Target], mut draw: u64) -> Vec<usize> {
        let mut plan = Vec::new();
        let mut start = 0;
        while start < targets.len() {
            let priority = targets[start].priority;
            let end = start + targets[start..].iter().take_while(|t| t.priority == priority).count();
            let mut group: Vec<&Target> = targets[start..end].iter().collect();
            while !group.is_empty() {
                let total: u64 = group.iter().map(|t| u64::from(t.weight)).sum();
                let mut pick = draw % total;
                draw = draw.rotate_left(17).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5851_F42D;
                let mut index = 0;
                while pick >= u64::from(group[index].weight) {
                    pick -= u64::from(group[index].weight);
                    index += 1;
                }
                plan.push(group.remove(index).backend);
            }
            start = end;
        }
        plan
    }

    #[test]
    fn a_plan_is_the_weighted_pick_without_replacement_draw_for_draw() {
        let backends: Vec<String> = (0..7).map(|i| format!(r#"{{"name":"b{i}","schema":"mock"}}"#)).collect();
        let targets = r#"{"backend":"b0","weight":1},{"backend":"b1","weight":2},{"backend":"b2","weight":3},
            {"backend":"b3","weight":4},{"backend":"b4","weight":5},{"backend":"b5","weight":7,"priority":1},
            {"backend":"b6","priority":1}"#;
        let r = router(&format!(
            r#"{{"backends":[{}],"routes":[{{"model":"m","backends":[{targets}]}}]}}"#,
            backends.join(",")
        ));
        let route = r.find("m", |_| None).unwrap();
        for draw in 0..5000u64 {
            let draw = draw.wrapping_mul(0x2545_F491_4F6C_DD1D);
            let plan: Vec<usize> = route.plan(draw).iter().map(|t| t.backend).collect();
            assert_eq!(plan, plan_by_removal(&route.targets, draw), "draw {draw}");
        }
    }

    #[test]
    fn patterns_cover_and_overlap() {
        let p = ModelPattern::new;
        assert!(p("*").covers(&p("gpt-4o")) && p("*").covers(&p("gpt*")));
        assert!(p("gpt*").covers(&p("gpt-4o*")) && p("gpt*").covers(&p("gpt-4o")));
        assert!(!p("gpt-4o*").covers(&p("gpt*")) && !p("gpt-4o").covers(&p("gpt-4o*")));
        assert!(p("gpt-4o").covers(&p("gpt-4o")) && !p("gpt-4o").covers(&p("gpt-4")));
        assert!(p("gpt-4o*").overlaps(&p("gpt*")) && p("gpt*").overlaps(&p("gpt-4o*")));
        assert!(p("gpt-4o-mini").overlaps(&p("gpt-4o*")) && p("gpt-4o*").overlaps(&p("gpt-4o-mini")));
        assert!(!p("claude*").overlaps(&p("gpt*")) && !p("gpt-4").overlaps(&p("gpt-4o*")));
    }
}
