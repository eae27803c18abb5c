//! The rotation protocol against moto and the real PostgreSQL and MariaDB servers, called
//! directly (no controller): several rotations in a row per strategy and engine, a crash right
//! after each step followed by a "new controller" resuming from Secrets Manager state alone,
//! testSecret failures, and rollback of a rotation that is not ours.
//!
//! moto and the databases are shared with concurrently running tests: every secret and user
//! name is unique, and users are dropped at the end.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdscred::aws::{
    AWSCURRENT, AWSPENDING, AWSPREVIOUS, ApiCalls, Aws, AwsSettings, NewSecret, SecretMeta,
    Secrets, VersionSelector,
};
use rdscred::crd::{EngineKind, PasswordSpec, Privilege, PrivilegeGrant, RotationStrategy};
use rdscred::engine::{self, Admin, ConnectTarget, Login, TlsSettings, UserPlan};
use rdscred::rotation::{self, CrashPoint, RotationError, RotationJob, RotationOutcome, Step};
use rdscred::secret::{RdsSecretValue, SecretString, generate_password};

use RotationStrategy::{AlternatingUsers, SingleUser};

// ------------------------------------------------------------------ environment

fn env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!("{name} is not set: run `bash scripts/test-env.sh up && source .test-env/env`"),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Db {
    Postgres,
    Mariadb,
}

impl Db {
    fn engine(self) -> EngineKind {
        match self {
            Db::Postgres => EngineKind::Postgres,
            Db::Mariadb => EngineKind::Mariadb,
        }
    }

    fn var(self, suffix: &str) -> String {
        env(&format!(
            "RDSCRED_TEST_{}_{suffix}",
            if self == Db::Postgres { "PG" } else { "MYSQL" }
        ))
    }

    fn database(self) -> String {
        self.var("DB")
    }

    fn target(self) -> ConnectTarget {
        ConnectTarget {
            engine: self.engine(),
            host: self.var("HOST"),
            port: self.var("PORT").parse().expect("port is a number"),
            database: Some(self.database()),
            tls: TlsSettings::default(),
        }
    }

    fn admin(self) -> Login {
        Login {
            username: self.var("ADMIN_USER"),
            password: SecretString::new(self.var("ADMIN_PASSWORD")),
        }
    }

    /// Just enough privilege to log in to the test database on each engine.
    fn grants(self) -> Vec<PrivilegeGrant> {
        let privileges = match self {
            Db::Postgres => vec![Privilege::Connect],
            Db::Mariadb => vec![Privilege::Select],
        };
        vec![PrivilegeGrant {
            database: self.database(),
            schema: None,
            privileges,
        }]
    }
}

async fn secrets() -> Secrets {
    let settings = AwsSettings {
        endpoint_url: Some(env("RDSCRED_TEST_AWS_ENDPOINT")),
        default_region: "us-east-1".into(),
    };
    let aws = Aws::new(settings, ApiCalls::default()).await;
    aws.scoped(None, None).await.expect("moto scope").secrets
}

/// Unique across concurrent tests and across runs against the same servers; short enough that
/// `<name>_clone` fits MySQL's 32 characters.
fn unique_user() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    format!(
        "rot{:x}x{}",
        nanos % 0xff_ffff_ffff,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

// ------------------------------------------------------------------ one credential

/// A secret in moto plus its user in the database, as provisioning would leave them.
struct Fixture {
    db: Db,
    strategy: RotationStrategy,
    secrets: Secrets,
    arn: String,
    target: ConnectTarget,
    admin: Login,
    plan: UserPlan,
    seed: String,
    password: PasswordSpec,
}

impl Fixture {
    async fn new(db: Db, strategy: RotationStrategy) -> Arc<Fixture> {
        let username = unique_user();
        let login_users = match strategy {
            AlternatingUsers => vec![username.clone(), UserPlan::clone_username(&username)],
            SingleUser => vec![username.clone()],
        };
        let plan = UserPlan {
            username: username.clone(),
            login_users,
            grants: db.grants(),
            roles: vec![],
        };
        let (target, admin) = (db.target(), db.admin());
        // Every printable character the policy allows: quoting must hold in every step.
        let password = PasswordSpec {
            length: 32,
            exclude_characters: None,
            alphanumeric_only: false,
        };
        let initial = generate_password(&password, db.engine()).unwrap();
        let mut conn = Admin::connect(&target, &admin)
            .await
            .expect("admin connects");
        assert!(
            conn.ensure_login_user(&plan, &username, &initial)
                .await
                .expect("create user")
        );
        conn.sync_privileges(&plan).await.expect("grant");
        conn.close().await;

        let value = RdsSecretValue {
            engine: db.engine().as_str().into(),
            host: target.host.clone(),
            port: target.port,
            username: username.clone(),
            password: initial,
            dbname: Some(db.database()),
            db_instance_identifier: Some("rotation-test".into()),
            db_cluster_identifier: None,
            masterarn: None,
        };
        let seed = format!("uid-{username}");
        let secrets = secrets().await;
        let meta = secrets
            .create(NewSecret {
                name: &format!("rotation-test/{username}"),
                value: &value.to_secret_json(),
                description: None,
                kms_key_id: None,
                tags: &Default::default(),
                replica_regions: &[],
                client_request_token: &rotation::client_request_token(&seed, "initial"),
            })
            .await
            .expect("create secret");
        Arc::new(Fixture {
            db,
            strategy,
            secrets,
            arn: meta.arn,
            target,
            admin,
            plan,
            seed,
            password,
        })
    }

    fn job<'a>(&'a self, crash_point: Option<&'a CrashPoint>) -> RotationJob<'a> {
        RotationJob {
            secret_id: &self.arn,
            secrets: &self.secrets,
            target: &self.target,
            admin: &self.admin,
            plan: &self.plan,
            strategy: self.strategy,
            password: &self.password,
            token_seed: &self.seed,
            crash_point,
        }
    }

    async fn meta(&self) -> SecretMeta {
        self.secrets
            .describe(&self.arn)
            .await
            .unwrap()
            .expect("secret exists")
    }

    /// (version id, value) of the version carrying `stage`, read by stage.
    async fn by_stage(&self, stage: &str) -> Option<(String, RdsSecretValue)> {
        let v = self
            .secrets
            .get_value(&self.arn, VersionSelector::Stage(stage))
            .await
            .unwrap()?;
        Some((
            v.version_id,
            RdsSecretValue::parse(v.value.expose()).unwrap(),
        ))
    }

    async fn current(&self) -> (String, RdsSecretValue) {
        self.by_stage(AWSCURRENT).await.expect("AWSCURRENT exists")
    }

    async fn logs_in(&self, value: &RdsSecretValue) -> bool {
        engine::check_login(
            &self.target,
            &Login {
                username: value.username.clone(),
                password: value.password.clone(),
            },
        )
        .await
        .is_ok()
    }

    /// No rotation in flight and AWSCURRENT logs in; returns AWSCURRENT.
    async fn assert_settled(&self) -> (String, RdsSecretValue) {
        let meta = self.meta().await;
        assert_eq!(
            meta.pending_version(),
            None,
            "AWSPENDING left behind: {:?}",
            meta.versions
        );
        let (version, current) = self.current().await;
        assert_eq!(meta.current_version(), Some(version.as_str()));
        assert!(
            self.logs_in(&current).await,
            "AWSCURRENT ({version}, user {}) does not log in",
            current.username
        );
        (version, current)
    }

    /// The user AWSPENDING holds when rotating from `current`.
    fn next_user(&self, current: &RdsSecretValue) -> String {
        match self.strategy {
            SingleUser => current.username.clone(),
            AlternatingUsers if current.username == self.plan.username => {
                UserPlan::clone_username(&self.plan.username)
            }
            AlternatingUsers => self.plan.username.clone(),
        }
    }

    /// Changes a user's password behind the rotation's back (to make a login fail on purpose).
    async fn scramble_password(&self, username: &str) {
        let mut conn = Admin::connect(&self.target, &self.admin).await.unwrap();
        conn.set_password(
            username,
            &generate_password(&PasswordSpec::default(), self.db.engine()).unwrap(),
        )
        .await
        .unwrap();
        conn.close().await;
    }

    async fn cleanup(&self) {
        let mut plan = self.plan.clone();
        plan.login_users = vec![
            plan.username.clone(),
            UserPlan::clone_username(&plan.username),
        ];
        if let Ok(mut conn) = Admin::connect(&self.target, &self.admin).await {
            let _ = conn.drop_users(&plan).await;
            conn.close().await;
        }
    }
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

// ------------------------------------------------------------------ rotations in a row

/// Three rotations; after each: AWSCURRENT (read by stage) logs in, AWSPREVIOUS is the version
/// it replaced, no AWSPENDING. Alternating: the user flips, the previous user still logs in
/// with AWSPREVIOUS, and the value from two rotations back no longer does (its user was
/// re-passworded). Single-user: the previous password stops working. Returns the durations of
/// the rotations and of one AWSCURRENT login check after each (to read the figures: a
/// rotation logs in twice, as admin and in testSecret).
async fn three_rotations(db: Db, strategy: RotationStrategy) -> (Vec<Duration>, Vec<Duration>) {
    let fx = Fixture::new(db, strategy).await;
    let mut history = vec![fx.assert_settled().await];
    let (mut times, mut logins) = (Vec::new(), Vec::new());
    for i in 1..=3 {
        let started = Instant::now();
        let outcome = rotation::rotate(&fx.job(None))
            .await
            .unwrap_or_else(|e| panic!("{db:?} {strategy:?} rotation {i}: {e}"));
        times.push(started.elapsed());
        let (old_version, old) = history.last().cloned().unwrap();
        let (version, current) = fx.assert_settled().await;
        let login_started = Instant::now();
        assert!(fx.logs_in(&current).await);
        logins.push(login_started.elapsed());
        assert_eq!(
            outcome,
            RotationOutcome::Completed {
                version_id: version.clone(),
                username: current.username.clone()
            }
        );
        assert_eq!(
            version,
            rotation::client_request_token(&fx.seed, &old_version),
            "deterministic version id"
        );
        let (previous_version, previous) =
            fx.by_stage(AWSPREVIOUS).await.expect("AWSPREVIOUS exists");
        assert_eq!(previous_version, old_version);
        assert_eq!(previous.username, old.username);
        assert_ne!(current.password, old.password);
        assert_eq!(current.username, fx.next_user(&old));
        match strategy {
            AlternatingUsers => {
                assert_ne!(current.username, old.username, "alternating flips the user");
                assert!(
                    fx.logs_in(&previous).await,
                    "rotation {i}: the previous user must keep working (pods still on it)"
                );
                if i >= 2 {
                    let (_, two_back) = &history[history.len() - 2];
                    assert_eq!(two_back.username, current.username);
                    assert!(
                        !fx.logs_in(two_back).await,
                        "rotation {i}: the user was re-passworded"
                    );
                }
            }
            SingleUser => {
                assert_eq!(current.username, fx.plan.username);
                assert!(
                    !fx.logs_in(&previous).await,
                    "single-user: the old password is gone"
                );
            }
        }
        history.push((version, current));
    }
    fx.cleanup().await;
    (times, logins)
}

static TIMES: Mutex<Vec<(Db, RotationStrategy, Duration)>> = Mutex::new(Vec::new());

async fn rotations_in_a_row(db: Db) {
    for strategy in [AlternatingUsers, SingleUser] {
        let (times, logins) = three_rotations(db, strategy).await;
        TIMES
            .lock()
            .unwrap()
            .extend(times.iter().map(|t| (db, strategy, *t)));
        eprintln!(
            "rotation times {db:?} {strategy:?}: {times:?} (median {:?}); one login: median {:?}",
            median(times.clone()),
            median(logins)
        );
    }
    let all: Vec<Duration> = TIMES
        .lock()
        .unwrap()
        .iter()
        .filter(|(d, _, _)| *d == db)
        .map(|(_, _, t)| *t)
        .collect();
    eprintln!(
        "median rotation time {db:?}: {:?} over {} rotations (both strategies)",
        median(all.clone()),
        all.len()
    );
}

#[tokio::test]
async fn postgres_three_rotations_in_a_row_both_strategies() {
    rotations_in_a_row(Db::Postgres).await;
}

#[tokio::test]
async fn mariadb_three_rotations_in_a_row_both_strategies() {
    rotations_in_a_row(Db::Mariadb).await;
}

// ------------------------------------------------------------------ crash and resume

/// Runs `rotate` until right after `step`, kills it there, checks what a client would see at
/// that instant, then lets a "new controller" (fresh job, no crash point) resume.
async fn crash_after(db: Db, strategy: RotationStrategy, step: Step) {
    let fx = Fixture::new(db, strategy).await;
    let (v0, cur0) = fx.assert_settled().await;
    let expected_version = rotation::client_request_token(&fx.seed, &v0);
    let crash = Arc::new(CrashPoint::hang(step));
    let task = tokio::spawn({
        let (fx, crash) = (fx.clone(), crash.clone());
        async move { rotation::rotate(&fx.job(Some(&crash))).await }
    });
    tokio::time::timeout(Duration::from_secs(60), crash.reached.notified())
        .await
        .unwrap_or_else(|_| panic!("{db:?} {strategy:?}: {step} never completed"));
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());

    // The instant of the crash.
    let meta = fx.meta().await;
    let (version, current) = fx.current().await;
    if step == Step::FinishSecret {
        assert_eq!(version, expected_version);
        assert!(fx.logs_in(&current).await);
    } else {
        assert_eq!(version, v0);
        assert_eq!(meta.pending_version(), Some(expected_version.as_str()));
        // single-user after setSecret: the database already has the pending password while
        // AWSCURRENT still holds the old one. This is the single-user window, which is why
        // resume must finish (not abandon) such a rotation. Alternating never has it.
        let window = strategy == SingleUser && matches!(step, Step::SetSecret | Step::TestSecret);
        assert_eq!(
            fx.logs_in(&cur0).await,
            !window,
            "{db:?} {strategy:?} after {step}: AWSCURRENT logs in?"
        );
    }

    // A new controller starts.
    let outcome = rotation::resume_pending(&fx.job(None))
        .await
        .unwrap_or_else(|e| panic!("{db:?} {strategy:?} resume after {step}: {e}"));
    let (version, current) = fx.assert_settled().await;
    assert_eq!(version, expected_version);
    assert_eq!(current.username, fx.next_user(&cur0));
    assert_eq!(fx.by_stage(AWSPREVIOUS).await.unwrap().0, v0);
    if step == Step::FinishSecret {
        assert_eq!(
            outcome,
            RotationOutcome::NothingPending,
            "nothing left to do after finishSecret"
        );
    } else {
        assert_eq!(
            outcome,
            RotationOutcome::Completed {
                version_id: expected_version,
                username: current.username.clone()
            }
        );
    }
    if strategy == AlternatingUsers {
        assert!(fx.logs_in(&cur0).await, "the previous user keeps working");
    }
    // And the next rotation runs normally from there.
    rotation::rotate(&fx.job(None)).await.unwrap();
    fx.assert_settled().await;
    fx.cleanup().await;
}

#[tokio::test]
async fn crash_after_create_secret_alternating_postgres() {
    crash_after(Db::Postgres, AlternatingUsers, Step::CreateSecret).await;
}

#[tokio::test]
async fn crash_after_create_secret_single_user_mariadb() {
    crash_after(Db::Mariadb, SingleUser, Step::CreateSecret).await;
}

#[tokio::test]
async fn crash_after_set_secret_alternating_mariadb() {
    crash_after(Db::Mariadb, AlternatingUsers, Step::SetSecret).await;
}

#[tokio::test]
async fn crash_after_set_secret_single_user_postgres() {
    crash_after(Db::Postgres, SingleUser, Step::SetSecret).await;
}

#[tokio::test]
async fn crash_after_test_secret_alternating_postgres() {
    crash_after(Db::Postgres, AlternatingUsers, Step::TestSecret).await;
}

#[tokio::test]
async fn crash_after_test_secret_single_user_mariadb() {
    crash_after(Db::Mariadb, SingleUser, Step::TestSecret).await;
}

#[tokio::test]
async fn crash_after_finish_secret_alternating_mariadb() {
    crash_after(Db::Mariadb, AlternatingUsers, Step::FinishSecret).await;
}

#[tokio::test]
async fn crash_after_finish_secret_single_user_postgres() {
    crash_after(Db::Postgres, SingleUser, Step::FinishSecret).await;
}

/// A crash inside finishSecret, after AWSCURRENT moved and before AWSPENDING was removed
/// (AWSPENDING and AWSCURRENT on one version): resume only removes the label.
#[tokio::test]
async fn crash_inside_finish_secret_leaves_only_the_label_to_remove() {
    let fx = Fixture::new(Db::Postgres, AlternatingUsers).await;
    let (v0, cur0) = fx.assert_settled().await;
    let crash = Arc::new(CrashPoint::hang(Step::TestSecret));
    let task = tokio::spawn({
        let (fx, crash) = (fx.clone(), crash.clone());
        async move { rotation::rotate(&fx.job(Some(&crash))).await }
    });
    crash.reached.notified().await;
    task.abort();
    let _ = task.await;
    let pending = rotation::client_request_token(&fx.seed, &v0);
    fx.secrets
        .move_stage(&fx.arn, AWSCURRENT, &pending, Some(&v0))
        .await
        .unwrap();
    let meta = fx.meta().await;
    assert_eq!(meta.current_version(), meta.pending_version());

    let outcome = rotation::resume_pending(&fx.job(None)).await.unwrap();
    let (version, current) = fx.assert_settled().await;
    assert_eq!(
        outcome,
        RotationOutcome::Completed {
            version_id: pending.clone(),
            username: current.username.clone()
        }
    );
    assert_eq!(version, pending);
    assert_eq!(fx.by_stage(AWSPREVIOUS).await.unwrap().0, v0);
    assert!(fx.logs_in(&cur0).await);
    fx.cleanup().await;
}

// ------------------------------------------------------------------ testSecret failures

/// Pauses the rotation after setSecret, changes the pending user's password behind its back so
/// the real testSecret login fails, then lets it continue.
async fn break_pending_login_before_test(
    fx: &Arc<Fixture>,
) -> Result<RotationOutcome, RotationError> {
    let (_, cur0) = fx.current().await;
    let pause = Arc::new(CrashPoint::pause(Step::SetSecret));
    let task = tokio::spawn({
        let (fx, pause) = (fx.clone(), pause.clone());
        async move { rotation::rotate(&fx.job(Some(&pause))).await }
    });
    pause.reached.notified().await;
    fx.scramble_password(&fx.next_user(&cur0)).await;
    pause.proceed.notify_one();
    task.await.unwrap()
}

#[tokio::test]
async fn single_user_test_failure_restores_awscurrent() {
    for db in [Db::Postgres, Db::Mariadb] {
        let fx = Fixture::new(db, SingleUser).await;
        let (v0, cur0) = fx.assert_settled().await;
        let err = break_pending_login_before_test(&fx)
            .await
            .expect_err("testSecret must fail");
        assert!(
            matches!(err, RotationError::TestFailedRolledBack { .. }),
            "{db:?}: {err}"
        );
        assert_eq!(err.step(), Step::TestSecret);
        assert!(err.is_retryable());
        // Rolled back: AWSCURRENT unchanged, logs in, no AWSPENDING.
        let (version, current) = fx.assert_settled().await;
        assert_eq!(version, v0);
        assert_eq!(current, cur0);
        // The retry reuses the rolled-back version (a version id never gets a second value).
        let outcome = rotation::rotate(&fx.job(None)).await.unwrap();
        let (version, current) = fx.assert_settled().await;
        assert_eq!(version, rotation::client_request_token(&fx.seed, &v0));
        assert_eq!(
            outcome,
            RotationOutcome::Completed {
                version_id: version,
                username: current.username
            }
        );
        fx.cleanup().await;
    }
}

#[tokio::test]
async fn alternating_test_failure_keeps_awscurrent_and_retries() {
    let fx = Fixture::new(Db::Mariadb, AlternatingUsers).await;
    let (v0, cur0) = fx.assert_settled().await;
    let err = break_pending_login_before_test(&fx)
        .await
        .expect_err("testSecret must fail");
    assert!(matches!(err, RotationError::TestFailed { .. }), "{err}");
    // AWSCURRENT untouched and working; AWSPENDING kept for the retry.
    let meta = fx.meta().await;
    assert_eq!(meta.current_version(), Some(v0.as_str()));
    assert_eq!(
        meta.pending_version(),
        Some(rotation::client_request_token(&fx.seed, &v0).as_str())
    );
    assert!(fx.logs_in(&cur0).await);
    // The retry resumes that rotation (setSecret again) and finishes it.
    let outcome = rotation::rotate(&fx.job(None)).await.unwrap();
    let (version, current) = fx.assert_settled().await;
    assert_eq!(version, rotation::client_request_token(&fx.seed, &v0));
    assert_eq!(
        outcome,
        RotationOutcome::Completed {
            version_id: version,
            username: current.username.clone()
        }
    );
    assert_ne!(current.username, cur0.username);
    fx.cleanup().await;
}

// ------------------------------------------------------------------ rollback of what is not ours

/// single-user crashed after setSecret, then the credential was recreated (new uid = new token
/// seed): the pending rotation is not this credential's, so it is rolled back, and AWSCURRENT's
/// password goes back into the database.
#[tokio::test]
async fn foreign_pending_is_rolled_back_and_awscurrent_restored() {
    let fx = Fixture::new(Db::Postgres, SingleUser).await;
    let (v0, cur0) = fx.assert_settled().await;
    let crash = Arc::new(CrashPoint::hang(Step::SetSecret));
    let task = tokio::spawn({
        let (fx, crash) = (fx.clone(), crash.clone());
        async move { rotation::rotate(&fx.job(Some(&crash))).await }
    });
    crash.reached.notified().await;
    task.abort();
    let _ = task.await;
    assert!(!fx.logs_in(&cur0).await, "the single-user window is open");

    let other_seed = format!("{}-recreated", fx.seed);
    let job = RotationJob {
        token_seed: &other_seed,
        ..fx.job(None)
    };
    assert_eq!(
        rotation::resume_pending(&job).await.unwrap(),
        RotationOutcome::NothingPending
    );
    let (version, current) = fx.assert_settled().await;
    assert_eq!(version, v0);
    assert_eq!(current, cur0);
    // The abandoned version keeps no label; the version stays (AWS keeps unlabelled versions).
    let meta = fx.meta().await;
    let abandoned = rotation::client_request_token(&fx.seed, &v0);
    assert!(
        meta.versions
            .get(&abandoned)
            .is_none_or(|s| !s.iter().any(|l| l == AWSPENDING))
    );
    fx.cleanup().await;
}

/// The strategy changed (single-user → alternating) while a rotation was pending: its value
/// no longer fits the plan, so it is rolled back; the next rotation cannot reuse that version id
/// with another value and moves on to the next deterministic token.
#[tokio::test]
async fn pending_that_no_longer_fits_the_plan_is_rolled_back() {
    let single = Fixture::new(Db::Mariadb, SingleUser).await;
    let (v0, cur0) = single.assert_settled().await;
    let crash = Arc::new(CrashPoint::hang(Step::CreateSecret));
    let task = tokio::spawn({
        let (fx, crash) = (single.clone(), crash.clone());
        async move { rotation::rotate(&fx.job(Some(&crash))).await }
    });
    crash.reached.notified().await;
    task.abort();
    let _ = task.await;

    let mut plan = single.plan.clone();
    plan.login_users
        .push(UserPlan::clone_username(&plan.username));
    let job = RotationJob {
        strategy: AlternatingUsers,
        plan: &plan,
        ..single.job(None)
    };
    assert_eq!(
        rotation::resume_pending(&job).await.unwrap(),
        RotationOutcome::NothingPending
    );
    let (version, current) = single.assert_settled().await;
    assert_eq!((version, &current), (v0.clone(), &cur0));

    let outcome = rotation::rotate(&job).await.unwrap();
    let (version, current) = single.assert_settled().await;
    assert_ne!(
        version,
        rotation::client_request_token(&single.seed, &v0),
        "attempt 0's version holds the single-user value"
    );
    assert_eq!(
        outcome,
        RotationOutcome::Completed {
            version_id: version,
            username: current.username.clone()
        }
    );
    assert_eq!(
        current.username,
        UserPlan::clone_username(&single.plan.username)
    );
    assert!(
        single.logs_in(&cur0).await,
        "the previous user keeps working"
    );
    single.cleanup().await;
}

// ------------------------------------------------------------------ determinism

#[test]
fn client_request_token_is_deterministic() {
    let a = rotation::client_request_token("3f1c-uid", "version-1");
    assert_eq!(a, rotation::client_request_token("3f1c-uid", "version-1"));
    assert!((32..=64).contains(&a.len()));
    assert_ne!(a, rotation::client_request_token("3f1c-uid", "version-2"));
    assert_ne!(a, rotation::client_request_token("other-uid", "version-1"));
}
