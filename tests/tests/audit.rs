//! The audit trail as a security team relies on it, end to end with real processes: kubectl,
//! the hub (`edgefleet-apiserver dev`, trail in `<data-dir>/audit`), a tunnel and agent, and a
//! second `edgefleet-apiserver dev` as the edge cluster's API server (with a trail of its own);
//! the trail is read from its files and checked with `edgefleet-apiserver audit verify`, as an
//! auditor would.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use edgefleet_e2e::audit::{self, logged_requests, LoggedRequest};
use edgefleet_e2e::edge::EdgeAgent;
use edgefleet_e2e::hub::{eventually, workspace_root, DevConfig, Hub};
use edgefleet_e2e::kubectl::{Kubectl, Lines};
use serde_json::Value;

/// How long a record may take to appear after the request it records ended.
const RECORD_DEADLINE: Duration = Duration::from_secs(30);

fn environment(name: &str) -> String {
    format!("apiVersion: edgefleet.io/v1alpha1\nkind: Environment\nmetadata:\n  name: {name}\n")
}

/// `kubectl -v=8 ARGS`: kubectl logs every request with its status and `Audit-Id`. Returns
/// what it logged; `succeeds` says whether the command must succeed or fail.
fn logged(k: &Kubectl, args: &[&str], stdin: Option<&str>, succeeds: bool) -> Vec<LoggedRequest> {
    let args: Vec<&str> = args.iter().copied().chain(["-v=8"]).collect();
    let out = k.run(&args, stdin.map(str::as_bytes));
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.success(),
        succeeds,
        "kubectl {args:?}: {}",
        log.lines()
            .filter(|l| !l.contains("round_trippers"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let requests = logged_requests(&log);
    assert!(!requests.is_empty(), "kubectl {args:?} logged no request");
    requests
}

/// The hub's events for `users` (their kubectl's requests), grouped by audit ID. The kubectl
/// wrapper's own version probe (`kubectl-dispatcher`) is not something kubectl `-v=8` logs.
fn events_of(dir: &Path, users: &[&str]) -> BTreeMap<String, Vec<Value>> {
    let mut by_id: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for event in audit::events(dir) {
        let user = event["user"]["username"].as_str().unwrap_or_default();
        let agent = event["userAgent"].as_str().unwrap_or_default();
        if users.contains(&user) && !agent.starts_with("kubectl-dispatcher") {
            let id = event["auditID"].as_str().expect("an auditID").to_string();
            by_id.entry(id).or_default().push(event);
        }
    }
    by_id
}

fn stages(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e["stage"].as_str().unwrap_or_default())
        .collect()
}

fn stage<'a>(events: &'a [Value], name: &str) -> &'a Value {
    events
        .iter()
        .find(|e| e["stage"] == name)
        .unwrap_or_else(|| panic!("no {name} in {events:?}"))
}

#[test]
fn every_request_is_recorded_once_per_stage_and_proxied_ones_name_the_edge_cluster() {
    let hub = Hub::dev().expect("hub starts");
    let edge = Hub::dev().expect("the edge cluster's API server starts");
    let _agent = EdgeAgent::start(&hub, "retail", "store-1", &edge.kubeconfig).expect("agent");
    let alice_config = hub
        .user_kubeconfig("audit-alice", &["edgefleet:admins"])
        .unwrap();
    let vera_config = hub
        .user_kubeconfig("audit-vera", &["edgefleet:viewers"])
        .unwrap();
    let alice = Kubectl::new(&alice_config);
    let vera = Kubectl::new(&vera_config);
    let alice_edge = Kubectl::new(
        &hub.cluster_kubeconfig(&alice_config, "retail", "store-1")
            .unwrap(),
    );
    let vera_edge = Kubectl::new(
        &hub.cluster_kubeconfig(&vera_config, "retail", "store-1")
            .unwrap(),
    );

    // On the hub: writes, reads, a watch, and a denial.
    let mut on_hub = Vec::new();
    on_hub.extend(logged(
        &alice,
        &["apply", "-f", "-"],
        Some(&format!(
            "{}---\napiVersion: edgefleet.io/v1alpha1\nkind: Cluster\nmetadata:\n  name: c1\n  namespace: audited\n",
            environment("audited")
        )),
        true,
    ));
    on_hub.extend(logged(
        &alice,
        &["get", "clusters", "-n", "audited"],
        None,
        true,
    ));
    on_hub.extend(logged(
        &alice,
        &["label", "cluster", "c1", "-n", "audited", "tier=gold"],
        None,
        true,
    ));
    on_hub.extend(logged(
        &vera,
        &["delete", "environment", "audited"],
        None,
        false,
    ));

    // A watch: recorded when it starts and when the client goes away.
    let watch_log = hub.dir.path().join("watch.log");
    let mut watch = alice
        .command(&["get", "clusters", "-n", "audited", "--watch", "-v=8"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(File::create(&watch_log).unwrap())
        .spawn()
        .expect("kubectl runs");
    let mut lines = Lines::new(watch.stdout.take().unwrap());
    lines.wait_for(RECORD_DEADLINE, |l| l.starts_with("c1 "));
    let watch_started = |events: &BTreeMap<String, Vec<Value>>| {
        events.values().find_map(|e| {
            let started = e.iter().find(|e| e["stage"] == "ResponseStarted")?;
            started["requestURI"]
                .as_str()?
                .contains("watch=true")
                .then(|| started["auditID"].as_str().unwrap_or_default().to_string())
        })
    };
    let watch_id = eventually(
        RECORD_DEADLINE,
        "the watch to be recorded as started",
        || watch_started(&events_of(&hub.audit_dir(), &["audit-alice"])),
    );
    // The event is written before the response headers go out: wait for kubectl to log them.
    eventually(
        RECORD_DEADLINE,
        "kubectl to log the watch's Audit-Id",
        || {
            std::fs::read_to_string(&watch_log)
                .ok()?
                .contains(&format!("Audit-Id: {watch_id}"))
                .then_some(())
        },
    );
    let _ = watch.kill();
    let _ = watch.wait();
    on_hub.extend(logged_requests(
        &std::fs::read_to_string(&watch_log).unwrap(),
    ));
    eventually(RECORD_DEADLINE, "the ended watch to be recorded", || {
        let events = events_of(&hub.audit_dir(), &["audit-alice"]);
        stages(&events[&watch_id])
            .contains(&"ResponseComplete")
            .then_some(())
    });

    // Through the proxy to the edge cluster: writes, reads, a denial at the hub.
    let mut forwarded = Vec::new();
    forwarded.extend(logged(
        &alice_edge,
        &["apply", "-f", "-"],
        Some(&environment("site-a")),
        true,
    ));
    forwarded.extend(logged(&alice_edge, &["get", "environments"], None, true));
    forwarded.extend(logged(
        &alice_edge,
        &["delete", "environment", "site-a"],
        None,
        true,
    ));
    let denied_at_hub = logged(
        &vera_edge,
        &["delete", "environment", "anything"],
        None,
        false,
    );

    let all: Vec<&LoggedRequest> = on_hub
        .iter()
        .chain(&forwarded)
        .chain(&denied_at_hub)
        .collect();
    let events = events_of(&hub.audit_dir(), &["audit-alice", "audit-vera"]);

    // Exactly once per stage.
    for (id, e) in &events {
        let mut seen = stages(e);
        seen.sort_unstable();
        let expected: &[&str] = if *id == watch_id {
            &["RequestReceived", "ResponseComplete", "ResponseStarted"]
        } else {
            &["RequestReceived", "ResponseComplete"]
        };
        assert_eq!(seen, expected, "stages of {id}: {e:#?}");
    }
    // One-to-one with what kubectl sent: the same audit IDs, URIs and response codes.
    let logged_ids: BTreeSet<&str> = all
        .iter()
        .map(|r| {
            r.audit_id
                .as_deref()
                .unwrap_or_else(|| panic!("no Audit-Id on {r:?}"))
        })
        .collect();
    assert_eq!(
        logged_ids.len(),
        all.len(),
        "audit IDs are unique: {all:#?}"
    );
    assert_eq!(
        events.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        logged_ids,
        "the trail holds exactly the requests kubectl made"
    );
    let mut logged_uris: Vec<&str> = all.iter().map(|r| r.uri.as_str()).collect();
    let mut recorded_uris: Vec<&str> = events
        .values()
        .map(|e| stage(e, "RequestReceived")["requestURI"].as_str().unwrap())
        .collect();
    logged_uris.sort_unstable();
    recorded_uris.sort_unstable();
    assert_eq!(recorded_uris, logged_uris);
    let mut logged_codes: Vec<u64> = all.iter().map(|r| u64::from(r.status)).collect();
    let mut recorded_codes: Vec<u64> = events
        .values()
        .map(|e| {
            stage(e, "ResponseComplete")["responseStatus"]["code"]
                .as_u64()
                .unwrap()
        })
        .collect();
    logged_codes.sort_unstable();
    recorded_codes.sort_unstable();
    assert_eq!(recorded_codes, logged_codes);

    // Who: the caller's identity and address.
    for e in events.values().flatten() {
        let user = &e["user"];
        let group = if user["username"] == "audit-alice" {
            "edgefleet:admins"
        } else {
            "edgefleet:viewers"
        };
        assert!(
            user["groups"]
                .as_array()
                .unwrap()
                .iter()
                .any(|g| g == group),
            "{e}"
        );
        assert_eq!(e["sourceIPs"][0], "127.0.0.1", "{e}");
    }
    // The denial is recorded with kube's decision annotation and the Forbidden status.
    let denial = events
        .values()
        .find(|e| {
            let complete = stage(e, "ResponseComplete");
            complete["user"]["username"] == "audit-vera"
                && complete["objectRef"]["resource"] == "environments"
        })
        .expect("the hub denial is recorded");
    let complete = stage(denial, "ResponseComplete");
    assert_eq!(complete["responseStatus"]["code"], 403, "{complete}");
    assert_eq!(
        complete["annotations"]["authorization.k8s.io/decision"], "forbid",
        "{complete}"
    );

    // Proxied requests name the edge cluster, and the edge object rather than clusters/proxy.
    for r in forwarded.iter().chain(&denied_at_hub) {
        let e = &events[r.audit_id.as_deref().unwrap()];
        let complete = stage(e, "ResponseComplete");
        assert_eq!(
            complete["annotations"]["edgefleet.io/cluster"], "store-1",
            "{complete}"
        );
        assert_eq!(
            complete["annotations"]["edgefleet.io/environment"], "retail",
            "{complete}"
        );
    }
    let delete = events
        .values()
        .map(|e| stage(e, "ResponseComplete"))
        .find(|c| c["verb"] == "delete" && c["user"]["username"] == "audit-alice")
        .expect("the proxied delete is recorded");
    assert_eq!(delete["objectRef"]["resource"], "environments", "{delete}");
    assert_eq!(delete["objectRef"]["name"], "site-a", "{delete}");
    assert_eq!(delete["objectRef"]["apiGroup"], "edgefleet.io", "{delete}");
    assert_eq!(delete["responseStatus"]["code"], 200, "{delete}");
    let vera_delete = stage(
        &events[denied_at_hub
            .iter()
            .find(|r| r.method == "DELETE")
            .and_then(|r| r.audit_id.as_deref())
            .expect("kubectl sent the delete")],
        "ResponseComplete",
    );
    assert_eq!(vera_delete["responseStatus"]["code"], 403, "{vera_delete}");
    assert_eq!(
        vera_delete["objectRef"]["name"], "anything",
        "{vera_delete}"
    );

    // The edge cluster's own trail carries the same audit IDs, with the caller impersonated:
    // an auditor can join the two. A request the hub refused never reached it.
    let edge_events = events_of(&edge.audit_dir(), &["edgefleet-admin"]);
    for r in &forwarded {
        let id = r.audit_id.as_deref().unwrap();
        let e = edge_events
            .get(id)
            .unwrap_or_else(|| panic!("{r:?} is not in the edge cluster's trail"));
        let mut seen = stages(e);
        seen.sort_unstable();
        assert_eq!(seen, ["RequestReceived", "ResponseComplete"], "{e:#?}");
        let complete = stage(e, "ResponseComplete");
        assert_eq!(
            complete["impersonatedUser"]["username"], "audit-alice",
            "{complete}"
        );
    }
    for r in denied_at_hub.iter().filter(|r| r.method == "DELETE") {
        assert!(!edge_events.contains_key(r.audit_id.as_deref().unwrap()));
    }

    let (code, report) = audit::verify(&hub.audit_dir(), &["--public-key", &public_key(&hub)]);
    assert_eq!(code, 0, "{report}");
    assert!(report.contains("INTACT"), "{report}");
}

fn public_key(hub: &Hub) -> String {
    hub.data_dir()
        .join("pki/audit-signing.key.pub")
        .to_string_lossy()
        .into_owned()
}

/// A copy of `trail` whose first segment's lines are rewritten by `edit`.
fn tampered(trail: &Path, into: &Path, edit: impl FnOnce(&mut Vec<String>)) -> PathBuf {
    std::fs::create_dir_all(into).unwrap();
    for segment in audit::segments(trail) {
        std::fs::copy(&segment, into.join(segment.file_name().unwrap())).unwrap();
    }
    let first = audit::segments(into).remove(0);
    let mut lines: Vec<String> = std::fs::read_to_string(&first)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    edit(&mut lines);
    std::fs::write(&first, lines.join("\n") + "\n").unwrap();
    into.to_path_buf()
}

/// `audit verify` fails with exit code 1 and names `record`.
fn assert_detected(dir: &Path, extra: &[&str], public_key: &str, what: &str, record: u64) {
    let args: Vec<&str> = ["--public-key", public_key]
        .into_iter()
        .chain(extra.iter().copied())
        .collect();
    let (code, report) = audit::verify(dir, &args);
    assert_eq!(code, 1, "{what}: {report}");
    let first_bad = report
        .lines()
        .find(|l| l.starts_with("first bad record:"))
        .unwrap_or_else(|| panic!("{what}: no bad record named: {report}"));
    assert!(
        first_bad.contains(&format!("record {record} ")) && first_bad.contains(what),
        "expected record {record} {what}: {report}"
    );
}

#[test]
fn verify_of_a_trail_that_is_not_there_exits_2_as_its_help_promises() {
    let parent = tempfile::tempdir().unwrap();
    let (code, report) = audit::verify(&parent.path().join("missing"), &[]);
    assert_eq!(code, 2, "{report}");
    assert!(report.contains("unreadable"), "{report}");
}

#[test]
fn verify_names_the_record_that_was_modified_removed_inserted_reordered_or_truncated() {
    let mut hub = Hub::dev().expect("hub starts");
    for i in 0..4 {
        hub.ok_stdin(&["apply", "-f", "-"], Some(&environment(&format!("t-{i}"))));
        hub.ok(&["get", "environments"]);
    }
    // An orderly stop signs the head into a last checkpoint, in the trail and in the store.
    hub.terminate();
    let trail = hub.audit_dir();
    let key = public_key(&hub);
    let (code, report) = audit::verify(&trail, &["--public-key", &key]);
    assert_eq!(code, 0, "the untouched trail: {report}");
    let records = audit::records(&trail);
    assert!(records.len() > 12, "{} records", records.len());
    assert!(
        records.last().unwrap().json.get("checkpoint").is_some(),
        "the trail ends with the shutdown checkpoint"
    );
    let work = hub.dir.path().join("tampered");
    // Record 6 (line 6): an event in the middle of the first segment.
    const K: usize = 6;

    let modified = tampered(&trail, &work.join("modified"), |lines| {
        assert!(lines[K - 1].contains("\"username\":\"edgefleet-admin\""));
        lines[K - 1] = lines[K - 1].replace(
            "\"username\":\"edgefleet-admin\"",
            "\"username\":\"someone-else\"",
        );
    });
    assert_detected(&modified, &[], &key, "modified", K as u64);

    let removed = tampered(&trail, &work.join("removed"), |lines| {
        lines.remove(K - 1);
    });
    assert_detected(&removed, &[], &key, "removed", K as u64);

    // A copy of record 3 slipped in after record 6.
    let inserted = tampered(&trail, &work.join("inserted"), |lines| {
        let copy = lines[2].clone();
        lines.insert(K, copy);
    });
    assert_detected(&inserted, &[], &key, "inserted", 3);

    let reordered = tampered(&trail, &work.join("reordered"), |lines| {
        lines.swap(K - 1, K);
    });
    assert_detected(&reordered, &[], &key, "reordered", (K + 1) as u64);

    // The tail cut off, last checkpoint included: the trail alone cannot tell, the checkpoint
    // kept in storage can.
    let last = records.last().unwrap().seq;
    let truncated = tampered(&trail, &work.join("truncated"), |lines| {
        lines.truncate(lines.len() - 3);
    });
    let (code, report) = audit::verify(&truncated, &["--public-key", &key]);
    assert_eq!(code, 0, "a cleanly cut tail verifies alone: {report}");
    let store = hub.data_dir().join("store");
    assert_detected(
        &truncated,
        &["--store", store.to_str().unwrap()],
        &key,
        "truncated",
        last - 2,
    );
    let (code, report) = audit::verify(
        &trail,
        &["--public-key", &key, "--store", store.to_str().unwrap()],
    );
    assert_eq!(code, 0, "the whole trail against its checkpoint: {report}");
}

#[test]
fn a_hub_killed_mid_traffic_leaves_a_trail_that_verifies_and_holds_every_answered_request() {
    let mut hub = Hub::dev().expect("hub starts");
    hub.ok_stdin(&["apply", "-f", "-"], Some(&environment("burst")));
    let mut burst = Command::new("python3")
        .arg(workspace_root().join("tests/python/burst_create.py"))
        .arg(&hub.kubeconfig)
        .args(["burst", "8"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 runs");
    let stdout = burst.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(name) = line.strip_prefix("created ") {
                let _ = tx.send(name.to_string());
            }
        }
    });
    let mut answered = BTreeSet::new();
    while answered.len() < 100 {
        answered.insert(
            rx.recv_timeout(Duration::from_secs(60))
                .expect("creates are answered"),
        );
    }
    hub.kill();
    let _ = burst.wait();
    reader.join().unwrap();
    answered.extend(rx.try_iter());

    let key = public_key(&hub);
    let (code, report) = audit::verify(&hub.audit_dir(), &["--public-key", &key]);
    assert_eq!(code, 0, "the trail of a killed hub: {report}");
    let recorded: BTreeSet<String> = audit::events(&hub.audit_dir())
        .iter()
        .filter(|e| {
            e["stage"] == "ResponseComplete"
                && e["verb"] == "create"
                && e["responseStatus"]["code"] == 201
                && e["objectRef"]["namespace"] == "burst"
        })
        .filter_map(|e| e["objectRef"]["name"].as_str().map(str::to_string))
        .collect();
    let missing: Vec<&String> = answered.difference(&recorded).collect();
    assert!(
        missing.is_empty(),
        "{} of {} answered creates are not in the trail: {missing:?}",
        missing.len(),
        answered.len()
    );

    // The restarted hub continues the same chain; stopped, it verifies against its checkpoint.
    hub.start().expect("the hub restarts on the same data");
    hub.ok(&["get", "clusters", "-n", "burst"]);
    hub.terminate();
    let store = hub.data_dir().join("store");
    let (code, report) = audit::verify(
        &hub.audit_dir(),
        &["--public-key", &key, "--store", store.to_str().unwrap()],
    );
    assert_eq!(code, 0, "after the restart: {report}");
}

#[test]
fn a_trail_that_cannot_be_written_refuses_requests_instead_of_serving_them_unaudited() {
    // Small segments, and the next segment's file name taken by a directory: the first
    // rotation cannot create its file, as with an unwritable directory — which a test running
    // as root could not produce with permissions.
    let mut hub = Hub::dev_with(DevConfig {
        args: &["--audit-segment-max-bytes=65536"],
        ..DevConfig::default()
    })
    .expect("hub starts");
    let obstacle = hub.audit_dir().join("segment-000002.log");
    std::fs::create_dir(&obstacle).unwrap();

    let mut created = Vec::new();
    let mut refused = None;
    for i in 0..200 {
        let name = format!("f-{i}");
        let out = hub
            .kubectl_as(
                &hub.kubeconfig,
                &["apply", "-f", "-"],
                Some(&environment(&name)),
            )
            .unwrap();
        if out.status.success() {
            created.push(name);
        } else {
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(
                stderr.contains("failed to store audit event"),
                "the refusal says why: {stderr}"
            );
            refused = Some(name);
            break;
        }
    }
    let refused = refused.expect("a request was refused once the trail could not be written");
    // From then on every request is refused, reads included, until the hub restarts.
    let read = hub.fails(&["get", "environments"], None);
    assert!(read.contains("failed to store audit event"), "{read}");
    let write = hub.fails(&["apply", "-f", "-"], Some(&environment("after")));
    assert!(write.contains("failed to store audit event"), "{write}");

    hub.kill();
    std::fs::remove_dir(&obstacle).unwrap();
    hub.start()
        .expect("the hub restarts once the trail is writable");
    let stored: BTreeSet<String> = hub
        .ok(&["get", "environments", "-o", "name"])
        .lines()
        .map(|l| {
            l.trim_start_matches("environment.edgefleet.io/")
                .to_string()
        })
        .collect();
    assert!(!stored.contains("after"), "a refused write took effect");
    for name in &created {
        assert!(stored.contains(name), "{name} was created: {stored:?}");
    }
    // The request refused first may have been stored before its ResponseComplete failed; then
    // its RequestReceived (written ahead) is in the trail without an outcome.
    let events = audit::events(&hub.audit_dir());
    let completed: BTreeSet<&str> = events
        .iter()
        .filter(|e| e["stage"] == "ResponseComplete")
        .filter_map(|e| e["auditID"].as_str())
        .collect();
    if stored.contains(&refused) {
        assert!(
            events.iter().any(|e| e["stage"] == "RequestReceived"
                && e["verb"] == "create"
                && !completed.contains(e["auditID"].as_str().unwrap_or_default())),
            "{refused} was stored without a record of the attempt"
        );
    }
    for name in &created {
        assert!(
            events.iter().any(|e| e["stage"] == "ResponseComplete"
                && e["verb"] == "create"
                && e["objectRef"]["name"] == name.as_str()),
            "the create of {name} is recorded"
        );
    }
    let (code, report) = audit::verify(&hub.audit_dir(), &["--public-key", &public_key(&hub)]);
    assert_eq!(code, 0, "{report}");
}
