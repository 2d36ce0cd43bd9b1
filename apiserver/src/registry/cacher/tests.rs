//! The window's bounds, as a pure function of the events, the clock and storage's compaction.

use std::time::Duration;

use super::*;

fn object(name: &str, revision: Revision, bytes: usize) -> Arc<CachedObject> {
    Arc::new(CachedObject {
        key: format!("edgefleet.io/clusters/retail/{name}"),
        mod_revision: revision,
        name: name.into(),
        namespace: "retail".into(),
        labels: BTreeMap::new(),
        json: Bytes::from(vec![b' '; bytes]),
    })
}

fn event(revision: Revision, bytes: usize, prev: Option<usize>) -> Arc<CachedEvent> {
    Arc::new(CachedEvent {
        kind: if prev.is_some() {
            EventKind::Updated
        } else {
            EventKind::Created
        },
        revision,
        object: object("a", revision, bytes),
        prev: prev.map(|b| object("a", revision - 1, b)),
    })
}

fn revisions(window: &Window) -> Vec<Revision> {
    window.events.iter().map(|h| h.event.revision).collect()
}

const MIB: usize = 1024 * 1024;

fn limits(max_bytes: usize) -> WindowLimits {
    WindowLimits {
        max_events: 100,
        max_bytes,
        max_age: Duration::from_secs(300),
    }
}

#[test]
fn the_window_holds_at_most_its_bytes_oldest_leaving_first() {
    let now = Instant::now();
    let mut window = Window::after(10);
    for revision in 11..=20 {
        // A 1 MiB object updated: it and its previous state count.
        window.push(event(revision, MIB, Some(MIB)), now, 0, &limits(5 * MIB));
        assert!(window.bytes <= 5 * MIB, "{} bytes held", window.bytes);
        assert_eq!(
            window.bytes,
            window.events.iter().map(|h| h.bytes).sum::<usize>()
        );
    }
    assert_eq!(revisions(&window), [19, 20]);
    assert_eq!(window.horizon, 18, "the last one to leave");
    assert!(window.after_position(17).is_none(), "17 → 18 left: 410");
    let resumed = window.after_position(18).unwrap();
    assert_eq!(
        resumed.iter().map(|e| e.revision).collect::<Vec<_>>(),
        [19, 20]
    );
}

#[test]
fn the_newest_event_stays_however_large() {
    let now = Instant::now();
    let mut window = Window::after(0);
    window.push(event(1, 100, None), now, 0, &limits(MIB));
    window.push(event(2, 3 * MIB, None), now, 0, &limits(MIB));
    assert_eq!(revisions(&window), [2]);
    assert_eq!(
        window.after_position(1).unwrap().len(),
        1,
        "a watcher that kept up gets it"
    );
}

#[test]
fn events_leave_when_they_age_and_when_storage_compacted_them() {
    let start = Instant::now();
    let mut window = Window::after(0);
    for revision in 1..=4 {
        let arrived = start + Duration::from_secs(60 * revision as u64);
        window.push(event(revision, 10, None), arrived, 0, &limits(MIB));
    }
    // At minute 7, events older than five minutes (1 and 2 arrived at minutes 1 and 2) go.
    window.expire(start + Duration::from_secs(7 * 60 + 1), 0, &limits(MIB));
    assert_eq!(revisions(&window), [3, 4]);
    // Storage compacted to 4: nothing below it can be served any more, memory goes back.
    window.expire(start + Duration::from_secs(7 * 60 + 1), 4, &limits(MIB));
    assert_eq!(revisions(&window), [4]);
    assert_eq!(window.horizon, 3);
    window.expire(start + Duration::from_secs(3600), 4, &limits(MIB));
    assert!(window.events.is_empty());
    assert_eq!(window.bytes, 0);
    assert_eq!(window.horizon, 4);
    assert_eq!(
        window.after_position(4).unwrap().len(),
        0,
        "a watcher that saw everything is not sent away"
    );
}

#[test]
fn the_event_count_still_bounds_the_window() {
    let now = Instant::now();
    let mut window = Window::after(0);
    let few = WindowLimits {
        max_events: 3,
        ..limits(MIB)
    };
    for revision in 1..=10 {
        window.push(event(revision, 1, None), now, 0, &few);
    }
    assert_eq!(revisions(&window), [8, 9, 10]);
}

#[test]
fn an_object_costs_its_json_and_what_describes_it() {
    let obj = object("edge-1", 1, 1000);
    assert_eq!(
        obj.retained_bytes(),
        1000 + obj.key.len() + "edge-1".len() + "retail".len() + OBJECT_OVERHEAD_BYTES
    );
    let updated = event(2, 1000, Some(500));
    assert_eq!(
        updated.retained_bytes(),
        updated.object.retained_bytes() + updated.prev.as_ref().unwrap().retained_bytes()
    );
}
