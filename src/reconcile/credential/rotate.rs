//! Rotations of a managed credential: an interrupted one resumed (and its claim settled), the
//! native Lambda rotator configured, and a due, allowed rotation run under a claim.

use std::time::{Duration, Instant};

use jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::events::EventType;
use tracing::info;

use super::super::conditions::{self, ROTATING};
use super::super::request::{self, ClaimState, Trigger};
use super::aws_secret::{Current, current_value, refreshed_meta};
use super::gate::{rotation_blocked, schedule_due, schedule_next_rotation};
use super::{Error, Managed, Progress, ROTATE_ANNOTATION, Step, ns_of, strategy_name};
use crate::aws::SecretMeta;
use crate::crd::{RdsCredential, RotationClaim, RotationSpec, RotationStrategy, Rotator};
use crate::propagation;
use crate::reconcile::Reason;
use crate::rotation::{self, RotationJob, RotationOutcome};
use crate::schedule::RotationPlan;

/// Finishes (or rolls back) a rotation interrupted by a crash, then records any rotation of
/// ours that the status does not show yet (one finished by this call, or one whose controller
/// died after finishSecret but before writing the status). Recording it answers the request
/// that started it (annotation, schedule): otherwise the next step would rotate AGAIN at once,
/// before the workloads were rolled onto the resumed version, and under alternating users
/// re-password the user those pods still run with.
pub(super) async fn resume_rotation(
    m: Managed<'_>,
    meta: &SecretMeta,
    p: &mut Progress,
) -> Result<SecretMeta, Error> {
    let Managed {
        step: s @ Step { cred, ctx, db, .. },
        plan,
        admin,
        rotation: spec,
    } = m;
    let uid = cred.uid().unwrap_or_default();
    let meta = if meta.pending_version().is_some() {
        let policy = spec.map(|r| r.password.clone()).unwrap_or_default();
        let target = db.target(None);
        let job = RotationJob {
            secret_id: &meta.arn,
            secrets: &db.scope.secrets,
            target: &target,
            admin,
            plan,
            strategy: spec.map(|r| r.strategy).unwrap_or_default(),
            password: &policy,
            token_seed: &uid,
            crash_point: None,
        };
        let outcome = rotation::resume_pending(&job)
            .await
            .map_err(|e| rotation_error(e, p))?;
        if let RotationOutcome::Completed {
            version_id,
            username,
        } = &outcome
        {
            ctx.event(
                cred,
                EventType::Normal,
                Reason::RotationResumed,
                "Rotate",
                format!(
                    "finished an interrupted rotation: AWSCURRENT is now {version_id} ({username})"
                ),
            )
            .await;
        }
        refreshed_meta(s, &meta.arn).await?
    } else {
        meta.clone()
    };
    settle_claim(cred, &meta, spec, ctx, p)?;
    Ok(meta)
}

/// What the rotation claim in status says now that AWSCURRENT is known (see
/// [`request::claim_state`]). A completed claim is a rotation whose controller died (or whose
/// status write was lost) after finishSecret, or the one just finished by resuming it: it is
/// recorded as the answer to its request, or the next step would rotate AGAIN for the same
/// request, before the workloads were rolled onto this version, and under alternating users
/// re-password the user those pods still run with.
fn settle_claim(
    cred: &RdsCredential,
    meta: &SecretMeta,
    spec: Option<&RotationSpec>,
    ctx: &crate::context::Context,
    p: &mut Progress,
) -> Result<(), Error> {
    let Some(current) = meta.current_version() else {
        return Ok(());
    };
    let uid = cred.uid().unwrap_or_default();
    let state = request::claim_state(p.status.rotation_claim.as_deref(), current, |from, to| {
        rotation::made_by_rotation_from(&uid, from, to)
    });
    match state {
        ClaimState::None | ClaimState::Open => {}
        ClaimState::Void => {
            info!(version = %current, "AWSCURRENT moved outside the claimed rotation; claim dropped");
            p.status.rotation_claim = None;
        }
        ClaimState::Completed => {
            let claim = p.status.rotation_claim.take().expect("a completed claim");
            info!(version = %current, from_version = %claim.from_version, trigger = %claim.trigger, "recording a claimed rotation finished earlier");
            let now = Timestamp::now();
            record_rotation(cred, &claim, now, ctx, p);
            p.condition(
                ROTATING,
                false,
                Reason::Succeeded,
                format!("AWSCURRENT is now {current} (a claimed rotation, finished)"),
            );
            if let Some(spec) = spec {
                schedule_next_rotation(spec, now, p)?;
            }
        }
    }
    Ok(())
}

/// A rotation served its claim: the request is answered.
fn record_rotation(
    cred: &RdsCredential,
    claim: &RotationClaim,
    now: Timestamp,
    ctx: &crate::context::Context,
    p: &mut Progress,
) {
    p.status.last_rotation_time = Some(now.to_string());
    if claim.trigger == Trigger::Annotation.as_str() {
        p.status.last_rotation_request = claim.request.clone();
    }
    ctx.metrics
        .record_last_rotation(&ns_of(cred), &cred.name_any(), now);
}

/// The typed error, kept: its reason goes on `Rotating`, and it decides the backoff.
fn rotation_error(e: rotation::RotationError, p: &mut Progress) -> Error {
    p.condition(ROTATING, false, e.reason(), format!("{e}"));
    Error::Rotation(e)
}

/// Native rotation (`rotator: lambda`) is configured on the secret and kept in sync; turning
/// it off in the spec cancels it. What was applied is remembered in status, so it is applied
/// again only when the spec changes or AWS shows rotation off (some emulators do not echo
/// schedule expressions back, and comparing against them would re-apply it every time).
pub(super) async fn configure_rotator(
    s: Step<'_>,
    meta: &SecretMeta,
    spec: Option<&RotationSpec>,
    p: &mut Progress,
) -> Result<(), Error> {
    let Step { cred, ctx, db, .. } = s;
    let secrets = &db.scope.secrets;
    match spec {
        Some(r) if r.rotator == Rotator::Lambda => {
            let lambda = r.lambda_arn.clone().unwrap_or_default();
            let rules = lambda_rules(r)?;
            let applied = format!("{lambda} {rules:?}");
            let in_sync = meta.rotation_enabled
                && meta.rotation_lambda_arn.as_deref() == Some(lambda.as_str())
                && p.status.lambda_rotation.as_deref() == Some(applied.as_str());
            if !in_sync {
                secrets
                    .configure_lambda_rotation(&meta.arn, &lambda, &rules, false)
                    .await?;
                ctx.event(
                    cred,
                    EventType::Normal,
                    Reason::LambdaRotationConfigured,
                    "Configure",
                    format!("native rotation with {lambda}"),
                )
                .await;
            }
            p.status.lambda_rotation = Some(applied);
        }
        _ => {
            if meta.rotation_enabled {
                secrets.disable_rotation(&meta.arn).await?;
                ctx.event(
                    cred,
                    EventType::Normal,
                    Reason::LambdaRotationDisabled,
                    "Configure",
                    "native rotation turned off: rdscred rotates".into(),
                )
                .await;
            }
            p.status.lambda_rotation = None;
        }
    }
    Ok(())
}

fn lambda_rules(r: &RotationSpec) -> Result<crate::aws::RotationRules, Error> {
    let s = r.schedule.clone().ok_or_else(|| {
        Error::refused(
            Reason::InvalidSpec,
            "rotator: lambda needs rotation.schedule",
        )
    })?;
    RotationPlan::from_spec(&s)?;
    Ok(crate::aws::RotationRules {
        automatically_after_days: s.automatically_after_days.map(i64::from),
        schedule_expression: s.schedule_expression,
        duration: s.duration,
    })
}

/// Rotates when due (schedule, annotation or rotateImmediately) and allowed (minimum interval,
/// dependents done rolling). Returns the new AWSCURRENT when it rotated.
pub(super) async fn maybe_rotate(
    m: Managed<'_>,
    meta: &SecretMeta,
    current: &Current,
    p: &mut Progress,
) -> Result<Option<Current>, Error> {
    let Managed {
        step: s @ Step { cred, ctx, db, .. },
        plan,
        admin,
        rotation: spec,
    } = m;
    let Some(spec) = spec.filter(|s| s.rotator == Rotator::Controller) else {
        conditions::remove(&mut p.status.conditions, ROTATING);
        return Ok(None);
    };
    let now = Timestamp::now();
    // After settle_claim a claim in status is open (it starts from AWSCURRENT) or gone.
    let open_claim = p
        .status
        .rotation_claim
        .clone()
        .filter(|c| c.from_version == current.version_id);
    let schedule_due = schedule_due(cred, spec, now, p)?;
    let Some(req) = request::due_request(
        cred.annotations()
            .get(ROTATE_ANNOTATION)
            .map(String::as_str),
        p.status.last_rotation_request.as_deref(),
        spec.rotate_immediately,
        p.status.last_rotation_time.is_some(),
        open_claim.as_deref(),
        schedule_due,
    ) else {
        return Ok(None);
    };
    let trigger = req.trigger;
    // Alternating users: the dependents' own pod templates and rollout status say whether
    // the previous user is still in use, not bookkeeping in status that may be stale.
    let unsettled = if spec.strategy == RotationStrategy::AlternatingUsers {
        propagation::rollout::first_unsettled(
            &ctx.client,
            ctx.settings.workload_kinds,
            cred,
            &propagation::sync::target_name(cred),
            &current.version_id,
        )
        .await?
    } else {
        None
    };
    if let Some(mut blocked) = rotation_blocked(
        spec,
        &p.status,
        &current.version_id,
        unsettled.as_ref(),
        now,
        &ctx.settings,
    ) {
        if let Some(v) = &req.value {
            blocked.message = format!(
                "request {v:?} is queued: {}; requests arriving meanwhile are coalesced into this one rotation",
                blocked.message
            );
        }
        let already_reported = conditions::get(&p.status.conditions, ROTATING)
            .is_some_and(|c| c.reason == blocked.reason.as_str());
        if blocked.reason == Reason::RolloutTimedOut && !already_reported {
            ctx.event(
                cred,
                EventType::Warning,
                blocked.reason,
                "Rotate",
                blocked.message.clone(),
            )
            .await;
        }
        if blocked.in_progress {
            p.in_progress = Some((blocked.reason, blocked.message.clone()));
        }
        p.condition(ROTATING, false, blocked.reason, blocked.message);
        if blocked.retry < Duration::from_secs(1) {
            p.requeue_soon(blocked.retry);
        } else {
            p.requeue_within(blocked.retry);
        }
        return Ok(None);
    }
    let Ok(_slot) = ctx.rotation_slots.clone().try_acquire_owned() else {
        p.in_progress = Some((
            Reason::Queued,
            "a due rotation is waiting for a rotation slot".into(),
        ));
        p.condition(
            ROTATING,
            false,
            Reason::Queued,
            "waiting for a rotation slot (--max-concurrent-rotations)",
        );
        // A rotation takes about a second: look again soon, but not so often that a long
        // queue of credentials turns into a stream of reconciles.
        p.requeue_within(Duration::from_secs(5));
        return Ok(None);
    };
    // Irreversible steps follow: decide from Secrets Manager's labels as they are now, not
    // from metadata a poll cached.
    let labels = refreshed_meta(s, &meta.arn).await?;
    if labels.current_version() != Some(current.version_id.as_str())
        || labels.pending_version().is_some()
    {
        info!(cached = %current.version_id, "AWSCURRENT moved or a rotation is pending since this reconcile read it; deciding again");
        p.requeue_soon(Duration::from_millis(200));
        return Ok(None);
    }
    // The claim: written (guarded by the resourceVersion this reconcile read) before the
    // first step, so that whoever reconciles next, after a crash or a lost write, serves this
    // same rotation instead of starting another one. A concurrent reconcile (another replica,
    // an older object) fails the precondition and decides again.
    let claim = match open_claim {
        Some(c) if !request::needs_claim(Some(&c), &req, &current.version_id) => *c,
        _ => {
            let c = RotationClaim {
                trigger: trigger.as_str().into(),
                request: req.value.clone(),
                from_version: current.version_id.clone(),
                claimed_at: now.to_string(),
            };
            p.status.rotation_claim = Some(Box::new(c.clone()));
            p.condition(
                ROTATING,
                true,
                Reason::InProgress,
                format!(
                    "rotating ({trigger}) from AWSCURRENT version {}",
                    current.version_id
                ),
            );
            p.checkpoint(cred, ctx).await?;
            c
        }
    };
    let started = Instant::now();
    let strategy = strategy_name(spec.strategy);
    let target = db.target(None);
    let uid = cred.uid().unwrap_or_default();
    let job = RotationJob {
        secret_id: &meta.arn,
        secrets: &db.scope.secrets,
        target: &target,
        admin,
        plan,
        strategy: spec.strategy,
        password: &spec.password,
        token_seed: &uid,
        crash_point: ctx.settings.crash_point.as_deref(),
    };
    info!(trigger = %trigger, strategy, from_version = %current.version_id, "rotating");
    match rotation::rotate(&job).await {
        Ok(RotationOutcome::Completed {
            version_id,
            username,
        }) => {
            ctx.metrics
                .rotation_finished(strategy, "success", started.elapsed());
            p.status.rotation_claim = None;
            record_rotation(cred, &claim, now, ctx, p);
            p.condition(
                ROTATING,
                false,
                Reason::Succeeded,
                format!("rotated ({trigger}): AWSCURRENT is now {version_id} ({username})"),
            );
            ctx.event(cred, EventType::Normal, Reason::Rotated, "Rotate", format!("rotated ({trigger}, {strategy}): AWSCURRENT is now version {version_id}, user {username}")).await;
            let fresh = refreshed_meta(s, &meta.arn).await?;
            let new = current_value(s, &fresh).await?;
            schedule_next_rotation(spec, now, p)?;
            Ok(Some(new))
        }
        Ok(RotationOutcome::NothingPending) => Ok(None),
        Err(e) => {
            let result = if matches!(e, rotation::RotationError::TestFailedRolledBack { .. }) {
                "rolled_back"
            } else {
                "failure"
            };
            ctx.metrics
                .rotation_finished(strategy, result, started.elapsed());
            Err(rotation_error(e, p))
        }
    }
}
