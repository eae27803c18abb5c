//! The `rdscred` binary: `run` (the controller), `crd` (print/write the CRDs), `iam-policy`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use tracing::{error, info};

use rdscred::aws::{ApiCalls, Aws, AwsSettings};
use rdscred::controller::{self, Scope};
use rdscred::iam::{policy_document, IamPolicyInput};
use rdscred::leader::{LeaderElector, LeaseConfig};
use rdscred::reconcile::{Context, Settings};
use rdscred::telemetry::{self, Health, LogFormat, Metrics};

#[derive(Parser)]
#[command(name = "rdscred", version, about = "Database credentials on AWS, owned end to end")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

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
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Written into the ownership tags of every secret (one AWS account may serve several clusters).
    #[arg(long, env = "RDSCRED_CLUSTER_NAME", default_value = "default")]
    cluster_name: String,
    /// Namespaces to watch, comma-separated (empty: all).
    #[arg(long, env = "RDSCRED_WATCH_NAMESPACES", value_delimiter = ',', default_value = "")]
    watch_namespaces: Vec<String>,
    /// Reconciles running at once per kind.
    #[arg(long, env = "RDSCRED_CONCURRENCY", default_value_t = 8)]
    concurrency: u16,
    #[arg(long, env = "RDSCRED_MAX_CONCURRENT_ROTATIONS", default_value_t = 4)]
    max_concurrent_rotations: usize,
    /// Bulk AWSCURRENT change poll interval.
    #[arg(long, env = "RDSCRED_POLL_INTERVAL", default_value = "5m", value_parser = parse_duration)]
    poll_interval: Duration,
    /// Default drift-check interval.
    #[arg(long, env = "RDSCRED_DRIFT_INTERVAL", default_value = "5m", value_parser = parse_duration)]
    drift_interval: Duration,
    /// Minimum time between two rotations of one credential (unless the spec says otherwise).
    #[arg(long, env = "RDSCRED_MIN_ROTATION_INTERVAL", default_value = "1h", value_parser = parse_duration)]
    min_rotation_interval: Duration,
    #[arg(long, env = "RDSCRED_ROLLOUTS_PER_MINUTE", default_value_t = 30)]
    rollouts_per_minute: u32,
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
    /// Run only while holding the leader Lease (for more than one replica).
    #[arg(long, env = "RDSCRED_LEADER_ELECT")]
    leader_elect: bool,
    #[arg(long, env = "POD_NAMESPACE", default_value = "rdscred-system")]
    leader_election_namespace: String,
    #[arg(long, default_value = "rdscred-leader")]
    leader_election_lease: String,
    /// Identity in the Lease and in Events (defaults to the pod name / hostname).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
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
    #[arg(long, default_value = "aws")]
    partition: String,
    #[arg(long)]
    region: Option<String>,
    #[arg(long)]
    account: Option<String>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    s.parse::<kube::core::Duration>().map(Duration::from).map_err(|e| format!("{s:?} is not a duration like 30s, 5m, 1h: {e}"))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd { out_dir: None } => print!("{}", rdscred::crd::crds_yaml()),
        Command::Crd { out_dir: Some(dir) } => {
            for (name, yaml) in rdscred::crd::crd_files() {
                std::fs::write(dir.join(name), yaml).with_context(|| format!("writing {}", dir.display()))?;
            }
        }
        Command::IamPolicy(a) => {
            let input = IamPolicyInput {
                partition: a.partition,
                region: a.region,
                account: a.account,
                secret_prefixes: a.secret_prefixes,
                db_instance_arns: a.db_instance_arns,
                db_cluster_arns: a.db_cluster_arns,
                kms_key_arns: a.kms_key_arns,
                role_arns: a.role_arns,
                admin_secret_arns: a.admin_secret_arns,
                lambda_arns: a.lambda_arns,
            };
            println!("{}", serde_json::to_string_pretty(&policy_document(&input))?);
        }
        Command::Run(args) => {
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            rt.block_on(run(args))?;
        }
    }
    Ok(())
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    telemetry::init_logging(args.log_format, &args.log_level).map_err(|e| anyhow::anyhow!("logging: {e}"))?;
    let identity = args.identity.clone().unwrap_or_else(default_identity);
    info!(cluster = %args.cluster_name, %identity, "starting rdscred");

    let calls = ApiCalls::default();
    let metrics = Metrics::new(calls.clone());
    let health = Health::default();
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let shutdown = move || {
        let mut rx = shutdown_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    tokio::spawn(async move {
        wait_for_signal().await;
        info!("shutdown requested");
        let _ = shutdown_tx.send(true);
    });
    let (http_addr, http_task) = telemetry::serve(args.http_addr, metrics.clone(), health.clone(), shutdown()).await?;
    info!(%http_addr, "serving /metrics /healthz /readyz");

    let client = kube::Client::try_default().await.context("connecting to the Kubernetes API")?;
    let aws = Aws::new(AwsSettings { endpoint_url: args.aws_endpoint_url.clone(), default_region: args.aws_region.clone() }, calls).await;
    let settings = Settings {
        cluster_name: args.cluster_name.clone(),
        poll_interval: args.poll_interval,
        drift_interval: args.drift_interval,
        max_concurrent_rotations: args.max_concurrent_rotations,
        rollouts_per_minute: args.rollouts_per_minute,
        default_min_rotation_interval: args.min_rotation_interval,
        ..Settings::default()
    };
    let ctx = Arc::new(Context::new(client.clone(), aws, metrics.clone(), settings, Some(identity.clone())));
    let scope = Scope { namespaces: args.watch_namespaces.iter().filter(|n| !n.is_empty()).cloned().collect(), concurrency: args.concurrency };

    if args.leader_elect {
        let elector = LeaderElector::new(
            client,
            LeaseConfig {
                namespace: args.leader_election_namespace.clone(),
                name: args.leader_election_lease.clone(),
                identity,
                lease_duration: Duration::from_secs(15),
                renew_period: Duration::from_secs(5),
            },
        );
        let mut leading = elector.subscribe();
        let election = tokio::spawn(elector.run(shutdown()));
        // A standby is healthy and ready: it serves metrics and takes over when needed.
        health.set_ready(true, "standby");
        tokio::select! {
            _ = leading.wait_for(|l| *l) => {}
            _ = shutdown() => { let _ = election.await; let _ = http_task.await; return Ok(()); }
        }
        metrics.set_leader(true);
        info!("leading: starting controllers");
        let lost = {
            let mut leading = leading.clone();
            async move {
                let _ = leading.wait_for(|l| !*l).await;
            }
        };
        let stop = {
            let s = shutdown();
            async move {
                tokio::select! { _ = s => {}, _ = lost => { error!("lost the leader lease: stopping") } }
            }
        };
        controller::run(ctx, scope, stop).await;
        metrics.set_leader(false);
        let lost_lease = !*leading.borrow();
        let _ = election.await;
        let _ = http_task.await;
        if lost_lease {
            // Like client-go's OnStoppedLeading: exit so the pod restarts as a clean standby.
            anyhow::bail!("lost leadership");
        }
    } else {
        health.set_ready(true, "running");
        controller::run(ctx, scope, shutdown()).await;
        let _ = http_task.await;
    }
    info!("stopped");
    Ok(())
}

fn default_identity() -> String {
    std::env::var("HOSTNAME").unwrap_or_else(|_| format!("rdscred-{}", std::process::id()))
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
