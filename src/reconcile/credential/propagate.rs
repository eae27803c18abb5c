//! Glue from AWSCURRENT to the workloads: the Kubernetes Secret is written, dependents are
//! rolled when the value really changed, and their rollouts are watched to completion.

use kube::runtime::events::EventType;
use std::time::Duration;

use jiff::Timestamp;

use super::super::conditions::SYNCED;
use super::aws_secret::Current;
use super::{Error, Progress, Step};
use kube::ResourceExt;

use crate::propagation::rollout::{Restarted, kind_name};
use crate::propagation::{self, SyncedValue};
use crate::reconcile::Reason;

pub(super) async fn sync_and_roll(
    s: Step<'_>,
    current: &Current,
    p: &mut Progress,
) -> Result<(), Error> {
    let Step { cred, ctx, .. } = s;
    let synced = SyncedValue {
        version_id: &current.version_id,
        value: &current.value,
    };
    let outcome = propagation::sync::write_target_secret(&ctx.client, &ctx.secrets, cred, &synced)
        .await
        .map_err(Error::from)
        .inspect_err(|e| {
            p.condition(SYNCED, false, e.reason(), e.to_string());
        })?;
    let previous = p.status.synced_version_id.clone();
    p.status.target_secret = Some(outcome.secret_name.clone());
    if outcome.written {
        // Its watch event brings nothing this reconcile does not know (an edit by anyone
        // else carries another resourceVersion and still reconciles).
        ctx.own_writes.record(
            crate::echo::key(
                "Secret",
                &cred.namespace().unwrap_or_default(),
                &outcome.secret_name,
            ),
            outcome.resource_version.clone(),
        );
        ctx.metrics.secret_synced("written");
        if let Some(seen) = ctx.secrets.change_seen_at(&current.version_id) {
            ctx.metrics.sync_lag(seen.elapsed());
        }
        if let Some(event_time) = ctx.secrets.change_event_time(&current.version_id) {
            ctx.metrics.event_lag(event_time);
        }
        ctx.event(
            cred,
            EventType::Normal,
            Reason::SecretSynced,
            "Sync",
            format!(
                "Secret {} now holds AWSCURRENT version {}",
                outcome.secret_name, current.version_id
            ),
        )
        .await;
    }
    // Roll only when the value really changed from one the workloads already ran with: never
    // on first creation (no previous version), never on a no-op reconcile. syncedVersionId
    // moves on only once every dependent is rolled: a rollout cut short (an error, the
    // cluster-wide rate limit, a crash) is finished by the next reconcile, and workloads
    // already annotated with this version are skipped, so nothing restarts twice.
    let changed = previous
        .as_deref()
        .is_some_and(|prev| prev != current.version_id);
    let mut rollout_left = None;
    if changed {
        // Entries for older versions describe rollouts this one supersedes.
        p.status
            .rolled_workloads
            .retain(|w| w.version_id == current.version_id);
        let rolls = propagation::rollout::roll_dependents(
            &ctx.client,
            ctx.settings.workload_kinds,
            &ctx.rollouts,
            cred,
            &outcome.secret_name,
            &current.version_id,
            &mut p.status.rolled_workloads,
        )
        .await;
        report_restarts(
            s,
            &rolls.restarted,
            &outcome.secret_name,
            &current.version_id,
        )
        .await;
        if let Some(e) = rolls.failed {
            let e = Error::from(e);
            p.condition(
                SYNCED,
                false,
                e.reason(),
                format!(
                    "Secret {} holds AWSCURRENT version {}, but rolling its dependents failed: {e}",
                    outcome.secret_name, current.version_id
                ),
            );
            return Err(e);
        }
        rollout_left = rolls.wait;
    }
    match rollout_left {
        Some(wait) => {
            p.condition(SYNCED, true, Reason::RollingOut, format!(
                "Secret {} holds AWSCURRENT version {}; more dependents roll once the cluster-wide rollout limit allows",
                outcome.secret_name, current.version_id
            ));
            p.requeue_within(wait);
        }
        None => {
            if previous.as_deref() != Some(current.version_id.as_str()) {
                p.status.synced_version_id = Some(current.version_id.clone());
                p.status.synced_at = Some(Timestamp::now().to_string());
            }
            p.condition(
                SYNCED,
                true,
                Reason::Synced,
                format!(
                    "Secret {} holds AWSCURRENT version {}",
                    outcome.secret_name, current.version_id
                ),
            );
        }
    }
    let pending = propagation::rollout::observe_completion(
        &ctx.client,
        ctx.settings.workload_kinds,
        cred,
        &outcome.secret_name,
        &mut p.status.rolled_workloads,
    )
    .await?;
    if pending {
        // Rotation (alternating users) waits for completedAt; a Kubernetes GET per rolling
        // workload is cheap, so look again soon.
        p.requeue_within(Duration::from_secs(2));
    }
    Ok(())
}

/// For each dependent restarted: the rollout metric, an Event on the workload (so `kubectl
/// describe` on it says why it restarted) and one on the credential.
async fn report_restarts(
    s: Step<'_>,
    restarted: &[Restarted],
    secret_name: &str,
    version_id: &str,
) {
    let Step { cred, ctx, .. } = s;
    let cred_name = format!(
        "{}/{}",
        cred.namespace().unwrap_or_default(),
        cred.name_any()
    );
    for w in restarted {
        let kind = kind_name(w.kind);
        ctx.metrics.rollout(kind);
        ctx.event_on(
            &w.reference,
            EventType::Normal,
            Reason::RolledByRdsCredential,
            "Rollout",
            format!(
                "restarted for AWSCURRENT version {version_id} of Secret {secret_name} (RdsCredential {cred_name})"
            ),
        )
        .await;
        ctx.event(
            cred,
            EventType::Normal,
            Reason::WorkloadRolled,
            "Rollout",
            format!(
                "restarted {kind} {} for AWSCURRENT version {version_id}",
                w.name
            ),
        )
        .await;
    }
}
