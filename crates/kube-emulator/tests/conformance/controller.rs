//! Smoke test: a kube-runtime `Controller` with a finalizer reconciles against the emulator.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::core::ObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{Event, finalizer};
use kube::runtime::watcher;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use crate::{Widget, emulator, wait_until, widget};

const FINALIZER: &str = "test.kube-emulator.io/cleanup";

struct Ctx {
    client: kube::Client,
    cleaned: Mutex<Vec<String>>,
}

#[derive(Debug, thiserror::Error)]
enum Error {
    #[error(transparent)]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Finalizer(#[from] Box<kube::runtime::finalizer::Error<kube::Error>>),
}

async fn reconcile(w: Arc<Widget>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let api: Api<Widget> = Api::namespaced(ctx.client.clone(), &w.namespace().unwrap());
    finalizer(&api, FINALIZER, w, |ev| async {
        match ev {
            Event::Apply(w) => {
                let cms: Api<ConfigMap> =
                    Api::namespaced(ctx.client.clone(), &w.namespace().unwrap());
                let cm = ConfigMap {
                    metadata: ObjectMeta {
                        name: Some(format!("{}-config", w.name_any())),
                        owner_references: Some(vec![w.controller_owner_ref(&()).unwrap()]),
                        ..Default::default()
                    },
                    data: Some(BTreeMap::from([(
                        "owner".to_string(),
                        w.spec.owner.clone(),
                    )])),
                    ..Default::default()
                };
                cms.patch(
                    &cm.name_any(),
                    &PatchParams::apply("widget-ctl").force(),
                    &Patch::Apply(&cm),
                )
                .await?;
                api.patch_status(
                    &w.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": {"ready": true}})),
                )
                .await?;
                Ok(Action::requeue(Duration::from_secs(300)))
            }
            Event::Cleanup(w) => {
                ctx.cleaned.lock().unwrap().push(w.name_any());
                Ok(Action::await_change())
            }
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

fn error_policy(_: Arc<Widget>, e: &Error, _: Arc<Ctx>) -> Action {
    eprintln!("reconcile error: {e:?}");
    Action::requeue(Duration::from_millis(100))
}

#[tokio::test]
async fn controller_with_finalizer_reconciles() {
    let emu = emulator();
    let client = emu.client();
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        cleaned: Mutex::new(vec![]),
    });
    let widgets: Api<Widget> = Api::all(client.clone());
    let cms: Api<ConfigMap> = Api::all(client.clone());
    let ctl = tokio::spawn(
        Controller::new(widgets, watcher::Config::default())
            .owns(cms, watcher::Config::default())
            .run(reconcile, error_policy, ctx.clone())
            .for_each(|_| futures::future::ready(())),
    );

    let api: Api<Widget> = Api::default_namespaced(client.clone());
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    api.create(&PostParams::default(), &widget("w", "ann"))
        .await
        .unwrap();
    wait_until("reconciled", || async {
        let w = api.get("w").await.unwrap();
        w.status.as_ref().is_some_and(|s| s.ready)
            && w.finalizers().contains(&FINALIZER.to_string())
    })
    .await;
    assert_eq!(
        cms.get("w-config").await.unwrap().data.unwrap()["owner"],
        "ann"
    );

    // Deletion runs the cleanup, removes the finalizer, and the owned ConfigMap is collected.
    api.delete("w", &DeleteParams::default()).await.unwrap();
    wait_until("finalized and gone", || async {
        api.get_opt("w").await.unwrap().is_none()
    })
    .await;
    assert_eq!(*ctx.cleaned.lock().unwrap(), ["w"]);
    wait_until("owned ConfigMap collected", || async {
        cms.get_opt("w-config").await.unwrap().is_none()
    })
    .await;
    ctl.abort();
}
