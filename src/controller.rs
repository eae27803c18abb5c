//! The runtime: kube-runtime controllers for both kinds (watching owned Secrets, the databases
//! credentials depend on, and the bulk poller's triggers), bounded concurrency, error policy.

use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::controller::{Action, Config as ControllerConfig};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{watcher, Controller};
use kube::ResourceExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tracing::{debug, warn};


use crate::crd::{RdsCredential, RdsDatabase};
use crate::propagation::poller;
use crate::propagation::sync::MANAGED_BY_LABEL;
use crate::reconcile::{self, object_key, Context, Error};

/// Which namespaces the credential controller watches.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    /// Empty: all namespaces.
    pub namespaces: Vec<String>,
    /// Reconciles running at once per kind.
    pub concurrency: u16,
}

/// Runs both controllers and the bulk poller until `shutdown` resolves, then lets in-flight
/// reconciles finish.
pub async fn run(ctx: Arc<Context>, scope: Scope, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let config = ControllerConfig::default().concurrency(scope.concurrency.max(1));

    let databases = Controller::new(Api::<RdsDatabase>::all(ctx.client.clone()), watcher::Config::default().any_semantic())
        .with_config(config.clone())
        .graceful_shutdown_on(stopped())
        .run(reconcile::database::reconcile, error_policy_database, ctx.clone())
        .for_each(|r| async move { log_result("RdsDatabase", r) });

    let namespaces: Vec<Option<String>> =
        if scope.namespaces.is_empty() { vec![None] } else { scope.namespaces.iter().cloned().map(Some).collect() };
    let mut triggers = poller::Triggers::default();
    let mut stores = Vec::new();
    let mut credential_loops = Vec::new();
    for ns in namespaces {
        let (creds, secrets) = match &ns {
            Some(ns) => (Api::<RdsCredential>::namespaced(ctx.client.clone(), ns), Api::<Secret>::namespaced(ctx.client.clone(), ns)),
            None => (Api::<RdsCredential>::all(ctx.client.clone()), Api::<Secret>::all(ctx.client.clone())),
        };
        let controller = Controller::new(creds, watcher::Config::default().any_semantic())
            .with_config(config.clone())
            .owns(secrets, watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}=rdscred")));
        stores.push(controller.store());
        let store = controller.store();
        // A database change (Ready, endpoint, policy) re-evaluates every credential using it.
        let controller = controller.watches(Api::<RdsDatabase>::all(ctx.client.clone()), watcher::Config::default(), move |db| {
            let name = db.name_any();
            store
                .state()
                .into_iter()
                .filter(|c| c.spec.database_ref.name == name)
                .map(|c| ObjectRef::from_obj(c.as_ref()))
                .collect::<Vec<_>>()
        });
        // The bulk poller's triggers for this namespace (or all of them).
        let (tx, rx) = mpsc::unbounded_channel::<ObjectRef<RdsCredential>>();
        triggers.add(ns.clone(), tx);
        credential_loops.push(
            controller
                .reconcile_on(UnboundedReceiverStream::new(rx))
                .graceful_shutdown_on(stopped())
                .run(reconcile::credential::reconcile, error_policy_credential, ctx.clone())
                .for_each(|r| async move { log_result("RdsCredential", r) }),
        );
    }
    let _ = ctx.credentials.set(stores);

    let poller = poller::run(ctx.clone(), triggers, stopped());
    let shutdown = async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    };
    tokio::join!(databases, futures::future::join_all(credential_loops), poller, shutdown);
}

fn log_result<T: std::fmt::Debug, E: std::fmt::Display>(kind: &str, r: Result<T, E>) {
    match r {
        Ok(obj) => debug!(kind, ?obj, "reconciled"),
        Err(e) => debug!(kind, error = %e, "reconcile failed"),
    }
}

fn error_policy_database(db: Arc<RdsDatabase>, err: &Error, ctx: Arc<Context>) -> Action {
    let wait = ctx.backoff_after_failure(object_key(db.as_ref()), err);
    warn!(rdsdatabase = %db.name_any(), reason = err.reason(), retry_in = ?wait, "will retry");
    Action::requeue(wait)
}

fn error_policy_credential(cred: Arc<RdsCredential>, err: &Error, ctx: Arc<Context>) -> Action {
    let wait = ctx.backoff_after_failure(object_key(cred.as_ref()), err);
    warn!(rdscredential = %reconcile::display_name(cred.as_ref()), reason = err.reason(), retry_in = ?wait, "will retry");
    Action::requeue(wait)
}
