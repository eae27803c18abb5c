//! Watch: resume from a resourceVersion, event types, selector transitions, bookmarks,
//! timeouts, 410 Gone and the kube-runtime watcher's relist.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{
    DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::core::ObjectMeta;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::{emulator, wait_until};

fn cm(name: &str, app: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([("app".to_string(), app.to_string())])),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Next non-bookmark event, with a timeout.
async fn next_event<S>(s: &mut S) -> WatchEvent<ConfigMap>
where
    S: futures::Stream<Item = kube::Result<WatchEvent<ConfigMap>>> + Unpin,
{
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(5), s.next())
            .await
            .expect("watch event in time")
            .expect("stream open")
            .unwrap();
        if !matches!(ev, WatchEvent::Bookmark(_)) {
            return ev;
        }
    }
}

#[tokio::test]
async fn watch_resumes_from_resource_version() {
    let emu = emulator();
    let api: Api<ConfigMap> = Api::default_namespaced(emu.client());
    let pp = PostParams::default();
    let a = api.create(&pp, &cm("a", "x")).await.unwrap();
    let rv_after_a = a.resource_version().unwrap();
    api.create(&pp, &cm("b", "x")).await.unwrap();
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "v"}})),
    )
    .await
    .unwrap();
    api.delete("b", &DeleteParams::default()).await.unwrap();

    // Everything after a's creation is replayed, in order.
    let mut s = api
        .watch(&WatchParams::default(), &rv_after_a)
        .await
        .unwrap()
        .boxed();
    match next_event(&mut s).await {
        WatchEvent::Added(o) => assert_eq!(o.name_any(), "b"),
        e => panic!("{e:?}"),
    }
    match next_event(&mut s).await {
        WatchEvent::Modified(o) => assert_eq!(o.data.unwrap()["k"], "v"),
        e => panic!("{e:?}"),
    }
    match next_event(&mut s).await {
        WatchEvent::Deleted(o) => assert_eq!(o.name_any(), "b"),
        e => panic!("{e:?}"),
    }
    // ... then live events.
    api.create(&pp, &cm("c", "x")).await.unwrap();
    match next_event(&mut s).await {
        WatchEvent::Added(o) => assert_eq!(o.name_any(), "c"),
        e => panic!("{e:?}"),
    }

    // resourceVersion "0": the current state as ADDED events.
    let mut s0 = api
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    let mut names = vec![];
    for _ in 0..2 {
        if let WatchEvent::Added(o) = next_event(&mut s0).await {
            names.push(o.name_any());
        }
    }
    assert_eq!(names, ["a", "c"]);
}

#[tokio::test]
async fn label_selected_watch_sees_objects_enter_and_leave() {
    let emu = emulator();
    let api: Api<ConfigMap> = Api::default_namespaced(emu.client());
    let start = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut s = api
        .watch(&WatchParams::default().labels("app=web"), &start)
        .await
        .unwrap()
        .boxed();
    api.create(&PostParams::default(), &cm("a", "db"))
        .await
        .unwrap();
    let relabel = |app: &str| Patch::Merge(json!({"metadata": {"labels": {"app": app}}}));
    api.patch("a", &PatchParams::default(), &relabel("web"))
        .await
        .unwrap();
    api.patch("a", &PatchParams::default(), &relabel("db"))
        .await
        .unwrap();
    assert!(matches!(next_event(&mut s).await, WatchEvent::Added(_)));
    assert!(matches!(next_event(&mut s).await, WatchEvent::Deleted(_)));
}

#[tokio::test]
async fn bookmarks_and_timeout() {
    let emu = emulator();
    emu.set_bookmark_interval(Duration::from_millis(100));
    let api: Api<ConfigMap> = Api::default_namespaced(emu.client());
    let a = api
        .create(&PostParams::default(), &cm("a", "x"))
        .await
        .unwrap();
    let wp = WatchParams {
        bookmarks: true,
        ..WatchParams::default()
    }
    .timeout(1);
    let events: Vec<_> = tokio::time::timeout(
        Duration::from_secs(5),
        api.watch(&wp, &a.resource_version().unwrap())
            .await
            .unwrap()
            .try_collect::<Vec<_>>(),
    )
    .await
    .expect("watch ends at timeoutSeconds")
    .unwrap();
    let bookmark_rvs: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            WatchEvent::Bookmark(b) => Some(b.metadata.resource_version.clone()),
            _ => None,
        })
        .collect();
    assert!(bookmark_rvs.len() >= 3, "{bookmark_rvs:?}");
    assert_eq!(bookmark_rvs[0], a.resource_version().unwrap());
}

#[tokio::test]
async fn too_old_resource_version_is_410_gone() {
    let emu = emulator();
    let api: Api<ConfigMap> = Api::default_namespaced(emu.client());
    let a = api
        .create(&PostParams::default(), &cm("a", "x"))
        .await
        .unwrap();
    api.create(&PostParams::default(), &cm("b", "x"))
        .await
        .unwrap();
    emu.compact_history();
    let mut s = api
        .watch(&WatchParams::default(), &a.resource_version().unwrap())
        .await
        .unwrap()
        .boxed();
    match next_event(&mut s).await {
        WatchEvent::Error(e) => {
            assert_eq!((e.code, e.reason.as_str()), (410, "Expired"));
        }
        e => panic!("expected 410, got {e:?}"),
    }

    // A bounded history gives 410 for resourceVersions that fell out of it.
    emu.set_history_limit(2);
    let c = api
        .create(&PostParams::default(), &cm("c", "x"))
        .await
        .unwrap();
    for n in ["d", "e", "f"] {
        api.create(&PostParams::default(), &cm(n, "x"))
            .await
            .unwrap();
    }
    let mut s = api
        .watch(&WatchParams::default(), &c.resource_version().unwrap())
        .await
        .unwrap()
        .boxed();
    assert!(matches!(next_event(&mut s).await, WatchEvent::Error(e) if e.code == 410));
}

#[tokio::test]
async fn kube_runtime_watcher_relists_after_410() {
    let emu = emulator();
    let api: Api<ConfigMap> = Api::default_namespaced(emu.client());
    api.create(&PostParams::default(), &cm("a", "x"))
        .await
        .unwrap();

    let inits = Arc::new(Mutex::new(0usize));
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let (i2, s2) = (inits.clone(), seen.clone());
    let task = tokio::spawn(
        watcher(api.clone(), watcher::Config::default()).for_each(move |ev| {
            match ev {
                Ok(watcher::Event::Init) => *i2.lock().unwrap() += 1,
                Ok(watcher::Event::InitApply(o) | watcher::Event::Apply(o)) => {
                    s2.lock().unwrap().push(o.name_any())
                }
                _ => {}
            }
            futures::future::ready(())
        }),
    );
    wait_until("initial list", || async {
        seen.lock().unwrap().contains(&"a".to_string())
    })
    .await;

    // While the watch is cut with 410 and history compacted, a change happens: the watcher
    // must relist (a second Init) and see it.
    emu.compact_history();
    emu.expire_watches();
    api.create(&PostParams::default(), &cm("b", "x"))
        .await
        .unwrap();
    wait_until("relist after 410", || async { *inits.lock().unwrap() >= 2 }).await;
    wait_until("b seen", || async {
        seen.lock().unwrap().contains(&"b".to_string())
    })
    .await;
    task.abort();
}

#[tokio::test]
async fn streaming_list_watcher() {
    let emu = emulator();
    let api: Api<ConfigMap> = Api::default_namespaced(emu.client());
    api.create(&PostParams::default(), &cm("a", "x"))
        .await
        .unwrap();
    let mut s = watcher(api.clone(), watcher::Config::default().streaming_lists()).boxed();
    let mut got = vec![];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), s.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            watcher::Event::InitApply(o) => got.push(o.name_any()),
            watcher::Event::InitDone => break,
            _ => {}
        }
    }
    assert_eq!(got, ["a"]);
    api.create(&PostParams::default(), &cm("b", "x"))
        .await
        .unwrap();
    loop {
        if let watcher::Event::Apply(o) = tokio::time::timeout(Duration::from_secs(5), s.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            assert_eq!(o.name_any(), "b");
            break;
        }
    }
}

/// With a watch delay, live events arrive late (never before `min`), in resourceVersion
/// order, while GET already shows the newest state; without it they arrive at once.
#[tokio::test]
async fn watch_delay_holds_events_back_in_order() {
    let emu = emulator();
    emu.set_watch_delay(Some((
        Duration::from_millis(150),
        Duration::from_millis(300),
    )));
    let api: Api<ConfigMap> = Api::default_namespaced(emu.client());
    let rv = api
        .create(&PostParams::default(), &cm("d0", "x"))
        .await
        .unwrap()
        .resource_version()
        .unwrap();
    let mut stream = api
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    let sent = std::time::Instant::now();
    for i in 1..=5 {
        api.create(&PostParams::default(), &cm(&format!("d{i}"), "x"))
            .await
            .unwrap();
    }
    assert!(api.get_opt("d5").await.unwrap().is_some(), "GET is current");
    let mut names = Vec::new();
    for _ in 1..=5 {
        match next_event(&mut stream).await {
            WatchEvent::Added(c) => names.push(c.name_any()),
            other => panic!("unexpected {other:?}"),
        }
        if names.len() == 1 {
            assert!(
                sent.elapsed() >= Duration::from_millis(150),
                "the first event waited at least the minimum delay: {:?}",
                sent.elapsed()
            );
        }
    }
    assert_eq!(names, ["d1", "d2", "d3", "d4", "d5"], "order kept");
    emu.set_watch_delay(None);
    let before = std::time::Instant::now();
    api.create(&PostParams::default(), &cm("d6", "x"))
        .await
        .unwrap();
    assert!(matches!(next_event(&mut stream).await, WatchEvent::Added(c) if c.name_any() == "d6"));
    assert!(
        before.elapsed() < Duration::from_millis(150),
        "no delay once turned off"
    );
}
