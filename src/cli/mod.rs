//! `rdscred status` / `rdscred explain` (also `kubectl rdscred …` when the binary is named
//! `kubectl-rdscred`): what the controller did and would do, read from Kubernetes only. The
//! CLI reads RdsCredentials, RdsDatabases, Namespaces (labels, for admission) and Events; it
//! never reads a Secret, so it works under an identity without any secrets access.

pub mod render;
pub mod view;

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

use crate::crd::{RdsCredential, RdsDatabase};
use view::{CredentialView, credential_view};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Namespace (default: the kubeconfig's).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// All namespaces.
    #[arg(short = 'A', long, conflicts_with = "namespace")]
    pub all_namespaces: bool,
    /// One credential: the detailed view.
    pub name: Option<String>,
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: Output,
}

#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
    /// NAMESPACE/NAME of the RdsCredential.
    pub target: String,
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: Output,
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("kubernetes: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0:?} is not NAMESPACE/NAME")]
    BadTarget(String),
    #[error("RdsCredential {0} not found")]
    NotFound(String),
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
}

async fn views(
    client: &Client,
    creds: Vec<RdsCredential>,
) -> Result<Vec<CredentialView>, CliError> {
    let dbs: BTreeMap<String, RdsDatabase> = Api::<RdsDatabase>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .into_iter()
        .map(|d| (d.name_any(), d))
        .collect();
    let namespaces = Api::<Namespace>::all(client.clone());
    let mut labels: BTreeMap<String, Option<BTreeMap<String, String>>> = BTreeMap::new();
    let now = Timestamp::now();
    let mut out = Vec::new();
    for c in &creds {
        let ns = c.namespace().unwrap_or_default();
        if !labels.contains_key(&ns) {
            // Unreadable namespace: admission shows as unknown rather than failing the view.
            let l = namespaces
                .get_opt(&ns)
                .await
                .ok()
                .flatten()
                .map(|n| n.labels().clone());
            labels.insert(ns.clone(), l);
        }
        let db = dbs.get(&c.spec.database_ref.name);
        out.push(credential_view(c, db, labels[&ns].as_ref(), now));
    }
    Ok(out)
}

/// The last Events about one credential, oldest first ("time type reason: note").
async fn events_of(client: &Client, ns: &str, name: &str) -> Vec<String> {
    let Ok(list) = Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
    else {
        return vec!["(events could not be read)".into()];
    };
    let mut evs: Vec<(String, String)> = list
        .into_iter()
        .filter(|e| {
            e.regarding.as_ref().is_some_and(|r| {
                r.kind.as_deref() == Some("RdsCredential") && r.name.as_deref() == Some(name)
            })
        })
        .map(|e| {
            let when = e
                .event_time
                .as_ref()
                .map(|t| t.0.to_string())
                .or_else(|| {
                    e.metadata
                        .creation_timestamp
                        .as_ref()
                        .map(|t| t.0.to_string())
                })
                .unwrap_or_default();
            let line = format!(
                "{when} {} {}: {}",
                e.type_.unwrap_or_default(),
                e.reason.unwrap_or_default(),
                e.note.unwrap_or_default()
            );
            (when, line)
        })
        .collect();
    evs.sort();
    evs.into_iter()
        .rev()
        .take(10)
        .rev()
        .map(|(_, l)| l)
        .collect()
}

pub async fn status(client: Client, args: StatusArgs) -> Result<String, CliError> {
    let default_ns = client.default_namespace().to_owned();
    let ns = args.namespace.unwrap_or(default_ns);
    let api: Api<RdsCredential> = if args.all_namespaces {
        Api::all(client.clone())
    } else {
        Api::namespaced(client.clone(), &ns)
    };
    match args.name {
        None => {
            let mut creds = api.list(&ListParams::default()).await?.items;
            creds.sort_by_key(|c| (c.namespace(), c.name_any()));
            let vs = views(&client, creds).await?;
            Ok(match args.output {
                Output::Table => render::table(&vs),
                Output::Json => serde_json::to_string_pretty(&vs)? + "\n",
            })
        }
        Some(name) => {
            let api = Api::<RdsCredential>::namespaced(client.clone(), &ns);
            let cred = api
                .get_opt(&name)
                .await?
                .ok_or_else(|| CliError::NotFound(format!("{ns}/{name}")))?;
            let v = views(&client, vec![cred]).await?.remove(0);
            let events = events_of(&client, &ns, &name).await;
            Ok(match args.output {
                Output::Table => render::detail(&v, &events),
                Output::Json => {
                    let mut j = serde_json::to_value(&v)?;
                    j["events"] = serde_json::json!(events);
                    serde_json::to_string_pretty(&j)? + "\n"
                }
            })
        }
    }
}

pub async fn explain(client: Client, args: ExplainArgs) -> Result<String, CliError> {
    let (ns, name) = args
        .target
        .split_once('/')
        .filter(|(n, m)| !n.is_empty() && !m.is_empty())
        .ok_or_else(|| CliError::BadTarget(args.target.clone()))?;
    let api = Api::<RdsCredential>::namespaced(client.clone(), ns);
    let cred = api
        .get_opt(name)
        .await?
        .ok_or_else(|| CliError::NotFound(args.target.clone()))?;
    let v = views(&client, vec![cred]).await?.remove(0);
    let lines = render::explain(&v);
    Ok(match args.output {
        Output::Table => lines.join("\n") + "\n",
        Output::Json => {
            serde_json::to_string_pretty(&serde_json::json!({
                "namespace": v.namespace, "name": v.name,
                "admission": v.admission, "rotation": v.rotation, "explain": lines,
            }))? + "\n"
        }
    })
}
