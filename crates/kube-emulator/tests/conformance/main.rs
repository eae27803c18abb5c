//! Conformance tests of the Kubernetes API emulator: behaviour kube-rs, kube-runtime and
//! kubectl rely on, checked through real clients.

mod cel_cost;
mod controller;
mod crud;
mod lifecycle;
mod patch;
mod rbac;
mod served;
mod status;
mod validation;
mod watch;

use std::future::Future;
use std::time::{Duration, Instant};

use kube::{CustomResource, CustomResourceExt, KubeSchema};
use kube_emulator::Emulator;
use serde::{Deserialize, Serialize};

/// A small custom resource with schema constraints, a default, CEL rules (one a transition
/// rule) and a status subresource.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "test.kube-emulator.io",
    version = "v1",
    kind = "Widget",
    plural = "widgets",
    shortname = "wg",
    namespaced,
    status = "WidgetStatus",
    printcolumn = r#"{"name":"Owner","type":"string","jsonPath":".spec.owner"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.size <= 10 || (has(self.tier) && self.tier == 'big')").message("size above 10 needs tier big"))]
#[x_kube(validation = Rule::new("self.owner == oldSelf.owner").message("owner is immutable"))]
pub struct WidgetSpec {
    #[schemars(length(min = 1, max = 20), regex(pattern = r"^[a-z]+$"))]
    pub owner: String,
    #[serde(default = "default_size")]
    #[schemars(range(min = 0, max = 100))]
    pub size: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<Tier>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
}

fn default_size() -> i64 {
    1
}

#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Small,
    Big,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WidgetStatus {
    #[serde(default)]
    pub ready: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

pub fn widget(name: &str, owner: &str) -> Widget {
    Widget::new(
        name,
        WidgetSpec {
            owner: owner.into(),
            size: 1,
            tier: None,
            tags: None,
        },
    )
}

/// An emulator with the Widget CRD installed.
pub fn emulator() -> Emulator {
    let emu = Emulator::new();
    emu.install_crds_yaml(&serde_yaml::to_string(&Widget::crd()).unwrap())
        .unwrap();
    emu
}

/// Polls `check` every 20ms until it returns true; panics after 10s naming `what`.
pub async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The `Status` of a failed call.
pub fn api_err<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> Box<kube::core::Status> {
    match r {
        Err(kube::Error::Api(s)) => s,
        other => panic!("expected an API error, got {other:?}"),
    }
}
