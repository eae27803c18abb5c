//! Secrets Manager: typed metadata, values by stage or version, the staging-label moves of the
//! rotation protocol, tags, replicas, deletion, native (Lambda) rotation and bulk listing.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::operation::describe_secret::DescribeSecretOutput;
use aws_sdk_secretsmanager::types::{ReplicaRegionType, RotationRulesType, SecretListEntry, Tag};

use super::ownership::{Owner, TAG_PREFIX};
use super::{ApiCalls, AwsError, MAX_ATTEMPTS, call, retry_backoff, timestamp};
use crate::limit::{RateLimiter, jitter};
use crate::secret::SecretString;

pub const AWSCURRENT: &str = "AWSCURRENT";
pub const AWSPENDING: &str = "AWSPENDING";
pub const AWSPREVIOUS: &str = "AWSPREVIOUS";

pub(super) const SERVICE: &str = "secretsmanager";

/// Native rotation rules (RotateSecret's `RotationRules`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RotationRules {
    pub automatically_after_days: Option<i64>,
    pub schedule_expression: Option<String>,
    pub duration: Option<String>,
}

impl RotationRules {
    /// `None` when AWS reports no rule at all (0 days counts as no rule).
    fn from_sdk(r: &RotationRulesType) -> Option<RotationRules> {
        let rules = RotationRules {
            automatically_after_days: r.automatically_after_days().filter(|d| *d > 0),
            schedule_expression: r
                .schedule_expression()
                .filter(|s| !s.is_empty())
                .map(str::to_string),
            duration: r.duration().filter(|s| !s.is_empty()).map(str::to_string),
        };
        (rules.automatically_after_days.is_some()
            || rules.schedule_expression.is_some()
            || rules.duration.is_some())
        .then_some(rules)
    }

    fn to_sdk(&self) -> RotationRulesType {
        RotationRulesType::builder()
            .set_automatically_after_days(self.automatically_after_days)
            .set_schedule_expression(self.schedule_expression.clone())
            .set_duration(self.duration.clone())
            .build()
    }
}

/// A secret's metadata (DescribeSecret, or one ListSecrets entry). Never holds a value.
#[derive(Clone, Debug)]
pub struct SecretMeta {
    pub arn: String,
    pub name: String,
    /// `None` when absent or empty.
    pub description: Option<String>,
    /// `None` when the secret uses the default key (`aws/secretsmanager`).
    pub kms_key_id: Option<String>,
    pub tags: BTreeMap<String, String>,
    /// Version id -> staging labels.
    pub versions: BTreeMap<String, Vec<String>>,
    pub deleted_date: Option<jiff::Timestamp>,
    pub rotation_enabled: bool,
    pub rotation_lambda_arn: Option<String>,
    pub rotation_rules: Option<RotationRules>,
    /// Regions the secret is replicated to. Only DescribeSecret reports them: see `replicas_known`.
    pub replica_regions: Vec<String>,
    /// False for metadata from ListSecrets, which does not report replication;
    /// [`Secrets::sync_replicas`] then describes the secret first.
    pub replicas_known: bool,
}

impl SecretMeta {
    /// The RdsCredential the ownership tags name, if any.
    pub fn owner(&self) -> Option<Owner> {
        Owner::from_tags(&self.tags)
    }

    /// The version carrying staging label `stage`.
    pub fn version_with_stage(&self, stage: &str) -> Option<&str> {
        self.versions
            .iter()
            .find(|(_, stages)| stages.iter().any(|s| s == stage))
            .map(|(id, _)| id.as_str())
    }

    pub fn current_version(&self) -> Option<&str> {
        self.version_with_stage(AWSCURRENT)
    }

    pub fn pending_version(&self) -> Option<&str> {
        self.version_with_stage(AWSPENDING)
    }

    pub fn previous_version(&self) -> Option<&str> {
        self.version_with_stage(AWSPREVIOUS)
    }

    pub fn is_scheduled_for_deletion(&self) -> bool {
        self.deleted_date.is_some()
    }

    fn from_describe(out: &DescribeSecretOutput, id: &str) -> SecretMeta {
        SecretMeta {
            arn: out.arn().unwrap_or(id).to_string(),
            name: out.name().unwrap_or(id).to_string(),
            description: non_empty(out.description()),
            kms_key_id: non_empty(out.kms_key_id()),
            tags: tag_map(out.tags()),
            versions: versions(out.version_ids_to_stages()),
            deleted_date: out.deleted_date().and_then(timestamp),
            rotation_enabled: out.rotation_enabled().unwrap_or(false),
            rotation_lambda_arn: non_empty(out.rotation_lambda_arn()),
            rotation_rules: out.rotation_rules().and_then(RotationRules::from_sdk),
            replica_regions: out
                .replication_status()
                .iter()
                .filter_map(|r| r.region().map(str::to_string))
                .collect(),
            replicas_known: true,
        }
    }

    /// The metadata of a secret we just created with `new`: one version, AWSCURRENT, no
    /// replicas yet (they are added after the create), no rotation, not deleted.
    fn written(new: &NewSecret<'_>, arn: &str, version_id: &str) -> SecretMeta {
        SecretMeta {
            arn: arn.to_string(),
            name: new.name.to_string(),
            description: non_empty(new.description),
            kms_key_id: non_empty(new.kms_key_id),
            tags: new.tags.clone(),
            versions: [(version_id.to_string(), vec![AWSCURRENT.to_string()])].into(),
            deleted_date: None,
            rotation_enabled: false,
            rotation_lambda_arn: None,
            rotation_rules: None,
            replica_regions: Vec::new(),
            replicas_known: true,
        }
    }

    pub(super) fn from_list_entry(e: &SecretListEntry) -> SecretMeta {
        SecretMeta {
            arn: e.arn().unwrap_or_default().to_string(),
            name: e.name().unwrap_or_default().to_string(),
            description: non_empty(e.description()),
            kms_key_id: non_empty(e.kms_key_id()),
            tags: tag_map(e.tags()),
            versions: versions(e.secret_versions_to_stages()),
            deleted_date: e.deleted_date().and_then(timestamp),
            rotation_enabled: e.rotation_enabled().unwrap_or(false),
            rotation_lambda_arn: non_empty(e.rotation_lambda_arn()),
            rotation_rules: e.rotation_rules().and_then(RotationRules::from_sdk),
            replica_regions: Vec::new(),
            replicas_known: false,
        }
    }
}

fn non_empty(s: Option<&str>) -> Option<String> {
    s.filter(|s| !s.is_empty()).map(str::to_string)
}

fn tag_map(tags: &[Tag]) -> BTreeMap<String, String> {
    tags.iter()
        .filter_map(|t| {
            Some((
                t.key()?.to_string(),
                t.value().unwrap_or_default().to_string(),
            ))
        })
        .collect()
}

fn versions(
    map: Option<&std::collections::HashMap<String, Vec<String>>>,
) -> BTreeMap<String, Vec<String>> {
    map.map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default()
}

fn sdk_tags<'a>(tags: impl IntoIterator<Item = (&'a String, &'a String)>) -> Vec<Tag> {
    tags.into_iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

fn replica_types(replicas: &[(String, Option<String>)]) -> Vec<ReplicaRegionType> {
    replicas
        .iter()
        .map(|(region, kms)| {
            ReplicaRegionType::builder()
                .region(region)
                .set_kms_key_id(kms.clone())
                .build()
        })
        .collect()
}

/// Which version GetSecretValue reads. Always name one: moto 5.2.5 may return a stale version
/// when neither is given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VersionSelector<'a> {
    Stage(&'a str),
    Id(&'a str),
}

impl VersionSelector<'static> {
    pub fn current() -> VersionSelector<'static> {
        VersionSelector::Stage(AWSCURRENT)
    }

    pub fn pending() -> VersionSelector<'static> {
        VersionSelector::Stage(AWSPENDING)
    }
}

/// One version of a secret with its value. `Debug` redacts the value.
#[derive(Clone, Debug)]
pub struct SecretVersion {
    pub version_id: String,
    pub stages: Vec<String>,
    pub value: SecretString,
}

/// What CreateSecret needs.
pub struct NewSecret<'a> {
    pub name: &'a str,
    pub value: &'a SecretString,
    pub description: Option<&'a str>,
    pub kms_key_id: Option<&'a str>,
    pub tags: &'a BTreeMap<String, String>,
    /// (region, KMS key in that region).
    pub replica_regions: &'a [(String, Option<String>)],
    /// Becomes the first version's id: a retried create is idempotent (32–64 characters).
    pub client_request_token: &'a str,
}

/// Secrets Manager client of one scope (region + credentials).
#[derive(Clone)]
pub struct Secrets {
    pub(super) client: Client,
    pub(super) calls: ApiCalls,
}

impl Secrets {
    pub(crate) fn new(client: Client, calls: ApiCalls) -> Secrets {
        Secrets { client, calls }
    }

    /// DescribeSecret by name or ARN; `None` if it does not exist. A secret scheduled for
    /// deletion is returned, with `deleted_date` set.
    pub async fn describe(&self, id: &str) -> Result<Option<SecretMeta>, AwsError> {
        let out = call(
            &self.calls,
            SERVICE,
            "DescribeSecret",
            id,
            self.client.describe_secret().secret_id(id).send(),
        )
        .await;
        match out {
            Ok(out) => Ok(Some(SecretMeta::from_describe(&out, id))),
            Err(AwsError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// CreateSecret (value, KMS key, description, tags, ClientRequestToken as the first version
    /// id), then ReplicateSecretToRegions if replicas are wanted. A retry with the same token
    /// and value succeeds.
    ///
    /// The metadata returned is what we just wrote (CreateSecret answers with the ARN and the
    /// first version's id; the rest is our own request), not a DescribeSecret: a new credential
    /// costs one call less. Only after adding replicas is the secret described, since their
    /// status is AWS's to report.
    ///
    /// Replicas are added after the create, not with `AddReplicaRegions`: that makes Secrets
    /// Manager authorize `ReplicateSecretToRegions` on the secret being created, which carries
    /// no tags yet, so the least-privilege policy (replication only of secrets tagged as ours)
    /// denies it. Once created with its tags, the secret is ours and may be replicated. A crash
    /// in between leaves a secret without replicas, which the next reconcile adds
    /// (`sync_replicas`).
    /// The name being taken yields `ScheduledForDeletion` when the existing secret is scheduled
    /// for deletion (AWS says so in an InvalidRequestException; moto answers
    /// ResourceExistsException, disambiguated with a DescribeSecret), else `AlreadyExists`.
    pub async fn create(&self, new: NewSecret<'_>) -> Result<SecretMeta, AwsError> {
        self.create_at_rate(new, &RateLimiter::unlimited()).await
    }

    /// [`create`](Self::create) with every CreateSecret request, retries included, waiting
    /// for a slot of `pace` (the account's CreateSecret quota is shared by every credential
    /// created at once). The retries after a throttle or a transient failure are ours, not the
    /// SDK's, so that they go through the bucket too; the same token makes each idempotent.
    pub async fn create_at_rate(
        &self,
        new: NewSecret<'_>,
        pace: &RateLimiter,
    ) -> Result<SecretMeta, AwsError> {
        let mut attempt = 1;
        let created = loop {
            pace.acquire().await;
            let request = self
                .client
                .create_secret()
                .name(new.name)
                .secret_string(new.value.expose())
                .set_description(new.description.map(str::to_string))
                .set_kms_key_id(new.kms_key_id.map(str::to_string))
                .set_tags(Some(sdk_tags(new.tags)).filter(|t| !t.is_empty()))
                .client_request_token(new.client_request_token)
                .customize()
                .config_override(
                    aws_sdk_secretsmanager::config::Builder::default()
                        .retry_config(aws_config::retry::RetryConfig::disabled()),
                )
                .send();
            match call(&self.calls, SERVICE, "CreateSecret", new.name, request).await {
                Err(AwsError::Throttled { .. } | AwsError::Transient { .. })
                    if attempt < MAX_ATTEMPTS =>
                {
                    tokio::time::sleep(jitter(retry_backoff(attempt), 0.5)).await;
                    attempt += 1;
                }
                out => break out,
            }
        };
        let meta = match created {
            Ok(out) => SecretMeta::written(
                &new,
                out.arn().unwrap_or(new.name),
                out.version_id().unwrap_or(new.client_request_token),
            ),
            Err(AwsError::AlreadyExists { id }) => {
                return match self.describe(new.name).await? {
                    Some(meta) if meta.is_scheduled_for_deletion() => {
                        Err(AwsError::ScheduledForDeletion { id })
                    }
                    _ => Err(AwsError::AlreadyExists { id }),
                };
            }
            Err(e) => return Err(e),
        };
        if self.sync_replicas(&meta, new.replica_regions).await? {
            return self
                .describe(&meta.arn)
                .await?
                .ok_or_else(|| AwsError::NotFound {
                    what: format!("secret {} (just created)", new.name),
                });
        }
        Ok(meta)
    }

    /// GetSecretValue of one version, by staging label or version id. `None` if the secret,
    /// the label or the version does not exist.
    pub async fn get_value(
        &self,
        id: &str,
        by: VersionSelector<'_>,
    ) -> Result<Option<SecretVersion>, AwsError> {
        let request = self.client.get_secret_value().secret_id(id);
        let request = match by {
            VersionSelector::Stage(stage) => request.version_stage(stage),
            VersionSelector::Id(version) => request.version_id(version),
        };
        let out = match call(&self.calls, SERVICE, "GetSecretValue", id, request.send()).await {
            Ok(out) => out,
            Err(AwsError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some(value) = out.secret_string() else {
            return Err(AwsError::Other {
                operation: "GetSecretValue",
                detail: format!("secret {id} holds a binary value, not a string"),
            });
        };
        Ok(Some(SecretVersion {
            version_id: out.version_id().unwrap_or_default().to_string(),
            stages: out.version_stages().to_vec(),
            value: SecretString::new(value),
        }))
    }

    /// PutSecretValue with staging label AWSPENDING only (AWSCURRENT does not move). The token
    /// becomes the version id; repeating the call with the same token and value succeeds, the
    /// same token with another value yields `AlreadyExists`.
    pub async fn put_pending(
        &self,
        id: &str,
        client_request_token: &str,
        value: &SecretString,
    ) -> Result<(), AwsError> {
        let request = self
            .client
            .put_secret_value()
            .secret_id(id)
            .client_request_token(client_request_token)
            .secret_string(value.expose())
            .version_stages(AWSPENDING)
            .send();
        call(&self.calls, SERVICE, "PutSecretValue", id, request)
            .await
            .map(drop)
    }

    /// UpdateSecretVersionStage: attach `stage` to `to_version`, detaching it from
    /// `from_version` (required by AWS when the label is attached elsewhere). Moving AWSCURRENT
    /// makes AWS attach AWSPREVIOUS to the version it left.
    pub async fn move_stage(
        &self,
        id: &str,
        stage: &str,
        to_version: &str,
        from_version: Option<&str>,
    ) -> Result<(), AwsError> {
        let request = self
            .client
            .update_secret_version_stage()
            .secret_id(id)
            .version_stage(stage)
            .move_to_version_id(to_version)
            .set_remove_from_version_id(from_version.map(str::to_string))
            .send();
        call(
            &self.calls,
            SERVICE,
            "UpdateSecretVersionStage",
            id,
            request,
        )
        .await
        .map(drop)
    }

    /// UpdateSecretVersionStage: detach `stage` from `from_version`.
    pub async fn remove_stage(
        &self,
        id: &str,
        stage: &str,
        from_version: &str,
    ) -> Result<(), AwsError> {
        let request = self
            .client
            .update_secret_version_stage()
            .secret_id(id)
            .version_stage(stage)
            .remove_from_version_id(from_version)
            .send();
        call(
            &self.calls,
            SERVICE,
            "UpdateSecretVersionStage",
            id,
            request,
        )
        .await
        .map(drop)
    }

    /// UpdateSecret without a value (no new version). `description: None` clears it;
    /// `kms_key_id: None` leaves the key as it is.
    pub async fn update_description_and_kms(
        &self,
        id: &str,
        description: Option<&str>,
        kms_key_id: Option<&str>,
    ) -> Result<(), AwsError> {
        let request = self
            .client
            .update_secret()
            .secret_id(id)
            .description(description.unwrap_or_default())
            .set_kms_key_id(kms_key_id.map(str::to_string))
            .send();
        call(&self.calls, SERVICE, "UpdateSecret", id, request)
            .await
            .map(drop)
    }

    /// Brings the tags to `want`: TagResource for missing or different values, UntagResource
    /// for keys not in `want` — but only keys under `rdscred.io/`. Other tags on the secret
    /// (cost allocation, tags added by people or AWS Config) are never removed, so a user tag
    /// dropped from the spec stays on the secret until removed by hand. `aws:` tags are
    /// read-only and ignored. Returns whether anything changed.
    pub async fn sync_tags(
        &self,
        meta: &SecretMeta,
        want: &BTreeMap<String, String>,
    ) -> Result<bool, AwsError> {
        let add: Vec<Tag> = sdk_tags(
            want.iter()
                .filter(|(k, v)| !k.starts_with("aws:") && meta.tags.get(*k) != Some(*v)),
        );
        let remove: Vec<String> = meta
            .tags
            .keys()
            .filter(|k| k.starts_with(TAG_PREFIX) && !want.contains_key(*k))
            .cloned()
            .collect();
        if !add.is_empty() {
            let request = self
                .client
                .tag_resource()
                .secret_id(&meta.arn)
                .set_tags(Some(add))
                .send();
            call(&self.calls, SERVICE, "TagResource", &meta.arn, request).await?;
        }
        if !remove.is_empty() {
            let request = self
                .client
                .untag_resource()
                .secret_id(&meta.arn)
                .set_tag_keys(Some(remove.clone()))
                .send();
            call(&self.calls, SERVICE, "UntagResource", &meta.arn, request).await?;
        }
        Ok(!remove.is_empty()
            || want
                .iter()
                .any(|(k, v)| !k.starts_with("aws:") && meta.tags.get(k) != Some(v)))
    }

    /// Brings the replica regions to `want` (region, KMS key): ReplicateSecretToRegions for
    /// missing ones, RemoveRegionsFromReplication for extra ones. The KMS key of an existing
    /// replica is not changed (that takes removing and re-adding the replica). Metadata from
    /// ListSecrets carries no replication status: the secret is described first.
    pub async fn sync_replicas(
        &self,
        meta: &SecretMeta,
        want: &[(String, Option<String>)],
    ) -> Result<bool, AwsError> {
        let fresh;
        let meta = if meta.replicas_known {
            meta
        } else {
            fresh = self
                .describe(&meta.arn)
                .await?
                .ok_or_else(|| AwsError::NotFound {
                    what: format!("secret {}", meta.name),
                })?;
            &fresh
        };
        let have: BTreeSet<&str> = meta.replica_regions.iter().map(String::as_str).collect();
        let wanted: BTreeSet<&str> = want.iter().map(|(r, _)| r.as_str()).collect();
        let add: Vec<(String, Option<String>)> = want
            .iter()
            .filter(|(r, _)| !have.contains(r.as_str()))
            .cloned()
            .collect();
        let remove: Vec<String> = have.difference(&wanted).map(|r| r.to_string()).collect();
        if !add.is_empty() {
            let request = self
                .client
                .replicate_secret_to_regions()
                .secret_id(&meta.arn)
                .set_add_replica_regions(Some(replica_types(&add)))
                .force_overwrite_replica_secret(false)
                .send();
            call(
                &self.calls,
                SERVICE,
                "ReplicateSecretToRegions",
                &meta.arn,
                request,
            )
            .await?;
        }
        if !remove.is_empty() {
            let request = self
                .client
                .remove_regions_from_replication()
                .secret_id(&meta.arn)
                .set_remove_replica_regions(Some(remove.clone()))
                .send();
            call(
                &self.calls,
                SERVICE,
                "RemoveRegionsFromReplication",
                &meta.arn,
                request,
            )
            .await?;
        }
        Ok(!add.is_empty() || !remove.is_empty())
    }

    /// RestoreSecret: cancels a scheduled deletion.
    pub async fn restore(&self, id: &str) -> Result<(), AwsError> {
        let request = self.client.restore_secret().secret_id(id).send();
        call(&self.calls, SERVICE, "RestoreSecret", id, request)
            .await
            .map(drop)
    }

    /// DeleteSecret with a recovery window (AWS accepts 7–30 days). `0` deletes at once,
    /// without recovery (ForceDeleteWithoutRecovery).
    pub async fn schedule_deletion(
        &self,
        id: &str,
        recovery_window_days: i64,
    ) -> Result<(), AwsError> {
        let request = self.client.delete_secret().secret_id(id);
        let request = if recovery_window_days == 0 {
            request.force_delete_without_recovery(true)
        } else {
            request.recovery_window_in_days(recovery_window_days)
        };
        call(&self.calls, SERVICE, "DeleteSecret", id, request.send())
            .await
            .map(drop)
    }

    /// RotateSecret: native rotation by `lambda_arn` with `rules`. With `rotate_immediately`
    /// false AWS only runs the Lambda's testSecret step now. A missing Lambda is reported as
    /// NotFound naming both the secret and the Lambda.
    pub async fn configure_lambda_rotation(
        &self,
        id: &str,
        lambda_arn: &str,
        rules: &RotationRules,
        rotate_immediately: bool,
    ) -> Result<(), AwsError> {
        let request = self
            .client
            .rotate_secret()
            .secret_id(id)
            .rotation_lambda_arn(lambda_arn)
            .rotation_rules(rules.to_sdk())
            .rotate_immediately(rotate_immediately)
            .send();
        match call(&self.calls, SERVICE, "RotateSecret", id, request).await {
            Ok(_) => Ok(()),
            Err(AwsError::NotFound { .. }) => Err(AwsError::NotFound {
                what: format!("secret {id} or rotation Lambda {lambda_arn}"),
            }),
            Err(e) => Err(e),
        }
    }

    /// CancelRotateSecret: turns native rotation off (and cancels one in progress).
    pub async fn disable_rotation(&self, id: &str) -> Result<(), AwsError> {
        let request = self.client.cancel_rotate_secret().secret_id(id).send();
        call(&self.calls, SERVICE, "CancelRotateSecret", id, request)
            .await
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(versions: &[(&str, &[&str])]) -> SecretMeta {
        SecretMeta {
            arn: "arn:aws:secretsmanager:us-east-1:1:secret:s-abc".into(),
            name: "s".into(),
            description: None,
            kms_key_id: None,
            tags: BTreeMap::new(),
            versions: versions
                .iter()
                .map(|(v, s)| (v.to_string(), s.iter().map(|s| s.to_string()).collect()))
                .collect(),
            deleted_date: None,
            rotation_enabled: false,
            rotation_lambda_arn: None,
            rotation_rules: None,
            replica_regions: Vec::new(),
            replicas_known: true,
        }
    }

    #[test]
    fn stages_are_found_by_label() {
        let m = meta(&[
            ("v1", &[AWSPREVIOUS]),
            ("v2", &[AWSCURRENT]),
            ("v3", &[AWSPENDING]),
            ("v0", &[]),
        ]);
        assert_eq!(m.current_version(), Some("v2"));
        assert_eq!(m.pending_version(), Some("v3"));
        assert_eq!(m.previous_version(), Some("v1"));
        assert_eq!(m.version_with_stage("CUSTOM"), None);
        assert!(!m.is_scheduled_for_deletion());
    }

    #[test]
    fn rotation_rules_normalise_zero_days() {
        let none = RotationRulesType::builder()
            .automatically_after_days(0)
            .build();
        assert_eq!(RotationRules::from_sdk(&none), None);
        let days = RotationRulesType::builder()
            .automatically_after_days(30)
            .build();
        assert_eq!(
            RotationRules::from_sdk(&days)
                .unwrap()
                .automatically_after_days,
            Some(30)
        );
        let cron = RotationRulesType::builder()
            .schedule_expression("cron(0 4 ? * SUN *)")
            .duration("2h")
            .build();
        let r = RotationRules::from_sdk(&cron).unwrap();
        assert_eq!(
            r.schedule_expression.as_deref(),
            Some("cron(0 4 ? * SUN *)")
        );
        assert_eq!(r.duration.as_deref(), Some("2h"));
    }

    #[test]
    fn secret_version_debug_is_redacted() {
        let v = SecretVersion {
            version_id: "v1".into(),
            stages: vec![AWSCURRENT.into()],
            value: SecretString::new("hunter2"),
        };
        assert!(!format!("{v:?}").contains("hunter2"));
    }
}
