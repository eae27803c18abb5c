//! Refusals, decided before anything is written anywhere: the database exists and admits the
//! namespace, the secret name is under the database's prefix, no older credential claims the
//! same secret or user, and a secret we meet is ours.

use k8s_openapi::api::core::v1::Namespace;
use kube::ResourceExt;
use kube::api::Api;

use super::super::database::ResolvedDatabase;
use super::{Error, ns_of, selector};
use crate::aws::SecretMeta;
use crate::aws::ownership::Owner;
use crate::context::Context;
use crate::crd::{CredentialMode, RdsCredential, RdsDatabase};
use crate::engine::UserPlan;
use crate::reconcile::Reason;

pub(super) async fn database_of(cred: &RdsCredential, ctx: &Context) -> Result<RdsDatabase, Error> {
    let name = &cred.spec.database_ref.name;
    Api::<RdsDatabase>::all(ctx.client.clone())
        .get_opt(name)
        .await?
        .ok_or_else(|| {
            Error::refused(
                Reason::DatabaseNotFound,
                format!("RdsDatabase {name:?} does not exist"),
            )
        })
}

/// A namespace may only use a database whose `namespaceSelector` matches its labels.
pub(super) async fn admit_namespace(
    cred: &RdsCredential,
    db: &RdsDatabase,
    ctx: &Context,
) -> Result<(), Error> {
    let ns_name = ns_of(cred);
    let db_name = db.name_any();
    let Some(selector) = &db.spec.namespace_selector else {
        return Err(Error::refused(
            Reason::NamespaceNotAdmitted,
            format!(
                "RdsDatabase {db_name} admits no namespace (spec.namespaceSelector is not set)"
            ),
        ));
    };
    let ns = Api::<Namespace>::all(ctx.client.clone())
        .get(&ns_name)
        .await?;
    if selector::matches(selector, ns.labels()) {
        Ok(())
    } else {
        Err(Error::refused(
            Reason::NamespaceNotAdmitted,
            format!(
                "namespace {ns_name} is not admitted by RdsDatabase {db_name} (its labels do not match spec.namespaceSelector)"
            ),
        ))
    }
}

/// Managed secrets must live under the database's prefix; sync-only may also name the admin
/// secret when the database explicitly allows handing it out.
pub(in crate::reconcile) fn check_secret_name(
    cred: &RdsCredential,
    db: &RdsDatabase,
    resolved: &ResolvedDatabase,
) -> Result<(), Error> {
    let name = &cred.spec.secret.name;
    let prefix = &db.spec.secret_name_prefix;
    if name.starts_with(prefix.as_str()) && !name.contains("..") {
        return Ok(());
    }
    let is_admin = secret_id_matches(name, &resolved.admin_secret_id)
        || db.spec.admin_login.secret_id.as_deref() == Some(name.as_str());
    if cred.spec.mode == CredentialMode::SyncOnly && is_admin {
        return if db.spec.allow_admin_secret_sync {
            Ok(())
        } else {
            Err(Error::refused(
                Reason::AdminSecretSyncNotAllowed,
                format!(
                    "secret {name} is the admin secret of RdsDatabase {}; syncing it needs spec.allowAdminSecretSync: true there",
                    db.name_any()
                ),
            ))
        };
    }
    Err(Error::refused(
        Reason::SecretNameOutsidePrefix,
        format!(
            "secret.name {name:?} must start with {prefix:?} (spec.secretNamePrefix of RdsDatabase {})",
            db.name_any()
        ),
    ))
}

/// Whether secret id `id` (name or ARN) names the secret `reference` (name or ARN). A secret's
/// ARN is `arn:…:secret:<name>-<6 random characters>`.
fn secret_id_matches(id: &str, reference: &str) -> bool {
    let name_of = |s: &str| match s.split_once(":secret:") {
        Some((_, rest)) if s.starts_with("arn:") => {
            rest.rsplit_once('-').map_or(rest, |(n, _)| n).to_string()
        }
        _ => s.to_string(),
    };
    id == reference || name_of(id) == name_of(reference)
}

/// Two credentials never claim one secret, nor one database user on one database. The older
/// claim wins (creation time, then uid), so the outcome does not depend on reconcile order.
pub(in crate::reconcile) fn check_claims(cred: &RdsCredential, ctx: &Context) -> Result<(), Error> {
    let mine = claimed_names(cred);
    for other in ctx.all_credentials() {
        if other.uid() == cred.uid() || other.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let same_secret = other.spec.secret.name == cred.spec.secret.name;
        let same_db = other.spec.database_ref.name == cred.spec.database_ref.name;
        let user_clash = same_db && claimed_names(&other).iter().any(|n| mine.contains(n));
        if (same_secret || user_clash) && claim_is_older(&other, cred) {
            let what = if same_secret {
                format!("secret {}", cred.spec.secret.name)
            } else {
                format!(
                    "database user {} on RdsDatabase {}",
                    cred.spec.username.clone().unwrap_or_default(),
                    cred.spec.database_ref.name
                )
            };
            return Err(Error::refused(
                Reason::AlreadyClaimed,
                format!(
                    "{what} is already claimed by RdsCredential {}/{}",
                    other.namespace().unwrap_or_default(),
                    other.name_any()
                ),
            ));
        }
    }
    Ok(())
}

/// The database names a managed credential uses: the user, its clone and (PostgreSQL) owner role.
fn claimed_names(cred: &RdsCredential) -> Vec<String> {
    match (&cred.spec.username, cred.spec.mode) {
        (Some(u), CredentialMode::Managed) => vec![
            u.clone(),
            UserPlan::clone_username(u),
            UserPlan::owner_role(u),
        ],
        _ => Vec::new(),
    }
}

/// Whether `a`'s claim precedes `b`'s: a credential already holding its secret (status has
/// the ARN) wins over one that does not; then the older one (creation timestamps have
/// one-second resolution), then the smaller uid, so every replica decides the same way.
fn claim_is_older(a: &RdsCredential, b: &RdsCredential) -> bool {
    let established = |c: &RdsCredential| c.status.as_ref().is_some_and(|s| s.secret_arn.is_some());
    let key = |c: &RdsCredential| {
        (
            !established(c),
            c.metadata.creation_timestamp.as_ref().map(|t| t.0),
            c.uid(),
        )
    };
    key(a) < key(b)
}

pub(super) fn owner_of(cred: &RdsCredential, ctx: &Context) -> Owner {
    Owner {
        cluster: ctx.settings.cluster_name.clone(),
        namespace: ns_of(cred),
        name: cred.name_any(),
        uid: cred.uid().unwrap_or_default(),
    }
}

/// Ours = written by this cluster for this namespace/name. A credential deleted with Retain and
/// created again (new uid) takes its secret back; anything else is someone else's.
pub(super) fn owned_by(meta: &SecretMeta, owner: &Owner) -> bool {
    meta.owner().is_some_and(|o| {
        o.cluster == owner.cluster && o.namespace == owner.namespace && o.name == owner.name
    })
}
