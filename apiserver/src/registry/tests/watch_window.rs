//! The watch cache's window over a real store: bounded in bytes, let go after compaction, and
//! a `410 Gone` for a resume from before it.

use super::*;

async fn first_frame(rx: &mut tokio::sync::mpsc::Receiver<Frame>) -> Frame {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a frame in time")
        .expect("open")
}

fn addon(name: &str, bytes: usize) -> Value {
    json!({"apiVersion": "edgefleet.io/v1alpha1", "kind": "ClusterAddon",
           "metadata": {"name": name},
           "spec": {"version": "v1.0.0", "manifests": [{
               "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "blob"},
               "data": {"blob": "x".repeat(bytes)}}]}})
}

#[tokio::test]
async fn large_objects_leave_the_window_by_bytes_and_a_resume_before_it_is_410() {
    const MAX_BYTES: usize = 1024 * 1024;
    let f = fixture_with(RegistryConfig {
        watch_cache: cacher::WindowLimits {
            max_bytes: MAX_BYTES,
            ..Default::default()
        },
    })
    .await;
    f.env("retail").await;
    let addons = f.registry.resource("clusteraddons").unwrap().clone();
    let mut revisions = Vec::new();
    for i in 0..8 {
        let out = addons
            .create(
                &f.registry,
                "retail",
                addon(&format!("a{i}"), 300_000),
                &opts(),
            )
            .await
            .unwrap();
        revisions.push(out.object.mod_revision);
        addons
            .cacher()
            .wait_for(out.object.mod_revision, Duration::from_secs(10))
            .await
            .unwrap();
        let (bytes, events) = addons.cacher().window_usage();
        assert!(bytes <= MAX_BYTES, "{bytes} bytes in {events} events");
    }
    let (_, events) = addons.cacher().window_usage();
    assert!(events < 8, "older events left the window");

    let watch = |start| WatchOptions {
        namespace: "retail".into(),
        filter: Filter::default(),
        start: WatchStart::After(start),
        initial_events: false,
        initial_events_end: false,
        bookmarks: false,
        timeout: Duration::from_secs(60),
    };
    let mut rx = addons.watch(watch(revisions[0])).await.unwrap();
    match first_frame(&mut rx).await {
        Frame::Error(err) => assert_eq!(err.code(), http::StatusCode::GONE, "{err}"),
        other => panic!("expected 410, got {other:?}"),
    }
    let mut rx = addons.watch(watch(revisions[6])).await.unwrap();
    match first_frame(&mut rx).await {
        Frame::Event { kind, object } => {
            assert_eq!((kind, object.name.as_str()), ("ADDED", "a7"));
        }
        other => panic!("expected the last event, got {other:?}"),
    }
}

#[tokio::test]
async fn compaction_lets_go_of_the_events_below_it() {
    let f = fixture().await;
    f.env("retail").await;
    let mut revisions = Vec::new();
    for i in 0..5 {
        revisions.push(rv_of(&f.create("retail", cluster(&format!("c{i}"))).await));
    }
    f.wait_for_cache(revisions[4]).await;
    assert_eq!(f.clusters().cacher().window_usage().1, 5);

    let store = f.registry.storage();
    let compacted = store.current_revision().await.unwrap();
    assert_eq!(compacted, revisions[4]);
    store.compact(compacted).await.unwrap();
    // The next event (or the periodic sweep) lets the compacted ones go: what is left is what
    // storage could still replay (events from the compaction's revision on).
    let next = rv_of(&f.create("retail", cluster("c5")).await);
    f.wait_for_cache(next).await;
    let (bytes, events) = f.clusters().cacher().window_usage();
    assert_eq!(events, 2, "c4 (at the compacted revision) and c5");
    assert!(bytes < 8192, "{bytes}");

    let mut rx = f
        .clusters()
        .watch(watch_opts(WatchStart::After(revisions[3]), ""))
        .await
        .unwrap();
    assert_eq!(next_event(&mut rx).await.1, "c4");
    // As storage would: compacted history cannot be resumed from.
    let mut rx = f
        .clusters()
        .watch(watch_opts(WatchStart::After(revisions[2]), ""))
        .await
        .unwrap();
    match first_frame(&mut rx).await {
        Frame::Error(err) => assert_eq!(err.code(), http::StatusCode::GONE, "{err}"),
        other => panic!("expected 410, got {other:?}"),
    }
}
