//! Optional stand-in for the Deployment/StatefulSet/DaemonSet controllers and the Argo
//! Rollouts controller (argoproj.io Rollouts, when their CRD is installed): after a generation
//! change, wait `rollout_delay`, then report the rollout complete in `.status`, so a
//! controller that waits for "rolled out" can observe it. No pods are created.
//!
//! Stepped (`stepped = true`): half way through the delay the status first shows the new
//! generation observed with part of the replicas updated (fewer than desired), as a real
//! rolling update does, and only at the end all of them.
//!
//! Rollouts follow Argo's restart (`spec.restartAt`): the pods are replaced in place of a new
//! revision, so half way one replica is unavailable and `status.restartedAt` still holds the
//! earlier restart (phase `Progressing`); at the end `status.restartedAt` is `spec.restartAt`,
//! phase `Healthy`. `observedGeneration` is a string, as Argo writes it. A paused Rollout
//! (`spec.paused`) reports phase `Paused` and does not finish its restart until unpaused.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use crate::Inner;
use crate::registry::Flavor;
use crate::store::{ChangeKind, Sub, WriteOpts};

pub fn spawn(inner: Arc<Inner>, rollout_delay: Duration, stepped: bool) {
    let mut rx = inner
        .state
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .subscribe();
    tokio::spawn(async move {
        // (group/resource, namespace, name, generation) already scheduled.
        let scheduled = Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
        loop {
            let change = match rx.recv().await {
                Ok(c) => c,
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return,
            };
            let rollout = is_rollout(&change.gr);
            if change.kind == ChangeKind::Deleted || !(change.gr.group == "apps" || rollout) {
                continue;
            }
            let obj = &change.object;
            let generation = obj
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            let observed = observed_generation(obj);
            if generation == observed {
                continue;
            }
            let name = obj
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let key = (
                change.gr.resource.clone(),
                change.namespace.clone(),
                name.clone(),
                generation,
            );
            if !scheduled
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key.clone())
            {
                continue;
            }
            let inner = inner.clone();
            let gr = change.gr.clone();
            let ns = change.namespace.clone();
            let scheduled = scheduled.clone();
            tokio::spawn(async move {
                if stepped {
                    tokio::time::sleep(rollout_delay / 2).await;
                    if !write_status(&inner, &gr, &ns, &name, generation, true) {
                        scheduled
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .remove(&key);
                        return;
                    }
                    tokio::time::sleep(rollout_delay - rollout_delay / 2).await;
                } else {
                    tokio::time::sleep(rollout_delay).await;
                }
                write_status(&inner, &gr, &ns, &name, generation, false);
                scheduled
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&key);
            });
        }
    });
}

fn is_rollout(gr: &crate::registry::GroupResource) -> bool {
    gr.group == "argoproj.io" && gr.resource == "rollouts"
}

/// `status.observedGeneration`: a number for apps/v1, a string for Argo Rollouts.
fn observed_generation(obj: &Value) -> i64 {
    match obj.pointer("/status/observedGeneration") {
        Some(Value::String(s)) => s.parse().unwrap_or(0),
        Some(v) => v.as_i64().unwrap_or(0),
        None => 0,
    }
}

/// An Argo Rollout's status for generation `generation`: half way through a restart
/// (`partial`), done, or paused (the restart waits).
fn rollout_status(cur: &Value, name: &str, generation: i64, replicas: i64, partial: bool) -> Value {
    let paused = cur.pointer("/spec/paused").and_then(Value::as_bool) == Some(true);
    let earlier = cur.pointer("/status/restartedAt").cloned();
    let requested = cur.pointer("/spec/restartAt").cloned();
    let hash = format!("{:x}", generation * 0x9e37 + 0x5bd1);
    let mut st = json!({
        "observedGeneration": generation.to_string(),
        "replicas": replicas, "updatedReplicas": replicas, "HPAReplicas": replicas,
        "readyReplicas": replicas, "availableReplicas": replicas,
        "currentPodHash": hash, "stableRS": hash,
        "selector": format!("app={name}"),
        "phase": "Healthy",
    });
    let waiting = paused || partial;
    if waiting {
        // One pod replaced at a time: it is not available yet.
        let available = (replicas - 1).max(0);
        st["readyReplicas"] = json!(available);
        st["availableReplicas"] = json!(available);
        st["phase"] = json!(if paused { "Paused" } else { "Progressing" });
        st["message"] = json!(if paused {
            "manually paused"
        } else {
            "more replicas need to be updated"
        });
        if paused {
            st["pauseConditions"] = json!([{"reason": "PausedByUser", "startTime": requested.clone().unwrap_or(json!(null))}]);
            st["controllerPause"] = json!(true);
        }
    }
    let restarted = if waiting {
        earlier
    } else {
        requested.or(earlier)
    };
    if let Some(t) = restarted {
        st["restartedAt"] = t;
    }
    st
}

/// Writes the rollout status of generation `generation` of `ns/name`: complete, or (`partial`)
/// observed with fewer replicas updated than desired. False when the object is gone or has
/// moved on to a newer generation (which is handled by its own change).
fn write_status(
    inner: &Inner,
    gr: &crate::registry::GroupResource,
    ns: &str,
    name: &str,
    generation: i64,
    partial: bool,
) -> bool {
    let mut st = inner.state.lock().unwrap_or_else(|e| e.into_inner());
    let Some(rt) = st.registry.get(gr) else {
        return false;
    };
    let Some(cur) = st.get_raw(gr, ns, name).cloned() else {
        return false;
    };
    if cur.pointer("/metadata/generation").and_then(Value::as_i64) != Some(generation) {
        return false;
    }
    let replicas = cur
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    // Half way: at least one replica still on the old template (none of one replica).
    let updated = if partial { replicas / 2 } else { replicas };
    let old = replicas - updated;
    let status = match rt.flavor {
        _ if is_rollout(gr) => rollout_status(&cur, name, generation, replicas, partial),
        Flavor::DaemonSet => json!({
            "observedGeneration": generation,
            "currentNumberScheduled": 1, "desiredNumberScheduled": 1, "numberMisscheduled": 0,
            "updatedNumberScheduled": if partial { 0 } else { 1 },
            "numberAvailable": 1, "numberReady": 1,
        }),
        Flavor::StatefulSet => json!({
            "observedGeneration": generation, "replicas": replicas, "updatedReplicas": updated,
            "readyReplicas": replicas, "availableReplicas": replicas, "currentReplicas": if partial { old } else { replicas },
            "currentRevision": format!("{name}-{}", if partial { generation - 1 } else { generation }),
            "updateRevision": format!("{name}-{generation}"),
        }),
        _ if partial => json!({
            "observedGeneration": generation,
            // A surge replica of the new template next to the old ones.
            "replicas": replicas + 1, "updatedReplicas": updated,
            "readyReplicas": replicas, "availableReplicas": replicas, "unavailableReplicas": 1,
            "conditions": [
                {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable", "message": "Deployment has minimum availability."},
                {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated", "message": format!("ReplicaSet \"{name}\" is progressing.")},
            ],
        }),
        _ => json!({
            "observedGeneration": generation, "replicas": replicas, "updatedReplicas": replicas,
            "readyReplicas": replicas, "availableReplicas": replicas,
            "conditions": [
                {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable", "message": "Deployment has minimum availability."},
                {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable", "message": format!("ReplicaSet \"{name}\" has successfully progressed.")},
            ],
        }),
    };
    let mut next = cur.clone();
    next["status"] = status;
    let opts = WriteOpts {
        manager: if is_rollout(gr) {
            "rollouts-controller".into()
        } else {
            "kube-controller-manager".into()
        },
        ..Default::default()
    };
    let version = rt.storage_version.clone();
    if let Err(e) = st.update(&rt, &version, ns, name, next, Sub::Status, &opts, false) {
        tracing::debug!(
            "workload simulation: status update of {ns}/{name} failed: {}",
            e.message
        );
        return false;
    }
    true
}
