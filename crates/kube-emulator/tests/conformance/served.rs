//! Served mode: HTTP on loopback, a kubeconfig that kube::Config and kubectl accept.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{PostParams, WatchEvent, WatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::ObjectMeta;
use kube::{Api, Client, Config, ResourceExt};

use crate::emulator;

#[tokio::test]
async fn served_over_http_with_kubeconfig() {
    let emu = emulator();
    let served = emu.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    assert!(served.url().starts_with("http://127.0.0.1:"));

    let kubeconfig = Kubeconfig::from_yaml(&served.kubeconfig_yaml()).unwrap();
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    assert_eq!(config.default_namespace, "default");
    let client = Client::try_from(config).unwrap();
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    let mut watch = api
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    api.create(
        &PostParams::default(),
        &ConfigMap {
            metadata: ObjectMeta {
                name: Some("over-http".into()),
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .await
    .unwrap();
    match tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
    {
        WatchEvent::Added(o) => assert_eq!(o.name_any(), "over-http"),
        e => panic!("{e:?}"),
    }
    // Shutdown ends open watches.
    served.stop().await;
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(ev) = watch.next().await {
            if ev.is_err() {
                break;
            }
        }
    })
    .await;
    assert!(end.is_ok(), "watch ended on shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_works_against_it() {
    if !std::path::Path::new("/usr/bin/kubectl").exists() {
        panic!("kubectl not installed at /usr/bin/kubectl");
    }
    let emu = emulator();
    let served = emu.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let dir = std::env::temp_dir().join(format!("kube-emulator-kubectl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, served.kubeconfig_yaml()).unwrap();
    Api::<Secret>::default_namespaced(emu.client())
        .create(
            &PostParams::default(),
            &Secret {
                metadata: ObjectMeta {
                    name: Some("s1".into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let manifest = dir.join("widget.yaml");
    std::fs::write(&manifest, "apiVersion: test.kube-emulator.io/v1\nkind: Widget\nmetadata:\n  name: from-kubectl\nspec:\n  owner: ann\n").unwrap();

    let kubectl = |args: &[&str]| {
        let kubeconfig = kubeconfig.clone();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        async move {
            let cmd_args = args.clone();
            // kubectl blocks: run it off the runtime that serves the API.
            let out = tokio::task::spawn_blocking(move || {
                std::process::Command::new("/usr/bin/kubectl")
                    .arg("--kubeconfig")
                    .arg(&kubeconfig)
                    .args(&cmd_args)
                    .env("KUBECACHEDIR", kubeconfig.with_file_name("cache"))
                    .output()
                    .unwrap()
            })
            .await
            .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout).to_string();
            assert!(
                out.status.success(),
                "kubectl {args:?} failed: {}{}",
                stdout,
                String::from_utf8_lossy(&out.stderr)
            );
            stdout
        }
    };
    let out = kubectl(&["get", "secrets"]).await;
    assert!(out.contains("s1") && out.contains("Opaque"), "{out}");
    kubectl(&["apply", "-f", manifest.to_str().unwrap()]).await;
    kubectl(&["apply", "--server-side", "-f", manifest.to_str().unwrap()]).await;
    let out = kubectl(&["get", "wg", "from-kubectl", "-o", "yaml"]).await;
    assert!(
        out.contains("owner: ann") && out.contains("size: 1"),
        "{out}"
    );
    let out = kubectl(&["get", "widgets"]).await;
    assert!(
        out.contains("OWNER") && out.contains("from-kubectl"),
        "{out}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
