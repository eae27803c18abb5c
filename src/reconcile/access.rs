//! The reconcile step for the secret's resource policy (who may read it). Two calls from the
//! credential reconcile: [`plan`] before anything is written (refusals have no side effect),
//! [`sync`] once the secret exists and the rest is done.
//!
//! Cost: no AWS call for credentials that never had a policy; otherwise one GetResourcePolicy
//! when the wanted policy changes and once per drift interval (an edit made outside rdscred is
//! found within one interval), plus ValidateResourcePolicy and PutResourcePolicy when it has
//! to be written.

use std::time::Duration;

use jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::events::EventType;
use tracing::info;

use super::Error;
use super::conditions::{self, ACCESS_POLICY_READY};
use super::database::ResolvedDatabase;
use crate::access::{self, AccessPlan, AccessSpec, PolicyAction};
use crate::aws::SecretMeta;
use crate::aws::policy::Validation;
use crate::context::Context;
use crate::crd::{AccessStatus, CredentialMode, RdsCredential, RdsCredentialStatus, RdsDatabase};
use crate::reconcile::Reason;

/// What the policy of this credential's secret is made of: the credential's readers, the
/// database's access policy, and the role the controller acts as for the database.
pub fn spec_of(
    cred: &RdsCredential,
    db: &RdsDatabase,
    controller_role_arn: Option<&str>,
) -> AccessSpec {
    let policy = db.spec.access_policy.clone().unwrap_or_default();
    AccessSpec {
        readers: cred.spec.secret.readers.clone(),
        always_allowed: policy.always_allowed,
        restricted: policy.restricted,
        allowed_accounts: policy.allowed_accounts,
        allowed_principal_pattern: policy.allowed_principal_pattern,
        // Everything about a database with a roleArn runs as that role, in its account.
        controller_role: db
            .spec
            .role_arn
            .clone()
            .filter(|r| !r.is_empty())
            .or_else(|| controller_role_arn.map(str::to_string)),
    }
}

/// Validates and renders the policy; a refusal names the field and nothing was written.
/// Sync-only credentials get none: rdscred does not own their secret.
pub fn plan(cred: &RdsCredential, db: &RdsDatabase, ctx: &Context) -> Result<AccessPlan, Error> {
    if cred.spec.mode == CredentialMode::SyncOnly {
        if !cred.spec.secret.readers.is_empty() {
            return Err(Error::refused(
                Reason::PrincipalNotAllowed,
                "spec.secret.readers needs a managed secret: rdscred puts no resource policy on a secret it does not own",
            ));
        }
        return Ok(AccessPlan {
            policy: None,
            readers: vec![],
            restricted: false,
        });
    }
    let spec = spec_of(cred, db, ctx.settings.controller_role_arn.as_deref());
    access::plan(&spec).map_err(Error::from)
}

/// Brings the secret's resource policy to `plan` and reports it (status `access`, condition
/// `AccessPolicyReady`, Events). Returns when the next check is due.
pub async fn sync(
    cred: &RdsCredential,
    plan: &AccessPlan,
    db: &ResolvedDatabase,
    meta: &SecretMeta,
    ctx: &Context,
    status: &mut RdsCredentialStatus,
    generation: Option<i64>,
) -> Result<Option<Duration>, Error> {
    let wanted_digest = plan.digest();
    let applied = status.access.as_ref().and_then(|a| a.policy_digest.clone());
    if plan.policy.is_none() && status.access.is_none() {
        // Never had one of ours: no call at all.
        conditions::remove(&mut status.conditions, ACCESS_POLICY_READY);
        return Ok(None);
    }
    let interval = cred
        .spec
        .drift
        .as_ref()
        .and_then(|d| d.interval)
        .map(Duration::from)
        .unwrap_or(ctx.settings.drift_interval);
    let last = status
        .access
        .as_ref()
        .and_then(|a| a.last_check.as_deref())
        .and_then(|t| t.parse::<Timestamp>().ok());
    let since = last.map(|t| {
        Timestamp::now()
            .duration_since(t)
            .try_into()
            .unwrap_or(Duration::ZERO)
    });
    let ready = conditions::is_true(&status.conditions, ACCESS_POLICY_READY);
    if wanted_digest == applied && ready && since.is_some_and(|s| s < interval) {
        return Ok(Some(interval - since.unwrap_or_default()));
    }

    let secrets = &db.scope.secrets;
    let set = |status: &mut RdsCredentialStatus, ok: bool, reason: &str, msg: String| {
        conditions::set(
            &mut status.conditions,
            ACCESS_POLICY_READY,
            ok,
            reason,
            msg,
            generation,
        )
    };
    let actual = secrets.resource_policy(&meta.arn).await?;
    match access::decide(plan.policy.as_ref(), actual.as_deref(), applied.as_deref()) {
        PolicyAction::Keep => {}
        PolicyAction::Put { restore } => {
            let policy = plan.policy.as_ref().expect("Put implies a policy");
            if let Validation::Failed(errors) =
                secrets.validate_resource_policy(&meta.arn, policy).await?
            {
                let msg = format!(
                    "Secrets Manager refused the resource policy of {}: {}",
                    meta.name,
                    errors.join("; ")
                );
                set(
                    status,
                    false,
                    Reason::PolicyValidationFailed.as_str(),
                    msg.clone(),
                );
                return Err(Error::refused(Reason::PolicyValidationFailed, msg));
            }
            secrets.put_resource_policy(&meta.arn, policy).await?;
            let who = describe(plan);
            if restore {
                ctx.event(
                    cred,
                    EventType::Warning,
                    Reason::AccessPolicyRestored,
                    "Restore",
                    format!(
                        "the resource policy of {} was changed or removed outside rdscred; restored: {who}",
                        meta.name
                    ),
                )
                .await;
            } else {
                ctx.event(
                    cred,
                    EventType::Normal,
                    Reason::AccessPolicyApplied,
                    "Update",
                    format!("resource policy of {} applied: {who}", meta.name),
                )
                .await;
            }
            info!(secret = %meta.name, restore, "resource policy applied");
        }
        PolicyAction::Delete => {
            secrets.delete_resource_policy(&meta.arn).await?;
            ctx.event(
                cred,
                EventType::Normal,
                Reason::AccessPolicyRemoved,
                "Delete",
                format!(
                    "the spec no longer declares who may read {}: its resource policy was removed",
                    meta.name
                ),
            )
            .await;
        }
        PolicyAction::LeaveForeign => {
            info!(secret = %meta.name, credential = %cred.name_any(), "the secret carries a resource policy rdscred did not write; left alone");
        }
    }
    if plan.policy.is_none() {
        status.access = None;
        conditions::remove(&mut status.conditions, ACCESS_POLICY_READY);
        return Ok(None);
    }
    status.access = Some(Box::new(AccessStatus {
        readers: plan.readers.clone(),
        restricted: plan.restricted,
        policy_digest: wanted_digest,
        last_check: Some(Timestamp::now().to_string()),
    }));
    set(status, true, Reason::Applied.as_str(), describe(plan));
    Ok(Some(interval))
}

fn describe(plan: &AccessPlan) -> String {
    let who = plan.readers.join(", ");
    if plan.restricted {
        format!("only {who} may read the secret (everyone else is denied GetSecretValue)")
    } else {
        format!("{who} may read the secret (in addition to what identity policies allow)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn objects(db_extra: serde_json::Value) -> (RdsCredential, RdsDatabase) {
        let mut db = json!({
            "apiVersion": "rdscred.io/v1alpha1", "kind": "RdsDatabase",
            "metadata": { "name": "db" },
            "spec": { "endpoint": { "host": "h", "port": 5432 }, "engine": "postgres",
                      "adminLogin": { "secretId": "a" }, "secretNamePrefix": "p/",
                      "accessPolicy": { "alwaysAllowed": ["arn:aws:iam::111122223333:role/glass"], "restricted": true } },
        });
        if let (Some(spec), Some(extra)) = (db["spec"].as_object_mut(), db_extra.as_object()) {
            spec.extend(extra.clone());
        }
        let cred = json!({
            "apiVersion": "rdscred.io/v1alpha1", "kind": "RdsCredential",
            "metadata": { "name": "c", "namespace": "n" },
            "spec": { "databaseRef": { "name": "db" }, "username": "u",
                      "secret": { "name": "p/u", "readers": ["arn:aws:iam::111122223333:role/app"] } },
        });
        (
            serde_json::from_value(cred).unwrap(),
            serde_json::from_value(db).unwrap(),
        )
    }

    /// The role exempted from the Deny is the one the controller acts as for the database:
    /// its `roleArn` (multi-account), else the controller's own.
    #[test]
    fn the_exempt_role_is_the_one_acting_on_the_database() {
        let own = "arn:aws:iam::111122223333:role/rdscred";
        let (cred, db) = objects(json!({}));
        let spec = spec_of(&cred, &db, Some(own));
        assert_eq!(spec.controller_role.as_deref(), Some(own));
        assert!(spec.restricted);
        assert_eq!(spec.readers, vec!["arn:aws:iam::111122223333:role/app"]);
        let target = "arn:aws:iam::999988887777:role/rdscred-target";
        let (cred, db) = objects(json!({ "roleArn": target }));
        assert_eq!(
            spec_of(&cred, &db, Some(own)).controller_role.as_deref(),
            Some(target)
        );
        // The secrets then live in the role's account: readers default to that one.
        let refused = access::plan(&spec_of(&cred, &db, Some(own))).unwrap_err();
        assert!(refused.to_string().contains("999988887777"), "{refused}");
        let (cred, db) = objects(json!({}));
        assert_eq!(spec_of(&cred, &db, None).controller_role, None);
        assert_eq!(
            access::plan(&spec_of(&cred, &db, None))
                .unwrap_err()
                .reason(),
            "PrincipalNotAllowed"
        );
    }
}
