//! The AWS access layer against moto (Secrets Manager + RDS + STS + Lambda on one port).
//! moto is shared and these tests run concurrently: every name carries a unique suffix, every
//! bulk assertion a unique cluster tag value.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use rdscred::aws::ownership::{CLUSTER_TAG, MANAGED_BY_TAG, Owner};
use rdscred::aws::{
    AWSCURRENT, AWSPENDING, AWSPREVIOUS, ApiCalls, Aws, AwsError, AwsSettings, NewSecret,
    RotationRules, SecretMeta, VersionSelector,
};
use rdscred::secret::{RdsSecretValue, SecretString};

// ------------------------------------------------------------------ helpers

/// The moto endpoint; panics with the command to run when the test ground is not up.
pub(crate) fn moto_endpoint() -> String {
    match std::env::var("RDSCRED_TEST_AWS_ENDPOINT") {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "RDSCRED_TEST_AWS_ENDPOINT is not set: run `bash scripts/test-env.sh up && source .test-env/env`"
        ),
    }
}

/// An [`Aws`] against moto with its own call counters.
pub(crate) async fn moto_aws() -> (Aws, ApiCalls) {
    let calls = ApiCalls::default();
    (aws_at(&moto_endpoint(), calls.clone()).await, calls)
}

/// An [`Aws`] whose calls go to `endpoint` (moto, or a proxy in front of it), counted in
/// `calls`.
pub(crate) async fn aws_at(endpoint: &str, calls: ApiCalls) -> Aws {
    Aws::new(
        AwsSettings {
            endpoint_url: Some(endpoint.to_string()),
            default_region: "us-east-1".into(),
        },
        calls,
    )
    .await
}

/// A name unique across concurrent tests and runs against the same moto.
fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
        % 1_000_000_000_000;
    format!(
        "{prefix}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A ClientRequestToken (32–64 characters), unique like [`unique`].
fn token() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{:08x}-{:016x}-{:012x}",
        std::process::id(),
        nanos as u64,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn owner(cluster: &str, name: &str) -> Owner {
    Owner {
        cluster: cluster.into(),
        namespace: "shop".into(),
        name: name.into(),
        uid: format!("uid-{name}"),
    }
}

fn tags_of(owner: &Owner, extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut tags: BTreeMap<String, String> = owner.tags().into_iter().collect();
    tags.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    tags
}

/// Creates a secret with the given tags and value; returns its metadata and first version id.
async fn create(
    aws: &Aws,
    name: &str,
    value: &str,
    tags: &BTreeMap<String, String>,
) -> (SecretMeta, String) {
    let scope = aws.scoped(None, None).await.unwrap();
    let token = token();
    let value = SecretString::new(value);
    let meta = scope
        .secrets
        .create(NewSecret {
            name,
            value: &value,
            description: None,
            kms_key_id: None,
            tags,
            replica_regions: &[],
            client_request_token: &token,
        })
        .await
        .unwrap();
    (meta, token)
}

async fn value_at(aws: &Aws, id: &str, stage: &str) -> Option<(String, String)> {
    let scope = aws.scoped(None, None).await.unwrap();
    scope
        .secrets
        .get_value(id, VersionSelector::Stage(stage))
        .await
        .unwrap()
        .map(|v| (v.version_id, v.value.expose().to_string()))
}

/// A Lambda function in moto (with the IAM role it needs), created through boto3 from the test
/// ground's venv; returns its ARN. moto's RotateSecret requires the function to exist.
pub(crate) fn moto_lambda_function(name: &str) -> String {
    let venv = std::env::var("RDSCRED_TEST_VENV")
        .unwrap_or_else(|_| format!("{}/.venv", env!("CARGO_MANIFEST_DIR")));
    let script = r#"
import io, os, sys, zipfile, boto3
ep = os.environ["RDSCRED_TEST_AWS_ENDPOINT"]
iam = boto3.client("iam", endpoint_url=ep, region_name="us-east-1")
lam = boto3.client("lambda", endpoint_url=ep, region_name="us-east-1")
try:
    iam.create_role(RoleName="rdscred-test-rotation", AssumeRolePolicyDocument="{}")
except iam.exceptions.EntityAlreadyExistsException:
    pass  # another test process made it
role = iam.get_role(RoleName="rdscred-test-rotation")["Role"]["Arn"]
buf = io.BytesIO()
with zipfile.ZipFile(buf, "w") as z:
    z.writestr("lambda_function.py", "def lambda_handler(event, context):\n    return {}\n")
fn = lam.create_function(FunctionName=sys.argv[1], Runtime="python3.12", Role=role,
                         Handler="lambda_function.lambda_handler", Code={"ZipFile": buf.getvalue()})
print(fn["FunctionArn"])
"#;
    let out = std::process::Command::new(format!("{venv}/bin/python"))
        .arg("-c")
        .arg(script)
        .arg(name)
        .env("RDSCRED_TEST_AWS_ENDPOINT", moto_endpoint())
        .output()
        .expect("running the venv's python (bash scripts/test-env.sh up)");
    assert!(
        out.status.success(),
        "creating Lambda {name} in moto failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// An RDS instance created through moto's RDS API with ManageMasterUserPassword: RDS (moto)
/// then creates the `rds!db-…` secret. moto's secret always holds
/// `{"username":"admin","password":"P@55w0rd!"}`, whatever the MasterUsername.
pub(crate) async fn moto_rds_instance(aws: &Aws, id: &str, engine: &str) {
    let rds = aws_sdk_rds::Client::new(aws.sdk_config());
    rds.create_db_instance()
        .db_instance_identifier(id)
        .engine(engine)
        .db_instance_class("db.t3.micro")
        .master_username("dbadmin")
        .manage_master_user_password(true)
        .allocated_storage(20)
        .db_name("app")
        .send()
        .await
        .expect("moto CreateDBInstance");
}

// ------------------------------------------------------------------ tests

#[tokio::test]
async fn create_with_tags_kms_description_and_describe_shows_owner() {
    let (aws, _) = moto_aws().await;
    let scope = aws.scoped(None, None).await.unwrap();
    let name = unique("rdscred-it/create");
    let who = owner("it-create", &name);
    let tags = tags_of(&who, &[("team", "payments")]);
    let value = SecretString::new(r#"{"username":"app","password":"p@ss w0rd\"'"}"#);
    let token = token();
    let new = || NewSecret {
        name: &name,
        value: &value,
        description: Some("orders DB login"),
        kms_key_id: Some("alias/rdscred-test"),
        tags: &tags,
        replica_regions: &[],
        client_request_token: &token,
    };
    let meta = scope.secrets.create(new()).await.unwrap();
    assert_eq!(meta.name, name);
    assert!(
        meta.arn.starts_with("arn:aws:secretsmanager:us-east-1:"),
        "{}",
        meta.arn
    );
    assert_eq!(meta.description.as_deref(), Some("orders DB login"));
    assert_eq!(meta.kms_key_id.as_deref(), Some("alias/rdscred-test"));
    assert_eq!(meta.tags.get("team").map(String::as_str), Some("payments"));
    assert_eq!(
        meta.tags.get(MANAGED_BY_TAG).map(String::as_str),
        Some("rdscred")
    );
    assert_eq!(meta.owner(), Some(who.clone()));
    assert!(meta.owner().unwrap().same_credential(&who));
    // The token is the first version: deterministic.
    assert_eq!(meta.current_version(), Some(token.as_str()));
    assert!(!meta.is_scheduled_for_deletion());

    // A retried create (same token, same value) is idempotent; a second creator is refused.
    let again = scope.secrets.create(new()).await.unwrap();
    assert_eq!(again.arn, meta.arn);
    assert_eq!(again.versions.len(), 1);
    let other_token = self::token();
    let err = scope
        .secrets
        .create(NewSecret {
            client_request_token: &other_token,
            ..new()
        })
        .await
        .unwrap_err();
    assert!(matches!(err, AwsError::AlreadyExists { .. }), "{err:?}");
    assert_eq!(err.reason(), "SecretAlreadyExists");

    // describe by name and by ARN.
    let by_arn = scope.secrets.describe(&meta.arn).await.unwrap().unwrap();
    assert_eq!(by_arn.name, name);

    // Description: changed, then cleared; the KMS key stays when not given.
    scope
        .secrets
        .update_description_and_kms(&meta.arn, Some("new text"), None)
        .await
        .unwrap();
    let m = scope.secrets.describe(&name).await.unwrap().unwrap();
    assert_eq!(m.description.as_deref(), Some("new text"));
    assert_eq!(m.kms_key_id.as_deref(), Some("alias/rdscred-test"));
    scope
        .secrets
        .update_description_and_kms(&meta.arn, None, Some("alias/other"))
        .await
        .unwrap();
    let m = scope.secrets.describe(&name).await.unwrap().unwrap();
    // AWS clears the description on an empty Description; moto 5.2.5 keeps the old text.
    assert!(
        matches!(m.description.as_deref(), None | Some("new text")),
        "{:?}",
        m.description
    );
    assert_eq!(m.kms_key_id.as_deref(), Some("alias/other"));
    assert_eq!(
        m.versions.len(),
        1,
        "UpdateSecret without a value makes no version"
    );
}

#[tokio::test]
async fn get_value_by_stage_and_by_id() {
    let (aws, calls) = moto_aws().await;
    let scope = aws.scoped(None, None).await.unwrap();
    let name = unique("rdscred-it-get");
    let (meta, v1) = create(&aws, &name, "first", &tags_of(&owner("it-get", &name), &[])).await;

    let cur = scope
        .secrets
        .get_value(&meta.arn, VersionSelector::current())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cur.version_id, v1);
    assert_eq!(cur.value.expose(), "first");
    assert!(cur.stages.iter().any(|s| s == AWSCURRENT));
    assert!(
        !format!("{cur:?}").contains("first"),
        "Debug of a SecretVersion shows no value"
    );

    let by_id = scope
        .secrets
        .get_value(&name, VersionSelector::Id(&v1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_id.value.expose(), "first");
    assert!(
        scope
            .secrets
            .get_value(&name, VersionSelector::pending())
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        scope
            .secrets
            .get_value(&name, VersionSelector::Id(&token()))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(calls.total("GetSecretValue"), 4);
}

#[tokio::test]
async fn four_step_staging_dance() {
    let (aws, calls) = moto_aws().await;
    let s = aws.scoped(None, None).await.unwrap().secrets;
    let name = unique("rdscred-it-dance");
    let (meta, v1) = create(
        &aws,
        &name,
        "password-1",
        &tags_of(&owner("it-dance", &name), &[]),
    )
    .await;
    let id = meta.arn.as_str();

    // createSecret: AWSPENDING, idempotent for the same token and value.
    let v2 = token();
    let pending = SecretString::new("password-2");
    s.put_pending(id, &v2, &pending).await.unwrap();
    s.put_pending(id, &v2, &pending).await.unwrap();
    let m = s.describe(id).await.unwrap().unwrap();
    assert_eq!(m.versions.len(), 2);
    assert_eq!(m.current_version(), Some(v1.as_str()));
    assert_eq!(m.pending_version(), Some(v2.as_str()));
    assert_eq!(
        value_at(&aws, id, AWSPENDING).await,
        Some((v2.clone(), "password-2".into()))
    );
    assert_eq!(
        value_at(&aws, id, AWSCURRENT).await,
        Some((v1.clone(), "password-1".into()))
    );

    // finishSecret: AWSCURRENT moves (AWSPREVIOUS follows), AWSPENDING is removed.
    s.move_stage(id, AWSCURRENT, &v2, Some(&v1)).await.unwrap();
    s.remove_stage(id, AWSPENDING, &v2).await.unwrap();
    let m = s.describe(id).await.unwrap().unwrap();
    assert_eq!(m.current_version(), Some(v2.as_str()));
    assert_eq!(m.previous_version(), Some(v1.as_str()));
    assert_eq!(m.pending_version(), None);
    assert_eq!(
        value_at(&aws, id, AWSCURRENT).await,
        Some((v2.clone(), "password-2".into()))
    );
    assert_eq!(
        value_at(&aws, id, AWSPREVIOUS).await,
        Some((v1.clone(), "password-1".into()))
    );
    assert_eq!(value_at(&aws, id, AWSPENDING).await, None);

    // A second rotation: AWSPREVIOUS moves on to v2.
    let v3 = token();
    s.put_pending(id, &v3, &SecretString::new("password-3"))
        .await
        .unwrap();
    s.move_stage(id, AWSCURRENT, &v3, Some(&v2)).await.unwrap();
    s.remove_stage(id, AWSPENDING, &v3).await.unwrap();
    assert_eq!(
        value_at(&aws, id, AWSCURRENT).await,
        Some((v3.clone(), "password-3".into()))
    );
    assert_eq!(
        value_at(&aws, id, AWSPREVIOUS).await,
        Some((v2.clone(), "password-2".into()))
    );
    let m = s.describe(id).await.unwrap().unwrap();
    assert!(
        m.versions[&v1].is_empty(),
        "v1 carries no label any more: {:?}",
        m.versions
    );

    // Moving AWSCURRENT without naming where it is now is an invalid request.
    let err = s.move_stage(id, AWSCURRENT, &v1, None).await.unwrap_err();
    assert!(
        matches!(
            err,
            AwsError::InvalidRequest {
                operation: "UpdateSecretVersionStage",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(calls.total("UpdateSecretVersionStage") >= 5);
}

#[tokio::test]
async fn deletion_restore_and_create_on_a_deleted_name() {
    let (aws, _) = moto_aws().await;
    let s = aws.scoped(None, None).await.unwrap().secrets;
    let name = unique("rdscred-it-delete");
    let tags = tags_of(&owner("it-delete", &name), &[]);
    let (meta, _) = create(&aws, &name, "v", &tags).await;

    s.schedule_deletion(&meta.arn, 7).await.unwrap();
    let m = s.describe(&name).await.unwrap().unwrap();
    assert!(m.is_scheduled_for_deletion());
    assert!(m.deleted_date.unwrap() > jiff::Timestamp::now());

    // Creating the name again: AWS answers InvalidRequestException "scheduled for deletion",
    // moto ResourceExistsException; both become ScheduledForDeletion.
    let value = SecretString::new("v2");
    let t = token();
    let err = s
        .create(NewSecret {
            name: &name,
            value: &value,
            description: None,
            kms_key_id: None,
            tags: &tags,
            replica_regions: &[],
            client_request_token: &t,
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&err, AwsError::ScheduledForDeletion { id } if *id == name),
        "{err:?}"
    );
    // Reading a deleted secret's value is refused the same way.
    let err = s
        .get_value(&name, VersionSelector::current())
        .await
        .unwrap_err();
    assert!(
        matches!(err, AwsError::ScheduledForDeletion { .. }),
        "{err:?}"
    );

    s.restore(&meta.arn).await.unwrap();
    let m = s.describe(&name).await.unwrap().unwrap();
    assert!(!m.is_scheduled_for_deletion());
    assert_eq!(value_at(&aws, &name, AWSCURRENT).await.unwrap().1, "v");

    // Out-of-range window is an invalid request; 0 deletes without recovery.
    let err = s.schedule_deletion(&name, 3).await.unwrap_err();
    assert!(
        matches!(
            err,
            AwsError::InvalidRequest {
                operation: "DeleteSecret",
                ..
            }
        ),
        "{err:?}"
    );
    s.schedule_deletion(&name, 0).await.unwrap();
    assert!(s.describe(&name).await.unwrap().is_none());
}

/// The ground answers concurrent requests like AWS: each valid one succeeds the first time.
/// (moto's own server fails a lookup or a listing that races a CreateSecret with HTTP 500:
/// 300 creates 16 at once, each followed by a lookup by ARN, every tenth by a listing, fail
/// against it every time; scripts/moto_strict.py runs each action atomically.)
/// Tests that count requests depend on it: a spurious 500 is an SDK retry, one request more.
#[tokio::test]
async fn concurrent_creates_lookups_and_listings_succeed_the_first_time() {
    const N: usize = 300;
    let calls = ApiCalls::with_request_log();
    let aws = aws_at(&moto_endpoint(), calls.clone()).await;
    let cluster = unique("it-atomic");
    let scope = aws.scoped(None, None).await.unwrap();
    let created = futures::stream::iter(0..N)
        .map(|i| {
            let (aws, scope, cluster) = (&aws, &scope, &cluster);
            async move {
                let name = format!("rdscred-it-atomic/{cluster}/{i:03}");
                let (meta, _) =
                    create(aws, &name, "v", &tags_of(&owner(cluster, &name), &[])).await;
                // A lookup by ARN and a listing while the others are being created.
                scope.secrets.describe(&meta.arn).await.unwrap().unwrap();
                if i % 10 == 0 {
                    scope.secrets.list_owned(cluster).await.unwrap();
                }
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    assert_eq!(created.len(), N);
    let retried: Vec<_> = calls
        .request_log()
        .unwrap()
        .snapshot()
        .into_iter()
        .filter(|r| r.attempt > 1)
        .map(|r| (r.operation, r.attempt))
        .collect();
    let failed: Vec<_> = calls
        .snapshot()
        .into_iter()
        .filter(|((_, _, outcome), _)| outcome != "ok")
        .collect();
    assert_eq!(
        (retried, failed),
        (vec![], vec![]),
        "requests retried after a failure, and calls that failed"
    );
}

#[tokio::test]
async fn list_owned_paginates_by_hundreds() {
    const N: usize = 205;
    let (aws, calls) = moto_aws().await;
    let cluster = unique("it-list");
    let started = Instant::now();
    futures::stream::iter(0..N)
        .map(|i| {
            let aws = aws.clone();
            let cluster = cluster.clone();
            async move {
                let name = format!("rdscred-it-list/{cluster}/{i:03}");
                create(&aws, &name, "v", &tags_of(&owner(&cluster, &name), &[])).await;
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
    // Decoys: a cluster whose name extends ours (ListSecrets tag filters match by prefix), and
    // a secret with our cluster as the value of another tag key.
    let decoy = format!("{cluster}-other");
    create(
        &aws,
        &unique("rdscred-it-list-decoy"),
        "v",
        &tags_of(&owner(&decoy, "d"), &[]),
    )
    .await;
    create(
        &aws,
        &unique("rdscred-it-list-decoy"),
        "v",
        &BTreeMap::from([
            (CLUSTER_TAG.to_string(), "x".into()),
            ("note".into(), cluster.clone()),
        ]),
    )
    .await;
    eprintln!("created {N} secrets in {:?}", started.elapsed());

    let scope = aws.scoped(None, None).await.unwrap();
    let before = calls.total("ListSecrets");
    let listed = scope.secrets.list_owned(&cluster).await.unwrap();
    let pages = calls.total("ListSecrets") - before;
    assert_eq!(listed.len(), N);
    // The server-side filter also lets both decoys through: 207 entries, still 3 pages.
    assert_eq!(pages, N.div_ceil(100) as u64);
    assert!(
        listed
            .iter()
            .all(|m| m.owner().is_some_and(|o| o.cluster == cluster))
    );
    assert!(
        listed.iter().all(|m| m.current_version().is_some()),
        "ListSecrets carries SecretVersionsToStages"
    );
    assert!(listed.iter().all(|m| !m.replicas_known));
    assert_eq!(calls.total("GetSecretValue"), 0);

    // Secrets scheduled for deletion are listed too (IncludePlannedDeletion).
    scope
        .secrets
        .schedule_deletion(&listed[0].arn, 7)
        .await
        .unwrap();
    let listed = scope.secrets.list_owned(&cluster).await.unwrap();
    assert_eq!(listed.len(), N);
    assert_eq!(
        listed
            .iter()
            .filter(|m| m.is_scheduled_for_deletion())
            .count(),
        1
    );
    let snapshot = calls.snapshot();
    assert!(
        snapshot
            .iter()
            .any(|((svc, op, outcome), n)| svc == "secretsmanager"
                && op == "ListSecrets"
                && outcome == "ok"
                && *n == 6)
    );
}

#[tokio::test]
async fn lambda_rotation_configuration() {
    let (aws, _) = moto_aws().await;
    let s = aws.scoped(None, None).await.unwrap().secrets;
    let name = unique("rdscred-it-lambda");
    let (meta, v1) = create(&aws, &name, "v", &tags_of(&owner("it-lambda", &name), &[])).await;
    let rules = RotationRules {
        automatically_after_days: Some(7),
        schedule_expression: None,
        duration: None,
    };

    // moto requires the function to exist (NotFound otherwise) ...
    let missing = "arn:aws:lambda:us-east-1:123456789012:function:rdscred-it-missing";
    let err = s
        .configure_lambda_rotation(&meta.arn, missing, &rules, false)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, AwsError::NotFound { what } if what.contains(missing)),
        "{err:?}"
    );

    let lambda = moto_lambda_function(&unique("rdscred-it-rotator"));
    s.configure_lambda_rotation(&meta.arn, &lambda, &rules, false)
        .await
        .unwrap();
    let m = s.describe(&meta.arn).await.unwrap().unwrap();
    assert!(m.rotation_enabled);
    assert_eq!(m.rotation_lambda_arn.as_deref(), Some(lambda.as_str()));
    assert_eq!(m.rotation_rules, Some(rules.clone()));
    // AWSCURRENT did not move (RotateImmediately=false). moto however leaves an AWSPENDING
    // version holding a copy of AWSCURRENT behind (real AWS removes it after testSecret).
    assert_eq!(m.current_version(), Some(v1.as_str()));
    assert_eq!(value_at(&aws, &meta.arn, AWSCURRENT).await.unwrap().0, v1);
    if let Some(p) = m.pending_version() {
        assert_ne!(p, v1);
        assert_eq!(value_at(&aws, &meta.arn, AWSPENDING).await.unwrap().1, "v");
    }

    s.disable_rotation(&meta.arn).await.unwrap();
    let m = s.describe(&meta.arn).await.unwrap().unwrap();
    assert!(!m.rotation_enabled);
}

#[tokio::test]
async fn rds_managed_master_secret() {
    let (aws, calls) = moto_aws().await;
    let scope = aws.scoped(Some("us-east-1"), None).await.unwrap();
    let id = unique("rdscred-it-db");
    moto_rds_instance(&aws, &id, "postgres").await;

    let info = scope
        .rds
        .describe_instance(&id)
        .await
        .unwrap()
        .expect("instance exists");
    assert_eq!(info.engine, "postgres");
    assert!(!info.host.is_empty());
    assert_eq!(info.port, 5432);
    assert_eq!(info.database_name.as_deref(), Some("app"));
    assert_eq!(info.master_username.as_deref(), Some("dbadmin"));
    assert!(info.arn.ends_with(&format!(":db:{id}")), "{}", info.arn);
    assert_eq!(info.status, "available");
    let secret_arn = info
        .master_user_secret_arn
        .expect("ManageMasterUserPassword gives a secret");
    assert!(secret_arn.contains(":secret:rds!db-"), "{secret_arn}");

    let meta = scope
        .secrets
        .describe(&secret_arn)
        .await
        .unwrap()
        .expect("the rds! secret exists");
    assert!(meta.name.starts_with("rds!db-"));
    assert_eq!(
        meta.owner(),
        None,
        "RDS's secret carries no ownership tags of ours"
    );
    let v = scope
        .secrets
        .get_value(&secret_arn, VersionSelector::current())
        .await
        .unwrap()
        .unwrap();
    let parsed = RdsSecretValue::parse(v.value.expose()).unwrap();
    assert!(!parsed.username.is_empty());

    assert!(
        scope
            .rds
            .describe_instance(&unique("rdscred-it-nodb"))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        scope
            .rds
            .describe_cluster(&unique("rdscred-it-nocluster"))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        calls
            .snapshot()
            .iter()
            .any(|((svc, op, outcome), _)| svc == "rds"
                && op == "DescribeDBInstances"
                && outcome == "not_found")
    );
}

#[tokio::test]
async fn rds_cluster_endpoint() {
    let (aws, _) = moto_aws().await;
    let scope = aws.scoped(None, None).await.unwrap();
    let id = unique("rdscred-it-cluster");
    aws_sdk_rds::Client::new(aws.sdk_config())
        .create_db_cluster()
        .db_cluster_identifier(&id)
        .engine("aurora-postgresql")
        .master_username("pgadmin")
        .manage_master_user_password(true)
        .database_name("app")
        .send()
        .await
        .expect("moto CreateDBCluster");
    let info = scope
        .rds
        .describe_cluster(&id)
        .await
        .unwrap()
        .expect("cluster exists");
    assert_eq!(info.engine, "aurora-postgresql");
    assert!(info.host.contains(".cluster-"), "{}", info.host);
    assert_eq!(info.port, 5432);
    assert!(
        info.master_user_secret_arn
            .unwrap()
            .contains(":secret:rds!cluster-")
    );
}

#[tokio::test]
async fn not_found_is_mapped() {
    let (aws, calls) = moto_aws().await;
    let s = aws.scoped(None, None).await.unwrap().secrets;
    let name = unique("rdscred-it-missing");
    assert!(s.describe(&name).await.unwrap().is_none());
    assert!(
        s.get_value(&name, VersionSelector::current())
            .await
            .unwrap()
            .is_none()
    );
    let err = s.restore(&name).await.unwrap_err();
    assert!(
        matches!(&err, AwsError::NotFound { what } if what.contains(&name)),
        "{err:?}"
    );
    assert_eq!(err.reason(), "AwsResourceNotFound");
    assert!(!err.is_retryable());
    let err = s
        .put_pending(&name, &token(), &SecretString::new("never-printed"))
        .await
        .unwrap_err();
    assert!(matches!(err, AwsError::NotFound { .. }), "{err:?}");
    assert!(!format!("{err:?} {err}").contains("never-printed"));
    let err = s
        .move_stage(&name, AWSCURRENT, "v2", Some("v1"))
        .await
        .unwrap_err();
    assert!(matches!(err, AwsError::NotFound { .. }), "{err:?}");
    let outcomes: Vec<_> = calls
        .snapshot()
        .into_iter()
        .filter(|((_, _, o), _)| o == "not_found")
        .collect();
    assert_eq!(
        outcomes.iter().map(|(_, n)| n).sum::<u64>(),
        5,
        "{outcomes:?}"
    );
}

#[tokio::test]
async fn sync_tags_touches_only_what_differs() {
    let (aws, calls) = moto_aws().await;
    let s = aws.scoped(None, None).await.unwrap().secrets;
    let name = unique("rdscred-it-tags");
    let who = owner("it-tags", &name);
    let (meta, _) = create(
        &aws,
        &name,
        "v",
        &tags_of(
            &who,
            &[
                ("team", "a"),
                ("rdscred.io/stale", "x"),
                ("cost-center", "42"),
            ],
        ),
    )
    .await;

    // In sync already: no call at all.
    let before = calls.total("TagResource") + calls.total("UntagResource");
    assert!(!s.sync_tags(&meta, &meta.tags.clone()).await.unwrap());
    assert_eq!(
        calls.total("TagResource") + calls.total("UntagResource"),
        before
    );

    let want = tags_of(&who, &[("team", "b"), ("env", "prod")]);
    assert!(s.sync_tags(&meta, &want).await.unwrap());
    let m = s.describe(&name).await.unwrap().unwrap();
    assert_eq!(m.tags.get("team").map(String::as_str), Some("b"));
    assert_eq!(m.tags.get("env").map(String::as_str), Some("prod"));
    assert!(
        !m.tags.contains_key("rdscred.io/stale"),
        "stale rdscred.io/ tags are removed"
    );
    assert_eq!(
        m.tags.get("cost-center").map(String::as_str),
        Some("42"),
        "foreign tags are kept"
    );
    assert_eq!(m.owner(), Some(who));
    assert!(!s.sync_tags(&m, &want).await.unwrap());
}

#[tokio::test]
async fn sync_replicas_adds_and_removes_regions() {
    let (aws, _) = moto_aws().await;
    let s = aws.scoped(None, None).await.unwrap().secrets;
    let name = unique("rdscred-it-replica");
    let (meta, _) = create(&aws, &name, "v", &tags_of(&owner("it-replica", &name), &[])).await;
    assert!(meta.replica_regions.is_empty());

    let want = vec![("eu-west-1".to_string(), None)];
    assert!(s.sync_replicas(&meta, &want).await.unwrap());
    let m = s.describe(&name).await.unwrap().unwrap();
    assert_eq!(m.replica_regions, vec!["eu-west-1".to_string()]);
    assert!(!s.sync_replicas(&m, &want).await.unwrap());
    // Metadata without replication status (as from ListSecrets) is described first.
    let listed = SecretMeta {
        replica_regions: Vec::new(),
        replicas_known: false,
        ..m.clone()
    };
    assert!(!s.sync_replicas(&listed, &want).await.unwrap());

    assert!(s.sync_replicas(&m, &[]).await.unwrap());
    assert!(
        s.describe(&name)
            .await
            .unwrap()
            .unwrap()
            .replica_regions
            .is_empty()
    );
}

#[tokio::test]
async fn assumed_role_scope_and_cache() {
    let (aws, calls) = moto_aws().await;
    let name = unique("rdscred-it-role");
    let (meta, _) = create(&aws, &name, "v", &tags_of(&owner("it-role", &name), &[])).await;
    // Counted from here: the create above answers from its own write (no DescribeSecret).
    let describes = calls.total("DescribeSecret");
    // moto's STS accepts any role; credentials of a role in account 123456789012 see its secrets.
    let role = "arn:aws:iam::123456789012:role/rdscred-it";
    let scope = aws.scoped(Some("us-east-1"), Some(role)).await.unwrap();
    assert_eq!(scope.region, "us-east-1");
    let m = scope.secrets.describe(&name).await.unwrap().unwrap();
    assert_eq!(m.arn, meta.arn);
    // Cached: the same scope again, and a scope per region.
    let again = aws.scoped(Some("us-east-1"), Some(role)).await.unwrap();
    assert!(again.secrets.describe(&name).await.unwrap().is_some());
    assert_eq!(
        aws.scoped(Some("eu-west-1"), None).await.unwrap().region,
        "eu-west-1"
    );
    assert_eq!(aws.scoped(None, None).await.unwrap().region, "us-east-1");
    assert_eq!(
        calls.total("DescribeSecret") - describes,
        2,
        "one DescribeSecret per describe call, through the role's cached scope"
    );

    let err = aws.scoped(None, Some("not-an-arn")).await.unwrap_err();
    assert!(matches!(err, AwsError::InvalidRequest { .. }), "{err:?}");
}

#[tokio::test]
async fn unreachable_endpoint_is_transient() {
    // Nothing listens on port 9 of loopback: a dispatch failure, retried, then Transient.
    let calls = ApiCalls::with_request_log();
    let aws = Aws::new(
        AwsSettings {
            endpoint_url: Some("http://127.0.0.1:9".into()),
            default_region: "us-east-1".into(),
        },
        calls.clone(),
    )
    .await;
    let s = aws.scoped(None, None).await.unwrap().secrets;
    let started = Instant::now();
    let err = s.describe("anything").await.unwrap_err();
    assert!(
        matches!(
            err,
            AwsError::Transient {
                operation: "DescribeSecret",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_retryable());
    assert_eq!(err.reason(), "AwsUnavailable");
    assert!(
        started.elapsed().as_secs() < 30,
        "retries are bounded: {:?}",
        started.elapsed()
    );
    assert_eq!(
        calls.snapshot(),
        vec![(
            (
                "secretsmanager".into(),
                "DescribeSecret".into(),
                "error".into()
            ),
            1
        )]
    );
    // One invocation, every attempt in the request log with its number.
    let attempts: Vec<u32> = calls
        .request_log()
        .unwrap()
        .snapshot()
        .iter()
        .map(|r| r.attempt)
        .collect();
    assert_eq!(
        attempts,
        (1..=rdscred::aws::MAX_ATTEMPTS).collect::<Vec<_>>()
    );
}

/// The admin-login cache is single-flight: 16 reconciles that find the entry expired at once
/// cost one GetSecretValue, and every one of them gets the login.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_login_refresh_is_single_flight() {
    use rdscred::crd::{Endpoint, EngineKind};
    use rdscred::engine::AdminLogins;
    use rdscred::reconcile::database::{ResolvedDatabase, read_admin_login};

    let (aws, calls) = moto_aws().await;
    let name = unique("rdscred-it-admin");
    let value =
        r#"{"engine":"postgres","host":"db","port":5432,"username":"admin","password":"pw"}"#;
    let (meta, _) = create(&aws, &name, value, &tags_of(&owner("it-admin", &name), &[])).await;
    let resolved = ResolvedDatabase {
        name: "db".into(),
        engine: EngineKind::Postgres,
        endpoint: Endpoint {
            host: "db".into(),
            port: 5432,
        },
        admin_secret_id: meta.arn.clone(),
        scope: aws.scoped(None, None).await.unwrap(),
        tls: Default::default(),
        dbname: None,
        db_instance_identifier: None,
        db_cluster_identifier: None,
    };
    let logins = AdminLogins::default();
    let before = calls.total("GetSecretValue");
    let get = || logins.get_or_read(&meta.arn, || read_admin_login(&resolved));
    assert_eq!(get().await.unwrap().username, "admin");
    assert_eq!(calls.total("GetSecretValue") - before, 1);
    for round in 0..2 {
        // Expired (forget drops the entry, as expiry makes it unusable): one refresh for all.
        logins.forget(&meta.arn);
        let before = calls.total("GetSecretValue");
        let results = futures::future::join_all((0..16).map(|_| get())).await;
        assert!(
            results
                .iter()
                .all(|r| r.as_ref().is_ok_and(|l| l.username == "admin")),
            "round {round}: every caller gets the login"
        );
        assert_eq!(
            calls.total("GetSecretValue") - before,
            1,
            "round {round}: one GetSecretValue for 16 concurrent callers"
        );
    }
}

/// The ListSecrets requests a test proxy saw, in order: (NextToken, failed by the proxy).
pub(crate) type Listings = std::sync::Arc<std::sync::Mutex<Vec<(Option<String>, bool)>>>;

/// The `NextToken` of a ListSecrets request body (`None`: the first page).
pub(crate) fn next_token(body: &[u8]) -> Option<String> {
    let body: serde_json::Value = serde_json::from_slice(body).ok()?;
    body.get("NextToken")?.as_str().map(str::to_owned)
}

/// The answer of an injected Secrets Manager failure: HTTP 500, InternalServiceError.
pub(crate) fn injected_500() -> (u16, String) {
    (
        500,
        r#"{"__type":"InternalServiceError","message":"injected by the test proxy"}"#.into(),
    )
}

#[tokio::test]
async fn list_owned_retries_a_failing_page_on_its_own() {
    // Through a proxy that fails the second page 5 times in a row: more than the SDK's own 4
    // attempts, so the SDK gives up once and the listing asks for that page again (same
    // token), instead of failing or starting over from the first page.
    use std::sync::Arc;
    const N: usize = 120;
    const FAILS: usize = 5;
    let (setup, _) = moto_aws().await;
    let cluster = unique("flaky");
    futures::stream::iter(0..N)
        .map(|i| {
            let (aws, cluster) = (setup.clone(), cluster.clone());
            async move {
                let name = format!("rdscred-it-flaky/{cluster}/{i:03}");
                create(&aws, &name, "v", &tags_of(&owner(&cluster, &name), &[])).await;
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;

    // (token, failed) of every ListSecrets request, in order.
    let seen: Listings = Arc::default();
    let log = seen.clone();
    let proxy = crate::support::AwsProxy::start(
        &moto_endpoint(),
        Arc::new(move |op: &str, body: &[u8]| {
            if op != "ListSecrets" {
                return None;
            }
            let token = next_token(body);
            let mut log = log.lock().unwrap();
            let failed_before = log.iter().filter(|(t, f)| *f && *t == token).count();
            let fail = token.is_some() && failed_before < FAILS;
            log.push((token, fail));
            fail.then(injected_500)
        }),
    )
    .await;
    let calls = ApiCalls::default();
    let aws = Aws::new(
        AwsSettings {
            endpoint_url: Some(proxy.url.clone()),
            default_region: "us-east-1".into(),
        },
        calls.clone(),
    )
    .await;
    let listed = aws
        .scoped(None, None)
        .await
        .unwrap()
        .secrets
        .list_owned(&cluster)
        .await
        .expect("the listing survives a page failing more often than the SDK retries");
    assert_eq!(listed.len(), N, "every secret listed once");

    let seen = seen.lock().unwrap().clone();
    let first = seen[1].0.clone();
    assert!(
        first.is_some(),
        "the second request is for page 2: {seen:?}"
    );
    let mut want = vec![(None, false)];
    want.extend((0..FAILS).map(|_| (first.clone(), true)));
    want.push((first, false));
    assert_eq!(
        seen, want,
        "page 1 once; page 2 failed {FAILS} times, then answered; page 1 never again"
    );
    // SDK operations: page 1, page 2 given up after 4 attempts, page 2 again (its 2nd
    // attempt answered).
    assert_eq!(calls.total("ListSecrets"), 3);
}
