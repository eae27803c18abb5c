//! rdscred: one controller for the whole life of an application's database credential on AWS.
//!
//! # Layers
//!
//! Every module imports only from its own layer or below, and the modules of one layer import
//! each other without a cycle; data flows down (a reconcile calls into propagation and the
//! engines, which return what they did and never call back up). The test `layers_hold` reads
//! every `crate::` path in `src/` and fails on an import that goes up or closes a cycle.
//!
//! 5. [`runtime`]: the kube-runtime controllers and watches, the bulk poller, event-driven
//!    change detection (EventBridge → SQS) — when reconciles happen; [`cli`]: `rdscred status`
//!    / `explain`, read-only views of what the controller did and would do;
//! 4. [`reconcile`]: reconcile of each kind: decisions, conditions, Events, status, typed
//!    errors → requeue policy; the only place that publishes Events and status;
//! 3. [`context`]: what every reconcile shares (clients, caches, limiters, settings);
//! 2. [`rotation`]: the four-step rotation protocol; [`propagation`]: Kubernetes Secret sync
//!    and workload rollouts (its own error type, narrow inputs);
//! 1. [`aws`]: Secrets Manager and RDS access, ownership tags, the secret-metadata cache;
//!    [`engine`]: PostgreSQL and MySQL/MariaDB users, privileges, logins; [`access`]: who may
//!    read a secret (its resource policy); [`iam`]: the controller's IAM policy;
//!    [`telemetry`]: logs, metrics, the HTTP surface;
//! 0. [`crd`]: the two custom resources; [`secret`]: secret values (redacted `Debug`), the RDS
//!    credential JSON, CSPRNG passwords; [`template`]: key templates; [`schedule`]: when
//!    rotations are due; [`leader`]: leader election on a Lease; [`store`]: what the
//!    reflector stores keep of an object; [`shard`]: which shard owns a credential; [`echo`]:
//!    our own writes coming back through the watches; [`limit`]: token buckets for AWS call
//!    rates.

pub mod access;
pub mod aws;
pub mod cli;
pub mod context;
pub mod crd;
pub mod echo;
pub mod engine;
pub mod iam;
pub mod leader;
pub mod limit;
pub mod propagation;
pub mod reconcile;
pub mod rotation;
pub mod runtime;
pub mod schedule;
pub mod secret;
pub mod shard;
pub mod store;
pub mod telemetry;
pub mod template;

/// `0.1.0 (commit 1a2b3c4...)`: the crate version and the commit the binary was built from,
/// taken from `RDSCRED_GIT_COMMIT` at compile time (the image build passes it in, as its
/// context has no `.git`), `unknown` otherwise. What `rdscred --version` prints.
pub fn version() -> &'static str {
    static VERSION: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let commit = option_env!("RDSCRED_GIT_COMMIT")
            .filter(|c| !c.is_empty())
            .unwrap_or("unknown");
        format!("{} (commit {commit})", env!("CARGO_PKG_VERSION"))
    });
    &VERSION
}

/// The layers of the module doc, bottom first.
#[cfg(test)]
const LAYERS: &[&[&str]] = &[
    &[
        "crd", "secret", "template", "schedule", "leader", "store", "shard", "echo", "limit",
    ],
    &["aws", "engine", "access", "iam", "telemetry"],
    &["rotation", "propagation"],
    &["context"],
    &["reconcile"],
    &["runtime", "cli"],
];

#[cfg(test)]
mod layering {
    use std::collections::{BTreeMap, BTreeSet};

    use super::LAYERS;

    /// Top-level modules each top-level module names through `crate::…` (also inside
    /// `use crate::{a, b}`), comments left out.
    fn imports() -> BTreeMap<String, BTreeSet<String>> {
        let path = regex::Regex::new(r"crate::(\{[^}]*\}|\w+)").unwrap();
        let first = regex::Regex::new(r"(?:^|[{,]\s*)(\w+)").unwrap();
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (file, text) in crate::reconcile::rust_sources_under(&["src"]) {
            let rel = file
                .strip_prefix(concat!(env!("CARGO_MANIFEST_DIR"), "/src/"))
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let module = rel
                .split('/')
                .next()
                .unwrap()
                .trim_end_matches(".rs")
                .to_owned();
            if module == "lib" || module == "main" {
                continue;
            }
            let entry = graph.entry(module.clone()).or_default();
            for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
                for m in path.captures_iter(line) {
                    let target = &m[1];
                    let names: Vec<String> = if target.starts_with('{') {
                        first
                            .captures_iter(target.trim_matches(['{', '}']))
                            .map(|c| c[1].to_owned())
                            .collect()
                    } else {
                        vec![target.to_owned()]
                    };
                    entry.extend(names.into_iter().filter(|n| *n != module && n != "self"));
                }
            }
        }
        graph
    }

    fn layer_of(module: &str) -> usize {
        LAYERS
            .iter()
            .position(|l| l.contains(&module))
            .unwrap_or_else(|| {
                panic!("module {module} is in no layer: add it to LAYERS and the lib.rs doc")
            })
    }

    /// A cycle through `start`, if any (depth-first).
    fn cycle(graph: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
        fn walk(
            graph: &BTreeMap<String, BTreeSet<String>>,
            at: &str,
            start: &str,
            path: &mut Vec<String>,
            seen: &mut BTreeSet<String>,
        ) -> bool {
            for next in graph.get(at).into_iter().flatten() {
                if next == start {
                    return true;
                }
                if seen.insert(next.clone()) {
                    path.push(next.clone());
                    if walk(graph, next, start, path, seen) {
                        return true;
                    }
                    path.pop();
                }
            }
            false
        }
        let mut path = vec![start.to_owned()];
        walk(graph, start, start, &mut path, &mut BTreeSet::new()).then_some(path)
    }

    #[test]
    fn layers_hold() {
        let graph = imports();
        let mut wrong = Vec::new();
        for (module, targets) in &graph {
            for target in targets {
                if layer_of(target) > layer_of(module) {
                    wrong.push(format!("{module} imports {target}, a higher layer"));
                }
            }
            if let Some(c) = cycle(&graph, module) {
                wrong.push(format!("cycle: {} -> {module}", c.join(" -> ")));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn the_checker_sees_what_it_must() {
        let graph: BTreeMap<String, BTreeSet<String>> = [
            ("a", vec!["b"]),
            ("b", vec!["c"]),
            ("c", vec!["a"]),
            ("d", vec!["a"]),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
        .collect();
        assert_eq!(
            cycle(&graph, "a"),
            Some(vec!["a".into(), "b".into(), "c".into()])
        );
        assert_eq!(cycle(&graph, "d"), None);
        // Grouped imports count too.
        assert!(imports()["reconcile"].contains("crd"));
        assert_eq!(layer_of("runtime"), LAYERS.len() - 1);
    }
}
