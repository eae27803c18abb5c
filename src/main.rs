//! The `rdscred` binary: `run` (the controller), `crd` (print/write the CRDs), `iam-policy`.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use k8s_openapi::api::core::v1::ObjectReference;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use kube::core::Duration as GoDuration;
use rdscred::aws::{ApiCalls, Aws, AwsSettings};
use rdscred::context::{Context, Settings, defaults};
use rdscred::iam::{IamPolicyInput, policy_document, with_events_queues};
use rdscred::leader::{LeaderElector, LeaseConfig};
use rdscred::propagation::rollout::WorkloadKinds;
use rdscred::runtime::controller::{self, Scope, drain};
use rdscred::runtime::events::EventsConfig;
use rdscred::runtime::shards::{self, ShardedConfig};
use rdscred::telemetry::{self, Health, LogFormat, Metrics};

#[derive(Parser)]
#[command(
    name = "rdscred",
    version = rdscred::version(),
    about = "Database credentials on AWS, owned end to end"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start-up: the size of the `run` variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the controller.
    Run(RunArgs),
    /// Print the CRDs as YAML, or write them into a directory.
    Crd {
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
    /// Print the least-privilege IAM policy for the given databases and secret prefixes.
    IamPolicy(IamArgs),
    /// Show credentials: a table, or one in detail (also `kubectl rdscred status`).
    Status(rdscred::cli::StatusArgs),
    /// What the next reconcile of NAMESPACE/NAME would do, and why.
    Explain(rdscred::cli::ExplainArgs),
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Written into the ownership tags of every secret (one AWS account may serve several clusters).
    #[arg(long, env = "RDSCRED_CLUSTER_NAME", default_value = defaults::CLUSTER_NAME)]
    cluster_name: String,
    /// Namespaces to watch, comma-separated (empty: all).
    #[arg(
        long,
        env = "RDSCRED_WATCH_NAMESPACES",
        value_delimiter = ',',
        default_value = ""
    )]
    watch_namespaces: Vec<String>,
    /// Reconciles running at once per kind.
    #[arg(long, env = "RDSCRED_CONCURRENCY", default_value_t = 8)]
    concurrency: u16,
    #[arg(long, env = "RDSCRED_MAX_CONCURRENT_ROTATIONS", default_value_t = defaults::MAX_CONCURRENT_ROTATIONS)]
    max_concurrent_rotations: usize,
    /// Bulk AWSCURRENT change poll interval.
    #[arg(long, env = "RDSCRED_POLL_INTERVAL", default_value_t = defaults::POLL_INTERVAL.into(), value_parser = go_period)]
    poll_interval: GoDuration,
    /// Default drift-check interval.
    #[arg(long, env = "RDSCRED_DRIFT_INTERVAL", default_value_t = defaults::DRIFT_INTERVAL.into(), value_parser = go_period)]
    drift_interval: GoDuration,
    /// Periodic drift checks started per second, all credentials together (their own lane:
    /// new credentials and changes never wait behind them). 0: no rate limit.
    #[arg(long, env = "RDSCRED_DRIFT_CHECKS_PER_SECOND", default_value_t = defaults::DRIFT_CHECKS_PER_SECOND, value_parser = non_negative_rate)]
    drift_checks_per_second: f64,
    /// Periodic drift checks running at once, on top of --concurrency.
    #[arg(long, env = "RDSCRED_DRIFT_CONCURRENCY", default_value_t = defaults::DRIFT_CONCURRENCY)]
    drift_concurrency: usize,
    /// Minimum time between two rotations of one credential (unless the spec says otherwise).
    #[arg(long, env = "RDSCRED_MIN_ROTATION_INTERVAL", default_value_t = defaults::MIN_ROTATION_INTERVAL.into(), value_parser = go_duration)]
    min_rotation_interval: GoDuration,
    /// The IAM role the controller runs as (its IRSA / Pod Identity role). Restricted access
    /// policies exempt it so the controller can never lock itself out; without it (and without
    /// `roleArn` on the RdsDatabase) restricted policies are refused.
    #[arg(long, env = "RDSCRED_CONTROLLER_ROLE_ARN")]
    controller_role_arn: Option<String>,
    #[arg(long, env = "RDSCRED_ROLLOUTS_PER_MINUTE", default_value_t = defaults::ROLLOUTS_PER_MINUTE)]
    rollouts_per_minute: u32,
    /// Roll CronJobs (their job template) and wait for their running Jobs; needs RBAC on
    /// batch cronjobs (get, list, patch) and jobs (get). `--cronjobs=false` never lists them.
    #[arg(long, env = "RDSCRED_CRONJOBS", default_value_t = WorkloadKinds::default().cron_jobs, action = clap::ArgAction::Set)]
    cronjobs: bool,
    /// Roll Argo Rollouts (argoproj.io/v1alpha1, by spec.restartAt); needs their CRD and RBAC
    /// on argoproj.io rollouts (get, list, patch). Off: never listed.
    #[arg(long, env = "RDSCRED_ARGO_ROLLOUTS", default_value_t = WorkloadKinds::default().argo_rollouts, action = clap::ArgAction::Set)]
    argo_rollouts: bool,
    /// CreateSecret requests per second, all credentials together (Secrets Manager's quota is
    /// 50/s per account and region; lower it when other tools share the account). 0: unlimited.
    #[arg(long, env = "RDSCRED_AWS_CREATE_SECRETS_PER_SECOND", default_value_t = defaults::CREATE_SECRETS_PER_SECOND, value_parser = non_negative_rate)]
    aws_create_rate: f64,
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    aws_region: String,
    /// AWS endpoint override (local emulators only).
    #[arg(long, env = "RDSCRED_AWS_ENDPOINT_URL")]
    aws_endpoint_url: Option<String>,
    #[arg(long, env = "RDSCRED_LOG_FORMAT", value_enum, default_value = "json")]
    log_format: LogFormat,
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    log_level: String,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "RDSCRED_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    http_addr: SocketAddr,
    /// After SIGTERM, how long in-flight reconciles may take to finish before they are
    /// cancelled; keep it below the pod's terminationGracePeriodSeconds.
    #[arg(long, env = "RDSCRED_SHUTDOWN_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    shutdown_timeout: Duration,
    /// Split the credentials into this many shards, each guarded by a Lease
    /// `<leader-election-lease>-shard-<k>`: every replica contends for every shard and
    /// reconciles the credentials of the shards it holds (docs/sharding.md). 1: no sharding.
    #[arg(long, env = "RDSCRED_SHARDS", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    shards: u32,
    /// Run only while holding the leader Lease (for more than one replica).
    #[arg(long, env = "RDSCRED_LEADER_ELECT")]
    leader_elect: bool,
    #[arg(long, env = "POD_NAMESPACE", default_value = "rdscred-system")]
    leader_election_namespace: String,
    #[arg(long, default_value = "rdscred-leader")]
    leader_election_lease: String,
    /// How long the Lease stays valid without renewal: a standby takes over this long after
    /// the leader dies (at once when it shuts down gracefully).
    #[arg(long, env = "RDSCRED_LEASE_DURATION", default_value = "15s", value_parser = parse_period, hide_short_help = true)]
    lease_duration: Duration,
    /// How often the leader renews the Lease and standbys try to take it; well below the
    /// lease duration.
    #[arg(long, env = "RDSCRED_LEASE_RENEW_PERIOD", default_value = "5s", value_parser = parse_period, hide_short_help = true)]
    lease_renew_period: Duration,
    /// Identity in the Lease and in Events (defaults to the pod name / hostname).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// SQS queue an EventBridge rule delivers Secrets Manager events to: changes made outside
    /// rdscred then reach the Kubernetes Secret within seconds, and the bulk poll runs only as
    /// a backstop (docs/events.md).
    #[arg(long, env = "RDSCRED_EVENTS_QUEUE_URL")]
    events_queue_url: Option<String>,
    /// Region of the event queue (default: the one in its URL, else --aws-region).
    #[arg(long, env = "RDSCRED_EVENTS_REGION")]
    events_region: Option<String>,
    /// Role to assume for reading the event queue (default: the controller's own credentials).
    #[arg(long, env = "RDSCRED_EVENTS_ROLE_ARN")]
    events_role_arn: Option<String>,
    /// Bulk poll interval while events flow; --poll-interval applies while the queue cannot be read.
    #[arg(long, env = "RDSCRED_EVENTS_BACKSTOP_INTERVAL", default_value = "30m", value_parser = parse_period)]
    events_backstop_interval: Duration,
}

#[derive(Args, Debug)]
struct IamArgs {
    #[arg(long = "secret-prefix")]
    secret_prefixes: Vec<String>,
    #[arg(long = "db-instance-arn")]
    db_instance_arns: Vec<String>,
    #[arg(long = "db-cluster-arn")]
    db_cluster_arns: Vec<String>,
    #[arg(long = "kms-key-arn")]
    kms_key_arns: Vec<String>,
    #[arg(long = "role-arn")]
    role_arns: Vec<String>,
    #[arg(long = "admin-secret-arn")]
    admin_secret_arns: Vec<String>,
    /// Rotation Lambdas (rotator: lambda) the controller configures on secrets.
    #[arg(long = "lambda-arn")]
    lambda_arns: Vec<String>,
    /// Event queues (`run --events-queue-url`) as URLs, ARNs or names: adds the SQS statement.
    #[arg(long = "events-queue")]
    events_queues: Vec<String>,
    #[arg(long, default_value = "aws")]
    partition: String,
    /// Regions of the secrets and databases (repeatable; absent: any region).
    #[arg(long = "region")]
    regions: Vec<String>,
    #[arg(long)]
    account: Option<String>,
}

/// A Go duration (`30s`, `5m`, `1h30m`). Go allows a sign, and `kube::core::Duration` drops
/// it on conversion (`-5m` would become 5 minutes): a negative duration is refused.
fn go_duration(s: &str) -> Result<GoDuration, String> {
    let parsed = s
        .parse::<GoDuration>()
        .map_err(|e| format!("{s:?} is not a duration like 30s, 5m, 1h: {e}"))?;
    if parsed.is_negative() {
        return Err(format!("{s:?}: a duration cannot be negative"));
    }
    Ok(parsed)
}

/// A rate in requests per second: a finite number ≥ 0 (`NaN`, `inf` and negative numbers are
/// refused, not read as "unlimited").
fn non_negative_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r >= 0.0 => Ok(r),
        _ => Err(format!(
            "{s:?} is not a rate like 50 or 2.5 (requests per second, 0: unlimited)"
        )),
    }
}

/// Runs a read-only CLI command (`status`, `explain`) with the standard kubeconfig /
/// in-cluster client. As `kubectl-rdscred` (a symlink), kubectl passes the same arguments.
fn cli_main<F, Fut>(f: F) -> anyhow::Result<()>
where
    F: FnOnce(kube::Client) -> Fut,
    Fut: Future<Output = Result<String, rdscred::cli::CliError>>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let out = rt.block_on(async {
        let client = kube::Client::try_default().await?;
        anyhow::Ok(f(client).await?)
    });
    match out {
        Ok(out) => {
            print!("{out}");
            Ok(())
        }
        // A person reads this: the error chain on one line, no backtrace (returning the error
        // from main would print its Debug form, with a backtrace under RUST_BACKTRACE).
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1)
        }
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    go_duration(s).map(Duration::from)
}

/// The period of a loop (poll, drift check, lease renewal): a Go duration above zero. A zero
/// period would spin the loop, one AWS or API call after another, with no pause.
fn go_period(s: &str) -> Result<GoDuration, String> {
    let parsed = go_duration(s)?;
    if Duration::from(parsed).is_zero() {
        return Err(format!("{s:?}: a period must be longer than zero"));
    }
    Ok(parsed)
}

fn parse_period(s: &str) -> Result<Duration, String> {
    go_period(s).map(Duration::from)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Status(a) => return cli_main(|c| rdscred::cli::status(c, a)),
        Command::Explain(a) => return cli_main(|c| rdscred::cli::explain(c, a)),
        Command::Crd { out_dir: None } => print!("{}", rdscred::crd::crds_yaml()),
        Command::Crd { out_dir: Some(dir) } => {
            for (name, yaml) in rdscred::crd::crd_files() {
                std::fs::write(dir.join(name), yaml)
                    .with_context(|| format!("writing {}", dir.display()))?;
            }
        }
        Command::IamPolicy(a) => {
            let input = IamPolicyInput {
                partition: a.partition,
                regions: a.regions,
                account: a.account,
                secret_prefixes: a.secret_prefixes,
                db_instance_arns: a.db_instance_arns,
                db_cluster_arns: a.db_cluster_arns,
                kms_key_arns: a.kms_key_arns,
                role_arns: a.role_arns,
                admin_secret_arns: a.admin_secret_arns,
                lambda_arns: a.lambda_arns,
            };
            let doc = with_events_queues(policy_document(&input), &input, &a.events_queues);
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
        Command::Run(args) => {
            // Logging first: every later failure is a log line in the chosen format.
            telemetry::init_logging(args.log_format, &args.log_level)
                .map_err(|e| anyhow::anyhow!("logging: {e}"))?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let result = rt.block_on(run(args));
            // Do not wait for stray blocking tasks (a DNS lookup, a log write) on the way out.
            rt.shutdown_timeout(Duration::from_secs(1));
            if let Err(e) = result {
                error!(error = format!("{e:#}"), "exiting");
                std::process::exit(1);
            }
        }
    }
    Ok(())
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let identity = args.identity.clone().unwrap_or_else(default_identity);
    info!(cluster = %args.cluster_name, %identity, version = rdscred::version(), "starting rdscred");

    let calls = ApiCalls::default();
    let metrics = Metrics::new(calls.clone());
    let health = Health::default();
    // SIGTERM/SIGINT: not ready at once (the Service and rollouts stop counting on this
    // replica), then the controllers drain, then the lease is released, then HTTP stops.
    let shutdown = CancellationToken::new();
    {
        let signal = shutdown_signal().context("installing signal handlers")?;
        let (shutdown, health) = (shutdown.clone(), health.clone());
        tokio::spawn(async move {
            signal.await;
            info!("shutdown requested");
            health.set_ready(false, "shutting down");
            shutdown.cancel();
        });
    }
    let http_stop = CancellationToken::new();
    let (_, http_task) = telemetry::serve(
        args.http_addr,
        metrics.clone(),
        health.clone(),
        http_stop.clone().cancelled_owned(),
    )
    .await?;

    let result = run_controller(&args, identity, metrics, health.clone(), calls, &shutdown).await;
    health.set_ready(false, "shutting down");
    http_stop.cancel();
    // Graceful for in-flight scrapes, but a stuck client must not hold up the exit.
    let _ = tokio::time::timeout(Duration::from_secs(5), http_task).await;
    if result.is_ok() {
        info!("stopped");
    }
    result
}

/// Runs the controllers until `shutdown` (with `--leader-elect`: while holding the lease).
async fn run_controller(
    args: &RunArgs,
    identity: String,
    metrics: Metrics,
    health: Health,
    calls: ApiCalls,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let elects = args.leader_elect || args.shards > 1;
    anyhow::ensure!(
        !elects || args.lease_renew_period < args.lease_duration,
        "--lease-renew-period ({:?}) must be shorter than --lease-duration ({:?})",
        args.lease_renew_period,
        args.lease_duration
    );
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API")?;
    let aws = Aws::new(
        AwsSettings {
            endpoint_url: args.aws_endpoint_url.clone(),
            default_region: args.aws_region.clone(),
        },
        calls,
    )
    .await;
    let events = args
        .events_queue_url
        .clone()
        .filter(|u| !u.is_empty())
        .map(|queue_url| EventsConfig {
            queue_url,
            region: args.events_region.clone(),
            role_arn: args.events_role_arn.clone(),
            fallback_poll_interval: args.poll_interval.into(),
            retry_max: Duration::from_secs(30),
            report_to: args.identity.as_ref().map(|pod| ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(pod.clone()),
                namespace: Some(args.leader_election_namespace.clone()),
                ..ObjectReference::default()
            }),
        });
    // Each shard's consumer would delete the messages about the other shards' secrets.
    anyhow::ensure!(
        args.shards <= 1 || events.is_none(),
        "--events-queue-url cannot be combined with --shards > 1 yet (docs/sharding.md)"
    );
    let settings = settings_from(args, events);
    let scope = Scope {
        namespaces: args
            .watch_namespaces
            .iter()
            .filter(|n| !n.is_empty())
            .cloned()
            .collect(),
        concurrency: args.concurrency,
        shard: None,
    };
    let lease = LeaseConfig {
        namespace: args.leader_election_namespace.clone(),
        name: args.leader_election_lease.clone(),
        identity: identity.clone(),
        lease_duration: args.lease_duration,
        renew_period: args.lease_renew_period,
    };
    if args.shards > 1 {
        // A contending replica serves metrics and takes over shards when needed.
        health.set_ready(true, "sharded");
        let new_context = || {
            Arc::new(Context::new(
                client.clone(),
                aws.clone(),
                metrics.clone(),
                settings.clone(),
                Some(identity.clone()),
            ))
        };
        let cfg = ShardedConfig {
            shards: args.shards,
            lease,
            shutdown_timeout: args.shutdown_timeout,
        };
        shards::run(
            client.clone(),
            cfg,
            scope,
            metrics.clone(),
            new_context,
            shutdown.clone(),
        )
        .await;
        return Ok(());
    }
    let ctx = Arc::new(Context::new(
        client.clone(),
        aws,
        metrics.clone(),
        settings,
        Some(identity.clone()),
    ));
    // Ready once the caches hold their initial lists, unless already shutting down.
    let ready_when_synced = |reason: &'static str| {
        let (health, shutdown) = (health.clone(), shutdown.clone());
        move || {
            if !shutdown.is_cancelled() {
                health.set_ready(true, reason);
            }
        }
    };

    if !args.leader_elect {
        metrics.set_leader(true);
        let controllers = controller::run_with_readiness(
            ctx,
            scope,
            shutdown.clone().cancelled_owned(),
            ready_when_synced("running"),
        );
        drain(controllers, shutdown, args.shutdown_timeout).await;
        metrics.set_leader(false);
        return Ok(());
    }

    let elector = LeaderElector::new(client, lease);
    let mut leading = elector.subscribe();
    // The elector stops (and releases the lease) only after the controllers have stopped:
    // releasing first would let a standby act while our in-flight reconciles finish.
    let elector_stop = CancellationToken::new();
    let election = tokio::spawn(elector.run(elector_stop.clone().cancelled_owned()));
    let stop_election = || async {
        elector_stop.cancel();
        let _ = election.await;
    };

    // A standby is healthy and ready: it serves metrics and takes over when needed.
    health.set_ready(true, "standby");
    let became_leader = tokio::select! {
        result = leading.wait_for(|l| *l) => result.is_ok(),
        () = shutdown.clone().cancelled_owned() => {
            stop_election().await;
            return Ok(());
        }
    };
    if !became_leader {
        stop_election().await;
        anyhow::bail!("leader election stopped");
    }

    metrics.set_leader(true);
    info!("leading: starting controllers");
    let controllers = controller::run_with_readiness(
        ctx,
        scope,
        shutdown.clone().cancelled_owned(),
        ready_when_synced("leader"),
    );
    let lost = async {
        let _ = leading.wait_for(|l| !*l).await;
    };
    // Losing the lease drops the controllers at once, in-flight reconciles included (they
    // are written to survive a crash): by the renew deadline a standby may take over, and
    // two instances must never act on one credential.
    let lost_lease = tokio::select! {
        () = drain(controllers, shutdown, args.shutdown_timeout) => false,
        () = lost => true,
    };
    metrics.set_leader(false);
    stop_election().await;
    if lost_lease {
        // Like client-go's OnStoppedLeading: exit so the pod restarts as a clean standby.
        anyhow::bail!("lost the leader lease");
    }
    Ok(())
}

/// The controller's settings from the `run` flags (and the event queue they configure).
fn settings_from(args: &RunArgs, events: Option<EventsConfig>) -> Settings {
    Settings {
        cluster_name: args.cluster_name.clone(),
        // With events the bulk poll is a backstop; --poll-interval applies while the queue is lost.
        poll_interval: if events.is_some() {
            args.events_backstop_interval
        } else {
            args.poll_interval.into()
        },
        events,
        drift_interval: args.drift_interval.into(),
        drift_checks_per_second: args.drift_checks_per_second,
        drift_concurrency: args.drift_concurrency,
        max_concurrent_rotations: args.max_concurrent_rotations,
        rollouts_per_minute: args.rollouts_per_minute,
        workload_kinds: WorkloadKinds {
            cron_jobs: args.cronjobs,
            argo_rollouts: args.argo_rollouts,
        },
        create_secrets_per_second: args.aws_create_rate,
        default_min_rotation_interval: args.min_rotation_interval.into(),
        controller_role_arn: args.controller_role_arn.clone().filter(|r| !r.is_empty()),
        ..Settings::default()
    }
}

fn default_identity() -> String {
    std::env::var("HOSTNAME").unwrap_or_else(|_| format!("rdscred-{}", std::process::id()))
}

/// SIGTERM or SIGINT. The handlers are installed before this returns, so a signal sent
/// right after start-up is not lost to the default action (immediate exit).
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (mut term, mut int) = (
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
        );
        Ok(async move {
            tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        })
    }
    #[cfg(not(unix))]
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `rdscred run` without flags runs with exactly `Settings::default()`: the flags take
    /// their defaults from `rdscred::context::defaults`, and nothing in between changes them.
    #[test]
    fn flag_defaults_are_the_settings_defaults() {
        let Cli {
            command: Command::Run(args),
        } = Cli::try_parse_from(["rdscred", "run"]).unwrap()
        else {
            panic!("run parses as Run");
        };
        assert_eq!(
            format!("{:?}", settings_from(&args, None)),
            format!("{:?}", Settings::default())
        );
    }

    /// The optional workload kinds: flags and `=false`; an almost-valid value is refused.
    #[test]
    fn workload_kind_flags() {
        let kinds = |flags: &[&str]| {
            let mut argv = vec!["rdscred", "run"];
            argv.extend(flags);
            Cli::try_parse_from(argv).map(|c| match c.command {
                Command::Run(args) => settings_from(&args, None).workload_kinds,
                _ => panic!("run parses as Run"),
            })
        };
        let on = |cron_jobs, argo_rollouts| WorkloadKinds {
            cron_jobs,
            argo_rollouts,
        };
        assert_eq!(kinds(&[]).unwrap(), on(true, false));
        assert_eq!(kinds(&["--argo-rollouts=true"]).unwrap(), on(true, true));
        assert_eq!(kinds(&["--cronjobs=false"]).unwrap(), on(false, false));
        assert!(kinds(&["--argo-rollouts=yes"]).is_err());
        assert!(kinds(&["--cronjobs"]).is_err(), "a value is required");
    }

    /// Almost-valid durations are refused, not read as something else: Go's sign would be
    /// dropped (`-5m` as 5 minutes), and a bare number has no unit.
    #[test]
    fn almost_valid_durations_are_refused() {
        for flag in [
            "--poll-interval=-5m",
            "--drift-interval=-1s",
            "--min-rotation-interval=-1h",
            "--shutdown-timeout=-20s",
            "--lease-duration=-15s",
            "--poll-interval=300",
            "--poll-interval=5 m",
            // A zero period spins its loop.
            "--poll-interval=0s",
            "--drift-interval=0",
            "--lease-duration=0s",
            "--lease-renew-period=0ms",
            "--events-backstop-interval=0m",
            "--shards=0",
            "--shards=-1",
            "--shards=two",
            "--aws-create-rate=-1",
            "--aws-create-rate=NaN",
            "--aws-create-rate=inf",
            "--aws-create-rate=50/s",
        ] {
            assert!(
                Cli::try_parse_from(["rdscred", "run", flag]).is_err(),
                "{flag} accepted"
            );
        }
        let Cli {
            command: Command::Run(args),
        } = Cli::try_parse_from([
            "rdscred",
            "run",
            "--poll-interval=1m30s",
            "--shutdown-timeout=+5s",
        ])
        .unwrap()
        else {
            panic!("run parses as Run");
        };
        assert_eq!(Duration::from(args.poll_interval), Duration::from_secs(90));
        assert_eq!(args.shutdown_timeout, Duration::from_secs(5));
    }
}
