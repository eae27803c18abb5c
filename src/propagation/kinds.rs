//! Kind-specific restart decisions for Argo Rollouts and CronJobs (issue 16), as pure
//! functions on the objects' JSON so they are table-tested without a cluster;
//! [`rollout`](super::rollout) lists, patches and waits with them.

use jiff::Timestamp;
use serde_json::{Value, json};

/// The merge patch that restarts an Argo Rollout the way Reloader's `rollout-strategy:
/// restart` and `kubectl argo rollouts restart` do: `spec.restartAt`, never a pod-template
/// change (that would be a new revision and start a canary analysis).
pub fn rollout_restart_patch(now: Timestamp) -> Value {
    json!({ "spec": { "restartAt": now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string() } })
}

/// The merge patch for a CronJob: the job template's pod-template annotations, so the next
/// Job starts with the new value. Running Jobs are not touched (they are not restarted).
pub fn cronjob_restart_patch(annotations: &serde_json::Map<String, Value>) -> Value {
    json!({ "spec": { "jobTemplate": { "spec": { "template": { "metadata": {
        "annotations": annotations } } } } } })
}

/// Whether the Argo Rollouts controller has finished the restart requested at `spec.restartAt`:
/// it copies the time to `status.restartedAt` once every pod created before it was replaced;
/// the current spec observed (Argo Rollouts reports `observedGeneration` as a string); all
/// replicas updated and available; and not paused or degraded (phase `Healthy`).
pub fn rollout_restart_complete(rollout: &Value) -> bool {
    let spec = &rollout["spec"];
    let status = &rollout["status"];
    let Some(requested) = spec["restartAt"].as_str() else {
        // Never restarted by anyone: nothing to wait for beyond a healthy rollout.
        return rollout_healthy(rollout);
    };
    let (Ok(requested), Some(Ok(done))) = (
        requested.parse::<Timestamp>(),
        status["restartedAt"].as_str().map(str::parse::<Timestamp>),
    ) else {
        return false;
    };
    done >= requested && rollout_healthy(rollout)
}

/// Whether an active Job of a CronJob may still run with a credential older than `version_id`:
/// it has not finished, and its pod template does not carry `version_id` under the version
/// annotation `key` (Jobs copy the CronJob's job template, so a Job created after the CronJob
/// was rolled carries it; any other was started before the switch). A restart of a CronJob is
/// its patch; what the alternating-users wait waits for is these Jobs finishing.
pub fn job_may_hold_previous(job: &Value, key: &str, version_id: &str) -> bool {
    let status = &job["status"];
    let finished = status["completionTime"].is_string()
        || status["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| {
                matches!(c["type"].as_str(), Some("Complete" | "Failed")) && c["status"] == "True"
            });
    let carried = job["spec"]["template"]["metadata"]["annotations"][key].as_str();
    !finished && carried != Some(version_id)
}

fn rollout_healthy(rollout: &Value) -> bool {
    let status = &rollout["status"];
    let generation = rollout["metadata"]["generation"].as_i64();
    let observed = match &status["observedGeneration"] {
        Value::String(s) => s.parse::<i64>().ok(),
        v => v.as_i64(),
    };
    let replicas = rollout["spec"]["replicas"].as_i64().unwrap_or(1);
    let count = |k: &str| status[k].as_i64().unwrap_or(0);
    generation.is_some()
        && observed == generation
        && count("updatedReplicas") == replicas
        && count("availableReplicas") == replicas
        && count("replicas") == replicas
        && status["phase"].as_str() == Some("Healthy")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rollout(restart_at: Option<&str>, status: Value) -> Value {
        let mut r =
            json!({ "metadata": { "generation": 3 }, "spec": { "replicas": 2 }, "status": status });
        if let Some(t) = restart_at {
            r["spec"]["restartAt"] = json!(t);
        }
        r
    }

    fn done(restarted_at: &str) -> Value {
        json!({ "observedGeneration": "3", "restartedAt": restarted_at, "replicas": 2,
                "updatedReplicas": 2, "availableReplicas": 2, "phase": "Healthy" })
    }

    #[test]
    fn rollout_restart_completion() {
        let at = "2026-12-02T13:00:00Z";
        let mut partial = done(at);
        partial["restartedAt"] = json!("2026-12-02T12:00:00Z");
        let mut unavailable = done(at);
        unavailable["availableReplicas"] = json!(1);
        let mut paused = done(at);
        paused["phase"] = json!("Paused");
        let mut stale = done(at);
        stale["observedGeneration"] = json!("2");
        let mut numeric = done(at);
        numeric["observedGeneration"] = json!(3);
        let table: &[(&str, Value, bool)] = &[
            (
                "restarted, all available",
                rollout(Some(at), done(at)),
                true,
            ),
            (
                "observedGeneration as a number",
                rollout(Some(at), numeric),
                true,
            ),
            ("an earlier restart only", rollout(Some(at), partial), false),
            ("no restartedAt yet", rollout(Some(at), json!({})), false),
            (
                "one replica not available",
                rollout(Some(at), unavailable),
                false,
            ),
            ("paused", rollout(Some(at), paused), false),
            ("spec not observed", rollout(Some(at), stale), false),
            ("never restarted, healthy", rollout(None, done(at)), true),
            ("garbage restartAt", rollout(Some("soon"), done(at)), false),
        ];
        for (what, r, want) in table {
            assert_eq!(rollout_restart_complete(r), *want, "{what}");
        }
    }

    #[test]
    fn which_jobs_of_a_cronjob_hold_the_previous_credential() {
        let key = "app-db.rdscred.io/version-id";
        let job = |carried: Option<&str>, status: Value| {
            let mut j = json!({ "spec": { "template": { "metadata": {} } }, "status": status });
            if let Some(v) = carried {
                j["spec"]["template"]["metadata"]["annotations"] = json!({ key: v });
            }
            j
        };
        let running = json!({ "active": 1, "startTime": "2026-12-02T12:00:00Z" });
        let done = json!({ "succeeded": 1, "completionTime": "2026-12-02T12:05:00Z",
            "conditions": [{ "type": "Complete", "status": "True" }] });
        let failed = json!({ "failed": 1, "conditions": [{ "type": "Failed", "status": "True" }] });
        let not_failed =
            json!({ "active": 1, "conditions": [{ "type": "Failed", "status": "False" }] });
        let table: &[(&str, Value, bool)] = &[
            (
                "running, started from the rolled template",
                job(Some("v2"), running.clone()),
                false,
            ),
            (
                "running, from the template before the roll",
                job(Some("v1"), running.clone()),
                true,
            ),
            (
                "running, from a template rdscred never annotated",
                job(None, running),
                true,
            ),
            ("finished before the switch", job(Some("v1"), done), false),
            ("failed (no more pods)", job(Some("v1"), failed), false),
            (
                "a False Failed condition is not finished",
                job(Some("v1"), not_failed),
                true,
            ),
            (
                "no status yet (just created)",
                job(Some("v1"), json!({})),
                true,
            ),
        ];
        for (what, j, want) in table {
            assert_eq!(job_may_hold_previous(j, key, "v2"), *want, "{what}");
        }
    }

    #[test]
    fn patches_touch_only_the_restart_fields() {
        let now: Timestamp = "2026-12-02T13:00:00.5Z".parse().unwrap();
        assert_eq!(
            rollout_restart_patch(now),
            json!({ "spec": { "restartAt": "2026-12-02T13:00:00Z" } })
        );
        let mut a = serde_json::Map::new();
        a.insert("rdscred.io/restartedAt".into(), json!("t"));
        assert_eq!(
            cronjob_restart_patch(&a)["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["annotations"]
                ["rdscred.io/restartedAt"],
            json!("t")
        );
    }
}
