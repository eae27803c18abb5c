//! Refusals, decided before anything is written anywhere: the database exists and admits the
//! namespace, the secret name is under the database's prefix, no older credential claims the
//! same secret or user, and a secret we meet is ours.

use k8s_openapi::api::core::v1::Namespace;
use kube::ResourceExt;
use kube::api::Api;

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
    admin_secret_id: &str,
) -> Result<(), Error> {
    let name = &cred.spec.secret.name;
    let prefix = &db.spec.secret_name_prefix;
    if name.starts_with(prefix.as_str()) && !name.contains("..") {
        return Ok(());
    }
    let is_admin = secret_id_matches(name, admin_secret_id)
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

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::reconcile::Error;

    fn cred(name: &str, uid: &str, created: &str, spec: Value, arn: Option<&str>) -> RdsCredential {
        let mut spec_full = json!({
            "databaseRef": { "name": "db" },
            "username": "app_user",
            "secret": { "name": "rdscred/db/app" },
        });
        for (k, v) in spec.as_object().unwrap() {
            spec_full[k] = v.clone();
        }
        let mut c: RdsCredential = serde_json::from_value(json!({
            "apiVersion": "rdscred.io/v1alpha1", "kind": "RdsCredential",
            "metadata": { "name": name, "namespace": "ns", "uid": uid, "creationTimestamp": created },
            "spec": spec_full,
        }))
        .unwrap();
        if let Some(arn) = arn {
            c.status = Some(crate::crd::RdsCredentialStatus {
                secret_arn: Some(arn.into()),
                ..Default::default()
            });
        }
        c
    }

    fn db(extra: Value) -> RdsDatabase {
        let mut spec = json!({
            "endpoint": { "host": "h", "port": 5432 },
            "engine": "postgres",
            "adminLogin": { "secretId": "admin/db" },
            "secretNamePrefix": "rdscred/db/",
        });
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        serde_json::from_value(json!({
            "apiVersion": "rdscred.io/v1alpha1", "kind": "RdsDatabase",
            "metadata": { "name": "db" }, "spec": spec,
        }))
        .unwrap()
    }

    const ADMIN_ARN: &str = "arn:aws:secretsmanager:us-east-1:111122223333:secret:admin/db-AbCdEf";

    #[test]
    fn a_secret_id_names_a_secret_by_name_or_arn() {
        let arn = "arn:aws:secretsmanager:us-east-1:111122223333:secret:app/db-AbCdEf";
        let cases = [
            ("app/db", "app/db", true),
            (arn, arn, true),
            ("app/db", arn, true),
            (arn, "app/db", true),
            // The random suffix is not part of the name; a name with a dash keeps it.
            (
                "app/my-db",
                "arn:aws:secretsmanager:us-east-1:1:secret:app/my-db-XyZ123",
                true,
            ),
            (
                "app/db",
                "arn:aws:secretsmanager:us-east-1:1:secret:app/db2-XyZ123",
                false,
            ),
            ("app/d", arn, false),
            ("other", "app/db", false),
            // Not an ARN: compared as a name, whatever it contains.
            ("x:secret:app/db-AbCdEf", "app/db", false),
        ];
        for (id, reference, want) in cases {
            assert_eq!(
                secret_id_matches(id, reference),
                want,
                "{id} vs {reference}"
            );
        }
    }

    #[test]
    fn secret_names_live_under_the_prefix_and_the_admin_secret_only_with_consent() {
        let allowed = db(json!({ "allowAdminSecretSync": true }));
        let cases: [(&str, &str, &RdsDatabase, Option<Reason>); 8] = [
            ("managed", "rdscred/db/app", &db(json!({})), None),
            ("managed", "rdscred/db/team/app", &db(json!({})), None),
            (
                "managed",
                "rdscred/other/app",
                &db(json!({})),
                Some(Reason::SecretNameOutsidePrefix),
            ),
            // A prefix cannot be left with a relative path.
            (
                "managed",
                "rdscred/db/../x",
                &db(json!({})),
                Some(Reason::SecretNameOutsidePrefix),
            ),
            // The admin secret: never for a managed credential, for sync-only only with consent.
            (
                "managed",
                "admin/db",
                &allowed,
                Some(Reason::SecretNameOutsidePrefix),
            ),
            (
                "sync-only",
                "admin/db",
                &db(json!({})),
                Some(Reason::AdminSecretSyncNotAllowed),
            ),
            ("sync-only", "admin/db", &allowed, None),
            ("sync-only", ADMIN_ARN, &allowed, None),
        ];
        for (mode, name, database, want) in cases {
            let c = cred(
                "c",
                "u1",
                "2026-01-01T00:00:00Z",
                json!({ "mode": mode, "secret": { "name": name } }),
                None,
            );
            let got = check_secret_name(&c, database, ADMIN_ARN);
            match (&got, want) {
                (Ok(()), None) => {}
                (Err(Error::Refused { reason, .. }), Some(w)) if *reason == w => {}
                _ => panic!("{mode} {name}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn the_older_claim_wins_whatever_the_order() {
        let t0 = "2026-01-01T00:00:00Z";
        let t1 = "2026-01-01T00:00:01Z";
        let arn = Some("arn:aws:secretsmanager:us-east-1:1:secret:x-AbCdEf");
        let cases = [
            // (a, b, a's claim precedes b's)
            (
                cred("a", "u1", t0, json!({}), None),
                cred("b", "u2", t1, json!({}), None),
                true,
            ),
            (
                cred("a", "u1", t1, json!({}), None),
                cred("b", "u2", t0, json!({}), None),
                false,
            ),
            // The same second: the smaller uid, so every replica decides alike.
            (
                cred("a", "u1", t0, json!({}), None),
                cred("b", "u2", t0, json!({}), None),
                true,
            ),
            (
                cred("a", "u2", t0, json!({}), None),
                cred("b", "u1", t0, json!({}), None),
                false,
            ),
            // Holding the secret already beats being older: a re-created older object does
            // not take a running credential's secret.
            (
                cred("a", "u1", t1, json!({}), arn),
                cred("b", "u2", t0, json!({}), None),
                true,
            ),
            (
                cred("a", "u1", t0, json!({}), None),
                cred("b", "u2", t1, json!({}), arn),
                false,
            ),
        ];
        for (a, b, want) in &cases {
            assert_eq!(
                claim_is_older(a, b),
                *want,
                "{} vs {}",
                a.name_any(),
                b.name_any()
            );
            // Antisymmetric: never both, never neither for distinct credentials.
            assert_eq!(
                claim_is_older(b, a),
                !*want,
                "{} vs {}",
                b.name_any(),
                a.name_any()
            );
        }
    }

    #[test]
    fn a_managed_credential_claims_its_user_clone_and_owner_role() {
        let managed = cred("a", "u1", "2026-01-01T00:00:00Z", json!({}), None);
        assert_eq!(
            claimed_names(&managed),
            vec![
                "app_user".to_string(),
                UserPlan::clone_username("app_user"),
                UserPlan::owner_role("app_user"),
            ]
        );
        let sync_only = cred(
            "b",
            "u2",
            "2026-01-01T00:00:00Z",
            json!({ "mode": "sync-only" }),
            None,
        );
        assert!(
            claimed_names(&sync_only).is_empty(),
            "sync-only owns no database user"
        );
    }

    #[test]
    fn a_secret_is_ours_only_for_this_cluster_namespace_and_name() {
        let owner = Owner {
            cluster: "prod".into(),
            namespace: "ns".into(),
            name: "c".into(),
            uid: "u1".into(),
        };
        let meta = |o: Option<&Owner>| SecretMeta {
            arn: "arn".into(),
            name: "rdscred/db/app".into(),
            description: None,
            kms_key_id: None,
            tags: o
                .map(|o| o.tags().into_iter().collect())
                .unwrap_or_default(),
            versions: Default::default(),
            deleted_date: None,
            rotation_enabled: false,
            rotation_lambda_arn: None,
            rotation_rules: None,
            replica_regions: vec![],
            replicas_known: true,
        };
        let other = |f: &dyn Fn(&mut Owner)| {
            let mut o = owner.clone();
            f(&mut o);
            o
        };
        assert!(owned_by(&meta(Some(&owner)), &owner));
        // Re-created with Retain (a new uid): the same credential takes its secret back.
        assert!(owned_by(
            &meta(Some(&other(&|o| o.uid = "u2".into()))),
            &owner
        ));
        assert!(!owned_by(
            &meta(Some(&other(&|o| o.cluster = "staging".into()))),
            &owner
        ));
        assert!(!owned_by(
            &meta(Some(&other(&|o| o.namespace = "other".into()))),
            &owner
        ));
        assert!(!owned_by(
            &meta(Some(&other(&|o| o.name = "d".into()))),
            &owner
        ));
        assert!(!owned_by(&meta(None), &owner), "no tags: someone else's");
    }
}
