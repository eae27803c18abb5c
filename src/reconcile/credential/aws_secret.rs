//! The Secrets Manager secret of a managed credential (created, kept ours and in line with
//! the spec) and AWSCURRENT, read with as few AWS calls as the caches allow.

use std::collections::BTreeMap;
use std::time::Duration;

use kube::ResourceExt;
use kube::runtime::events::EventType;
use tracing::info;

use super::super::database::ResolvedDatabase;
use super::admission::{owned_by, owner_of};
use super::{Error, Managed, Progress, Step};
use crate::aws::ownership::Owner;
use crate::aws::{AWSCURRENT, NewSecret, SecretMeta, SecretVersion, VersionSelector};
use crate::crd::{PasswordSpec, RdsCredential, RdsDatabase};
use crate::engine::{Login, UserPlan};
use crate::propagation;
use crate::reconcile::Reason;
use crate::rotation;
use crate::secret::{RdsSecretValue, generate_password};

/// The secret as [`ensure_aws_secret`] left it.
pub(super) struct Ensured {
    pub meta: SecretMeta,
    /// AWSCURRENT when this reconcile created the secret: the value we wrote, so nothing
    /// reads it back (GetSecretValue) in the same reconcile.
    pub written: Option<Current>,
}

impl Ensured {
    fn existing(meta: SecretMeta) -> Ensured {
        Ensured {
            meta,
            written: None,
        }
    }
}

/// The secret exists, is ours, and its metadata matches the spec. A missing secret is
/// created (deterministic token: a retry after a crash does not make a second version).
pub(super) async fn ensure_aws_secret(m: Managed<'_>, p: &mut Progress) -> Result<Ensured, Error> {
    let s = m.step;
    let Step {
        cred,
        ctx,
        db_obj,
        db,
    } = s;
    let owner = owner_of(cred, ctx);
    let spec = &cred.spec.secret;
    let secrets = &db.scope.secrets;
    let tags = desired_tags(cred, db_obj, &owner);
    // Cached metadata only while the spec is unchanged: a spec change re-reads AWS.
    let cached = (p.status.observed_generation == cred.metadata.generation)
        .then(|| ctx.secrets.fresh(&spec.name, cache_max_age(cred, ctx)))
        .flatten();
    let meta = match cached {
        Some(m) => Some(m),
        None => secrets.describe(&spec.name).await?,
    };
    let Some(mut meta) = meta else {
        return create_aws_secret(m, &tags).await;
    };
    if !owned_by(&meta, &owner) {
        return Err(Error::refused(
            Reason::SecretNotOwned,
            format!(
                "secret {} exists and is not owned by this RdsCredential (ownership tags differ); rdscred never takes over a secret it did not create",
                meta.name
            ),
        ));
    }
    if meta.is_scheduled_for_deletion() {
        secrets.restore(&meta.arn).await?;
        ctx.event(
            cred,
            EventType::Normal,
            Reason::SecretRestored,
            "Restore",
            format!(
                "secret {} was scheduled for deletion and has been restored",
                meta.name
            ),
        )
        .await;
        meta = refreshed_meta(s, &meta.arn).await?;
    }
    let kms = db_obj.spec.kms_key_id.as_deref();
    let description = spec.description.as_deref();
    let mut changed = false;
    if meta.description.as_deref() != description
        || (kms.is_some() && !kms_matches(meta.kms_key_id.as_deref(), kms))
    {
        secrets
            .update_description_and_kms(&meta.arn, description, kms)
            .await?;
        changed = true;
    }
    changed |= secrets.sync_tags(&meta, &tags).await?;
    let replicas = replica_regions(spec);
    changed |= secrets.sync_replicas(&meta, &replicas).await?;
    if changed {
        ctx.event(
            cred,
            EventType::Normal,
            Reason::SecretUpdated,
            "Update",
            format!(
                "secret {} metadata brought in line with the spec",
                meta.name
            ),
        )
        .await;
        meta = refreshed_meta(s, &meta.arn).await?;
    }
    ctx.secrets.remember(&meta);
    Ok(Ensured::existing(meta))
}

/// DescribeSecret after we changed the secret (restore, metadata update, rotation), recorded in
/// the cache like every metadata we see.
pub(super) async fn refreshed_meta(s: Step<'_>, arn: &str) -> Result<SecretMeta, Error> {
    let Step { ctx, db, .. } = s;
    let meta = db.scope.secrets.describe(arn).await?.ok_or_else(|| {
        Error::not_ready(
            Reason::SecretNotFound,
            format!("secret {arn} vanished after it was changed"),
        )
    })?;
    ctx.secrets.remember(&meta);
    Ok(meta)
}

/// The spec's replica regions as (region, KMS key) pairs.
fn replica_regions(spec: &crate::crd::SecretSpec) -> Vec<(String, Option<String>)> {
    spec.replica_regions
        .iter()
        .map(|r| (r.region.clone(), r.kms_key_id.clone()))
        .collect()
}

/// How old cached secret metadata may be: a bit more than one poll, so a credential between
/// two polls does not describe its secret itself.
fn cache_max_age(cred: &RdsCredential, ctx: &crate::context::Context) -> Duration {
    let poll = match cred.spec.poll_interval {
        Some(d) => Duration::from(d),
        None => ctx.settings.poll_interval.mul_f64(2.5),
    };
    refresh_bounded(
        poll,
        cred.annotations()
            .get(super::REFRESH_ANNOTATION)
            .map(String::as_str),
        jiff::Timestamp::now(),
    )
}

/// A refresh request ([`REFRESH_ANNOTATION`](super::REFRESH_ANNOTATION), an RFC 3339 time)
/// asks for AWS as it is now: metadata cached before the request is too old. Once metadata
/// read after it is cached, the bound no longer forces a read, so a refresh costs one
/// DescribeSecret and keeps no state. A value that is not a time, or more than a minute in
/// the future (a wrong clock), leaves the cache as it is: the reconcile it triggered is all
/// it gets.
fn refresh_bounded(max_age: Duration, refresh: Option<&str>, now: jiff::Timestamp) -> Duration {
    let Some(at) = refresh.and_then(|v| v.parse::<jiff::Timestamp>().ok()) else {
        return max_age;
    };
    let since = now.duration_since(at);
    if since < -jiff::SignedDuration::from_mins(1) {
        return max_age;
    }
    // The value has second precision: the request may have been made up to 1s after it.
    let since = since - jiff::SignedDuration::from_secs(1);
    Duration::try_from(since)
        .unwrap_or(Duration::ZERO)
        .min(max_age)
}

/// Whether the secret's KMS key (as DescribeSecret reports it) is the one the database names.
/// Both may be a key id, a key ARN, an alias (`alias/name`) or an alias ARN: they match when
/// they name the same key id or the same alias. An alias and a key id cannot be compared
/// without KMS: that counts as a mismatch, and the update that follows makes them equal.
fn kms_matches(actual: Option<&str>, wanted: Option<&str>) -> bool {
    /// `key/<id>` or `alias/<name>`, from any of the four spellings.
    fn key_ref(s: &str) -> String {
        match s.strip_prefix("arn:") {
            // arn:<partition>:kms:<region>:<account>:key/<id> | alias/<name>
            Some(rest) => rest.splitn(5, ':').nth(4).unwrap_or(s).to_owned(),
            None if s.starts_with("alias/") => s.to_owned(),
            None => format!("key/{s}"),
        }
    }
    match (actual, wanted) {
        (Some(a), Some(w)) => a == w || key_ref(a) == key_ref(w),
        (None, None) => true,
        _ => false,
    }
}

/// Database tags, then the credential's, then ownership (which always win).
fn desired_tags(cred: &RdsCredential, db: &RdsDatabase, owner: &Owner) -> BTreeMap<String, String> {
    let mut tags = cred.spec.secret.tags.clone();
    tags.extend(db.spec.tags.clone());
    tags.extend(owner.tags());
    tags
}

async fn create_aws_secret(
    m: Managed<'_>,
    tags: &BTreeMap<String, String>,
) -> Result<Ensured, Error> {
    let Managed {
        step:
            Step {
                cred,
                ctx,
                db_obj,
                db,
            },
        plan,
        admin,
        rotation,
    } = m;
    // A user that exists before its secret was never ours: refuse instead of claiming it.
    let mut conn = ctx.admin_pool.get(&db.target(None), admin).await?;
    let exists = conn.user_exists(&plan.username).await;
    conn.done(exists.is_ok()).await;
    if exists? {
        return Err(Error::refused(
            Reason::UserExists,
            format!(
                "database user {} already exists and no secret of this credential holds it; rdscred never takes over a user it did not create",
                plan.username
            ),
        ));
    }
    let policy = rotation.map(|r| r.password.clone()).unwrap_or_default();
    let value = initial_value(db, plan, &policy)?;
    let spec = &cred.spec.secret;
    let replicas = replica_regions(spec);
    let token = rotation::client_request_token(&cred.uid().unwrap_or_default(), "initial");
    let json = value.to_secret_json();
    // The account's CreateSecret quota (50/s) is shared by every credential created at once:
    // each request (retries too) waits for a slot of the client-side bucket rather than be
    // throttled.
    let meta = db
        .scope
        .secrets
        .create_at_rate(
            NewSecret {
                name: &spec.name,
                value: &json,
                description: spec.description.as_deref(),
                kms_key_id: db_obj.spec.kms_key_id.as_deref(),
                tags,
                replica_regions: &replicas,
                client_request_token: &token,
            },
            &ctx.create_secret_rate,
        )
        .await?;
    info!(secret = %meta.name, "created Secrets Manager secret");
    ctx.event(
        cred,
        EventType::Normal,
        Reason::SecretCreated,
        "Create",
        format!("created secret {} ({})", meta.name, meta.arn),
    )
    .await;
    ctx.secrets.remember(&meta);
    let written = meta.current_version().map(|version_id| Current {
        version_id: version_id.to_string(),
        value,
    });
    Ok(Ensured { meta, written })
}

fn initial_value(
    db: &ResolvedDatabase,
    plan: &UserPlan,
    policy: &PasswordSpec,
) -> Result<RdsSecretValue, Error> {
    Ok(RdsSecretValue {
        engine: db.engine.as_str().into(),
        host: db.endpoint.host.clone(),
        port: db.endpoint.port,
        username: plan.username.clone(),
        password: generate_password(policy, db.engine)?,
        dbname: db.dbname.clone(),
        db_instance_identifier: db.db_instance_identifier.clone(),
        db_cluster_identifier: db.db_cluster_identifier.clone(),
        masterarn: None,
    })
}

/// AWSCURRENT with its value. Read from the Kubernetes Secret when that already holds this
/// exact version (no GetSecretValue in steady state), else from Secrets Manager by stage.
pub(super) async fn current_value(s: Step<'_>, meta: &SecretMeta) -> Result<Current, Error> {
    let Step { cred, ctx, db, .. } = s;
    let Some(version) = meta.current_version() else {
        return Err(Error::not_ready(
            Reason::NoCurrentVersion,
            format!("secret {} has no AWSCURRENT version", meta.name),
        ));
    };
    if let Some(value) =
        propagation::sync::read_synced(&ctx.client, &ctx.secrets, cred, version).await?
    {
        return Ok(Current {
            version_id: version.to_string(),
            value,
        });
    }
    let v: SecretVersion = db
        .scope
        .secrets
        .get_value(&meta.arn, VersionSelector::Stage(AWSCURRENT))
        .await?
        .ok_or_else(|| {
            Error::not_ready(
                Reason::NoCurrentVersion,
                format!("secret {} has no AWSCURRENT version", meta.name),
            )
        })?;
    let mut value =
        RdsSecretValue::parse(v.value.expose()).map_err(|source| Error::SecretShape {
            id: meta.name.clone(),
            source,
        })?;
    fill_connection_defaults(&mut value, db);
    Ok(Current {
        version_id: v.version_id,
        value,
    })
}

/// RDS's own master secret holds only username and password: complete it from the database.
fn fill_connection_defaults(value: &mut RdsSecretValue, db: &ResolvedDatabase) {
    if value.host.is_empty() {
        value.host = db.endpoint.host.clone();
    }
    if value.port == 0 {
        value.port = db.endpoint.port;
    }
    if value.engine.is_empty() {
        value.engine = db.engine.as_str().into();
    }
    if value.dbname.is_none() {
        value.dbname = db.dbname.clone();
    }
}

/// AWSCURRENT: version id and parsed value.
#[derive(Clone, Debug)]
pub struct Current {
    pub version_id: String,
    pub value: RdsSecretValue,
}

impl Current {
    pub(super) fn login(&self) -> Login {
        Login {
            username: self.value.username.clone(),
            password: self.value.password.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kms_key_matches_by_key_id_or_alias_in_any_spelling() {
        let key_arn = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
        let alias_arn = "arn:aws:kms:us-east-1:111122223333:alias/app";
        let cases = [
            (Some(key_arn), Some(key_arn), true),
            (
                Some(key_arn),
                Some("1234abcd-12ab-34cd-56ef-1234567890ab"),
                true,
            ),
            (
                Some("1234abcd-12ab-34cd-56ef-1234567890ab"),
                Some(key_arn),
                true,
            ),
            (Some(alias_arn), Some("alias/app"), true),
            (Some("alias/app"), Some(alias_arn), true),
            // A suffix is not a key: `alias/otherapp` is not `alias/app`, key `…ab` not `b`.
            (
                Some("arn:aws:kms:us-east-1:111122223333:alias/otherapp"),
                Some("alias/app"),
                false,
            ),
            (Some(key_arn), Some("ab"), false),
            (Some(key_arn), Some("alias/app"), false),
            // The default key (none reported) is not a named key, and the other way round.
            (None, Some("alias/app"), false),
            (Some(key_arn), None, false),
            (None, None, true),
        ];
        for (actual, wanted, want) in cases {
            assert_eq!(
                kms_matches(actual, wanted),
                want,
                "{actual:?} vs {wanted:?}"
            );
        }
    }
}

#[cfg(test)]
mod refresh_tests {
    use std::time::Duration;

    use super::refresh_bounded;

    #[test]
    fn a_refresh_request_bounds_the_cache_age() {
        let now: jiff::Timestamp = "2026-12-02T13:00:00Z".parse().unwrap();
        let poll = Duration::from_secs(300);
        let table: &[(Option<&str>, Duration)] = &[
            (None, poll),
            (Some("yes please"), poll),
            (Some(""), poll),
            // Made in the last second: whatever is cached is older.
            (Some("2026-12-02T13:00:00Z"), Duration::ZERO),
            (Some("2026-12-02T12:59:59Z"), Duration::ZERO),
            (Some("2026-12-02T12:59:50Z"), Duration::from_secs(9)),
            // Long ago: the poll bound is the tighter one.
            (Some("2026-12-02T12:00:00Z"), poll),
            // A clock a little ahead: read now; far ahead: ignored.
            (Some("2026-12-02T13:00:30Z"), Duration::ZERO),
            (Some("2026-12-02T14:00:00Z"), poll),
        ];
        for (refresh, want) in table {
            assert_eq!(refresh_bounded(poll, *refresh, now), *want, "{refresh:?}");
        }
    }
}
