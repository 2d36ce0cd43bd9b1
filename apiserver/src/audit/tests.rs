//! The audit trail end to end, on real files in temporary directories.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use edgefleet_apimachinery::request_info;
use http::{HeaderMap, Method};
use serde_json::{json, Value};

use edgefleet_testkit::eventually;

use super::canonical;
use super::segment::{encode_record, parse_record, PayloadKind};
use super::*;
use crate::auth::UserInfo;
use crate::http::layers::audit as layer;
use crate::storage::embedded::EmbeddedStore;
use crate::storage::DynStorage;

/// Tests take checkpoints themselves unless they test the interval.
const NEVER: Duration = Duration::from_secs(3600);

fn key() -> SigningKey {
    SigningKey::generate().unwrap().0
}

fn config(dir: &Path, key: SigningKey) -> AuditConfig {
    let mut config = AuditConfig::new(dir, "hub-0", key);
    config.checkpoint_interval = NEVER;
    config
}

fn alice() -> UserInfo {
    UserInfo::new("alice")
        .with_uid("u-1")
        .with_groups(["dev", "system:authenticated"])
}

/// Attributes of a request to the hub, proxied or not, as the pipeline would build them.
fn attrs(method: Method, uri: &str) -> RequestAttributes {
    let (path, query) = match uri.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (uri, None),
    };
    let info = request_info::parse(&method, path, query);
    if info.subresource == "proxy" {
        layer::proxied_attributes(&info, &method, query, alice(), uri.to_string())
    } else {
        layer::hub_attributes(&info, alice(), uri.to_string())
    }
}

const CLUSTERS: &str = "/apis/edgefleet.io/v1alpha1/namespaces/retail/clusters";
const PROXY: &str = "/apis/edgefleet.io/v1alpha1/namespaces/retail/clusters/edge-1/proxy";

/// One complete GET (two Metadata events); returns its audit ID.
async fn get(auditor: &Auditor, uri: &str) -> String {
    let request = auditor.begin(attrs(Method::GET, uri)).await.unwrap();
    let id = request.audit_id().to_string();
    request
        .complete(ResponseStatus::code(200), None)
        .await
        .unwrap();
    id
}

/// Every record of the trail in order, as JSON.
fn records(dir: &Path) -> Vec<Value> {
    let mut out = Vec::new();
    for (_, path) in segment::list_segments(dir).unwrap() {
        let text = std::fs::read_to_string(path).unwrap();
        out.extend(
            text.lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap()),
        );
    }
    out
}

fn events(dir: &Path) -> Vec<Event> {
    records(dir)
        .into_iter()
        .filter_map(|r| r.get("event").cloned())
        .map(|e| serde_json::from_value(e).unwrap())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Events

/// An event as kube-apiserver's log backend writes it (field order of the Go types).
const KUBE_EVENT: &str = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"RequestResponse","auditID":"8d6d8c2b-1b7e-4c1f-9a16-0f4d8c7f2c11","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/default/pods/web-1?fieldManager=kubectl","verb":"patch","user":{"username":"alice","uid":"u-1","groups":["dev","system:authenticated"],"extra":{"authentication.kubernetes.io/credential-id":["X509SHA256=ab12"]}},"impersonatedUser":{"username":"bob","groups":["ops"]},"sourceIPs":["10.0.0.7","127.0.0.1"],"userAgent":"kubectl/v1.34.0 (linux/amd64) kubernetes/abcdef0","objectRef":{"resource":"pods","namespace":"default","name":"web-1","apiVersion":"v1"},"responseStatus":{"metadata":{},"status":"Failure","message":"pods \"web-1\" not found","reason":"NotFound","details":{"name":"web-1","kind":"pods"},"code":404},"requestObject":{"metadata":{"labels":{"tier":"web"}}},"responseObject":{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"pods \"web-1\" not found","reason":"NotFound","details":{"name":"web-1","kind":"pods"},"code":404},"requestReceivedTimestamp":"2024-06-01T12:00:00.123456Z","stageTimestamp":"2024-06-01T12:00:00.200001Z","annotations":{"authorization.k8s.io/decision":"allow","authorization.k8s.io/reason":"RBAC: allowed by ClusterRoleBinding \"admins\" of ClusterRole \"cluster-admin\" to User \"alice\""}}"#;

/// The smallest events kube writes: a request received, and a success.
const KUBE_RECEIVED: &str = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"4f3c0e5e-29c6-4a3e-8d2c-0a6f0c7d1e2f","stage":"RequestReceived","requestURI":"/apis/edgefleet.io/v1alpha1/namespaces/retail/clusters?limit=500","verb":"list","user":{"username":"alice","groups":["system:authenticated"]},"sourceIPs":["127.0.0.1"],"userAgent":"kubectl/v1.34.0","objectRef":{"resource":"clusters","namespace":"retail","apiGroup":"edgefleet.io","apiVersion":"v1alpha1"},"requestReceivedTimestamp":"2024-06-01T12:00:00.000000Z","stageTimestamp":"2024-06-01T12:00:00.000000Z"}"#;
const KUBE_COMPLETE: &str = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"4f3c0e5e-29c6-4a3e-8d2c-0a6f0c7d1e2f","stage":"ResponseComplete","requestURI":"/healthz","verb":"get","user":{},"responseStatus":{"metadata":{},"code":200},"requestReceivedTimestamp":"2024-06-01T12:00:00.000000Z","stageTimestamp":"2024-06-01T12:00:00.010000Z"}"#;

#[test]
fn events_serialize_exactly_like_kube() {
    let ts = |s: &str| event::MicroTime(s.parse().unwrap());
    let mut e = Event::new(
        Level::RequestResponse,
        "8d6d8c2b-1b7e-4c1f-9a16-0f4d8c7f2c11",
        Stage::ResponseComplete,
        // Nanoseconds are cut to microseconds, as Go's MicroTime prints them.
        ts("2024-06-01T12:00:00.123456789Z"),
    );
    e.request_uri = "/api/v1/namespaces/default/pods/web-1?fieldManager=kubectl".into();
    e.verb = "patch".into();
    e.user = event::EventUser::from(
        &alice().with_extra(crate::auth::CREDENTIAL_ID_KEY, ["X509SHA256=ab12"]),
    );
    e.impersonated_user = Some(event::EventUser::from(
        &UserInfo::new("bob").with_groups(["ops"]),
    ));
    e.source_ips = vec!["10.0.0.7".into(), "127.0.0.1".into()];
    e.user_agent = "kubectl/v1.34.0 (linux/amd64) kubernetes/abcdef0".into();
    e.object_ref = edge::object_ref(&request_info::parse(
        &Method::PATCH,
        "/api/v1/namespaces/default/pods/web-1",
        None,
    ));
    let status: k8s_openapi::apimachinery::pkg::apis::meta::v1::Status =
        serde_json::from_value(json!({
            "status": "Failure", "message": "pods \"web-1\" not found", "reason": "NotFound",
            "details": {"name": "web-1", "kind": "pods"}, "code": 404,
        }))
        .unwrap();
    e.response_status = Some(ResponseStatus::from_status(&status, 404));
    e.request_object = Some(json!({"metadata": {"labels": {"tier": "web"}}}));
    e.response_object = Some(
        json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"pods \"web-1\" not found","reason":"NotFound","details":{"name":"web-1","kind":"pods"},"code":404}),
    );
    e.stage_timestamp = ts("2024-06-01T12:00:00.200001Z");
    e.annotations
        .insert("authorization.k8s.io/decision".into(), "allow".into());
    e.annotations.insert(
        "authorization.k8s.io/reason".into(),
        "RBAC: allowed by ClusterRoleBinding \"admins\" of ClusterRole \"cluster-admin\" to User \"alice\"".into(),
    );
    assert_eq!(serde_json::to_string(&e).unwrap(), KUBE_EVENT);

    for kube in [KUBE_EVENT, KUBE_RECEIVED, KUBE_COMPLETE] {
        let parsed: Event = serde_json::from_str(kube).unwrap();
        assert_eq!(serde_json::to_string(&parsed).unwrap(), kube);
    }
    let mut received = Event::new(
        Level::Metadata,
        "4f3c0e5e-29c6-4a3e-8d2c-0a6f0c7d1e2f",
        Stage::ResponseComplete,
        ts("2024-06-01T12:00:00Z"),
    );
    received.request_uri = "/healthz".into();
    received.verb = "get".into();
    received.response_status = Some(ResponseStatus::code(200));
    received.stage_timestamp = ts("2024-06-01T12:00:00.01Z");
    assert_eq!(serde_json::to_string(&received).unwrap(), KUBE_COMPLETE);

    // The trail stores the same event as canonical JSON: same members, sorted.
    let stored = canonical::to_vec_of(&e).unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&stored).unwrap(),
        serde_json::from_str::<Value>(KUBE_EVENT).unwrap()
    );
}

// ---------------------------------------------------------------------------------------------
// Requests through the auditor

#[tokio::test]
async fn a_hub_write_yields_kube_events_with_its_body() {
    let tmp = tempfile::tempdir().unwrap();
    let auditor = Auditor::open(config(tmp.path(), key())).await.unwrap();

    let mut headers = HeaderMap::new();
    headers.insert(AUDIT_ID_HEADER, "from-kube-apiserver-1".parse().unwrap());
    headers.insert("x-forwarded-for", "10.1.2.3".parse().unwrap());
    headers.insert(http::header::USER_AGENT, "kubectl/v1.34.0".parse().unwrap());
    let attrs = layer::with_headers(
        attrs(Method::POST, &format!("{CLUSTERS}?fieldManager=kubectl")),
        &headers,
        "127.0.0.1".parse().ok(),
    );
    let mut request = auditor.begin(attrs).await.unwrap();
    assert_eq!(request.audit_id(), "from-kube-apiserver-1");
    assert_eq!(request.level(), Level::Request);
    assert!(request.wants_request_body() && !request.wants_response_body());
    request.set_impersonated_user(&UserInfo::new("bob"));
    request.annotate("authorization.k8s.io/decision", "allow");
    let body = json!({"apiVersion": "edgefleet.io/v1alpha1", "kind": "Cluster",
        "metadata": {"name": "edge-1", "managedFields": [{"manager": "kubectl"}]}});
    request.set_request_body(&serde_json::to_vec(&body).unwrap());
    request
        .complete(ResponseStatus::code(201), Some(b"{\"kind\":\"Cluster\"}"))
        .await
        .unwrap();

    let events = events(tmp.path());
    assert_eq!(events.len(), 2);
    let (received, complete) = (&events[0], &events[1]);
    assert_eq!(
        (received.stage, complete.stage),
        (Stage::RequestReceived, Stage::ResponseComplete)
    );
    assert_eq!(received.audit_id, complete.audit_id);
    assert_eq!(received.verb, "create");
    assert_eq!(
        received.request_uri,
        format!("{CLUSTERS}?fieldManager=kubectl")
    );
    assert_eq!(received.user.username, "alice");
    assert_eq!(received.source_ips, ["10.1.2.3", "127.0.0.1"]);
    assert_eq!(received.user_agent, "kubectl/v1.34.0");
    let object = received.object_ref.as_ref().unwrap();
    assert_eq!(
        (
            object.api_group.as_str(),
            object.resource.as_str(),
            object.namespace.as_str()
        ),
        ("edgefleet.io", "clusters", "retail")
    );
    // The body is known only after RequestReceived, as in kube; managedFields are left out.
    assert_eq!(received.request_object, None);
    assert_eq!(object.name, "", "a create's URL names no object");
    assert_eq!(
        complete.object_ref.as_ref().unwrap().name,
        "edge-1",
        "the created object's name comes from the body"
    );
    assert_eq!(
        complete.request_object,
        Some(
            json!({"apiVersion": "edgefleet.io/v1alpha1", "kind": "Cluster", "metadata": {"name": "edge-1"}})
        )
    );
    assert_eq!(
        complete.response_object, None,
        "Request level keeps no response body"
    );
    assert_eq!(complete.impersonated_user.as_ref().unwrap().username, "bob");
    assert_eq!(
        complete.annotations["authorization.k8s.io/decision"],
        "allow"
    );
    assert_eq!(complete.response_status.as_ref().unwrap().code, 201);
    assert!(complete.stage_timestamp >= received.request_received_timestamp);

    // An implausible Audit-ID (it names recording files) is replaced.
    headers.insert(AUDIT_ID_HEADER, "../../etc/passwd".parse().unwrap());
    let request = auditor
        .begin(layer::with_headers(
            self::attrs(Method::GET, CLUSTERS),
            &headers,
            None,
        ))
        .await
        .unwrap();
    assert!(uuid::Uuid::parse_str(request.audit_id()).is_ok());
    request
        .complete(ResponseStatus::code(200), None)
        .await
        .unwrap();

    auditor.shutdown().await.unwrap();
    assert!(
        auditor
            .begin(self::attrs(Method::GET, CLUSTERS))
            .await
            .is_err(),
        "refused after shutdown"
    );
    let report = verify_dir(tmp.path(), Some(auditor.public_key()), None);
    assert!(report.is_intact(), "{report}");
    assert_eq!((report.events, report.checkpoints), (4, 1));
}

#[tokio::test]
async fn proxied_requests_describe_the_edge_object() {
    let tmp = tempfile::tempdir().unwrap();
    let auditor = Auditor::open(config(tmp.path(), key())).await.unwrap();

    let exec = format!("{PROXY}/api/v1/namespaces/default/pods/web-1/exec?command=sh&stdin=true");
    let mut request = auditor.begin(attrs(Method::POST, &exec)).await.unwrap();
    request
        .response_started(ResponseStatus::code(101))
        .await
        .unwrap();
    request
        .response_started(ResponseStatus::code(101))
        .await
        .unwrap(); // once only
    request
        .complete(ResponseStatus::code(101), None)
        .await
        .unwrap();

    // A long-running request completed without a ResponseStarted gets one first (kube).
    let watch = format!("{PROXY}/apis/apps/v1/namespaces/shop/deployments?watch=true");
    let request = auditor.begin(attrs(Method::GET, &watch)).await.unwrap();
    request
        .complete(ResponseStatus::code(200), None)
        .await
        .unwrap();

    // Edge Secrets are recorded without bodies; other edge writes with theirs.
    let secret_body = br#"{"kind":"Secret","data":{"password":"aHVudGVyMg=="}}"#;
    let mut request = auditor
        .begin(attrs(
            Method::POST,
            &format!("{PROXY}/api/v1/namespaces/default/secrets"),
        ))
        .await
        .unwrap();
    assert_eq!(request.level(), Level::Metadata);
    request.set_request_body(secret_body);
    request
        .complete(ResponseStatus::code(201), Some(secret_body))
        .await
        .unwrap();
    let mut request = auditor
        .begin(attrs(
            Method::POST,
            &format!("{PROXY}/api/v1/namespaces/default/pods"),
        ))
        .await
        .unwrap();
    request.set_request_body(br#"{"kind":"Pod","metadata":{"name":"p"}}"#);
    request
        .complete(ResponseStatus::code(201), None)
        .await
        .unwrap();

    let events = events(tmp.path());
    let stages: Vec<_> = events.iter().map(|e| e.stage).collect();
    use Stage::*;
    assert_eq!(
        stages,
        [
            RequestReceived,
            ResponseStarted,
            ResponseComplete, // exec
            RequestReceived,
            ResponseStarted,
            ResponseComplete, // watch
            RequestReceived,
            ResponseComplete, // secret
            RequestReceived,
            ResponseComplete, // pod
        ]
    );
    let exec_event = &events[2];
    assert_eq!(exec_event.verb, "create");
    assert_eq!(exec_event.request_uri, exec);
    assert_eq!(
        exec_event.object_ref.as_ref().unwrap(),
        &event::ObjectReference {
            resource: "pods".into(),
            namespace: "default".into(),
            name: "web-1".into(),
            api_version: "v1".into(),
            subresource: "exec".into(),
            ..Default::default()
        }
    );
    assert_eq!(exec_event.annotations[ANNOTATION_CLUSTER], "edge-1");
    assert_eq!(exec_event.annotations[ANNOTATION_ENVIRONMENT], "retail");
    assert_eq!(events[1].response_status.as_ref().unwrap().code, 101);

    let watch_event = &events[5];
    assert_eq!(watch_event.verb, "watch");
    let o = watch_event.object_ref.as_ref().unwrap();
    assert_eq!(
        (
            o.api_group.as_str(),
            o.resource.as_str(),
            o.namespace.as_str()
        ),
        ("apps", "deployments", "shop")
    );

    assert_eq!(events[7].level, Level::Metadata);
    assert_eq!(events[7].request_object, None);
    let text = std::fs::read_to_string(tmp.path().join("segment-000001.log")).unwrap();
    assert!(
        !text.contains("aHVudGVyMg=="),
        "a Secret's data reached the trail"
    );
    assert_eq!(
        events[9].request_object,
        Some(json!({"kind": "Pod", "metadata": {"name": "p"}}))
    );
}

#[tokio::test]
async fn oversized_and_non_json_bodies_are_left_out_and_said_so() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = config(tmp.path(), key());
    config.max_object_bytes = 64;
    let auditor = Auditor::open(config).await.unwrap();

    let mut request = auditor
        .begin(attrs(Method::PUT, &format!("{CLUSTERS}/edge-1")))
        .await
        .unwrap();
    request.set_request_body(format!("{{\"data\":\"{}\"}}", "x".repeat(100)).as_bytes());
    request
        .complete(ResponseStatus::code(200), None)
        .await
        .unwrap();
    let mut request = auditor
        .begin(attrs(Method::PATCH, &format!("{CLUSTERS}/edge-1")))
        .await
        .unwrap();
    request.set_request_body(b"\x00\x01protobuf");
    request
        .complete(ResponseStatus::code(200), None)
        .await
        .unwrap();

    let events = events(tmp.path());
    let big = &events[1];
    assert_eq!(big.request_object, None);
    assert_eq!(
        big.annotations[super::request::ANNOTATION_TRUNCATED],
        "true"
    );
    assert_eq!(
        big.annotations[super::request::ANNOTATION_REQUEST_OBJECT_OMITTED],
        "111 bytes exceed the limit of 64"
    );
    let binary = &events[3];
    assert_eq!(binary.request_object, None);
    assert_eq!(
        binary.annotations[super::request::ANNOTATION_REQUEST_OBJECT_OMITTED],
        "not JSON"
    );
}

#[tokio::test]
async fn a_request_dropped_or_panicking_before_completion_records_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let auditor = Auditor::open(config(tmp.path(), key())).await.unwrap();

    let dropped = auditor
        .begin(attrs(Method::DELETE, &format!("{CLUSTERS}/edge-1")))
        .await
        .unwrap();
    let dropped_id = dropped.audit_id().to_string();
    drop(dropped);

    let task_auditor = auditor.clone();
    let panicked = tokio::spawn(async move {
        let request = task_auditor
            .begin(attrs(Method::GET, CLUSTERS))
            .await
            .unwrap();
        let id = request.audit_id().to_string();
        assert!(id.is_empty(), "handler bug: {id}");
        request.complete(ResponseStatus::code(200), None).await
    })
    .await;
    assert!(panicked.unwrap_err().is_panic());
    // Appends are ordered: once this one is in the file, the Panic records are too.
    get(&auditor, CLUSTERS).await;

    let events = events(tmp.path());
    let panics: Vec<&Event> = events.iter().filter(|e| e.stage == Stage::Panic).collect();
    assert_eq!(panics.len(), 2);
    assert_eq!(panics[0].audit_id, dropped_id);
    assert_eq!(
        panics[0].annotations[super::request::ANNOTATION_ABANDONED],
        "true"
    );
    let status = panics[1].response_status.as_ref().unwrap();
    assert_eq!(
        (status.code, status.reason.as_str()),
        (500, "InternalError")
    );
    assert!(
        status.message.starts_with("APIServer panic'd"),
        "{}",
        status.message
    );
    assert!(!panics[1]
        .annotations
        .contains_key(super::request::ANNOTATION_ABANDONED));
}

// ---------------------------------------------------------------------------------------------
// Group commit

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_share_group_commits_in_one_valid_chain() {
    const TASKS: usize = 32;
    const REQUESTS_PER_TASK: usize = 40;
    let tmp = tempfile::tempdir().unwrap();
    let auditor = Auditor::open(config(tmp.path(), key())).await.unwrap();
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let auditor = auditor.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for _ in 0..REQUESTS_PER_TASK {
                ids.push(get(&auditor, &format!("{CLUSTERS}/task-{t}")).await);
            }
            ids
        }));
    }
    let mut per_task = Vec::new();
    for task in tasks {
        per_task.push(task.await.unwrap());
    }
    auditor.shutdown().await.unwrap();

    let records = records(tmp.path());
    let events: Vec<Event> = records
        .iter()
        .filter_map(|r| r.get("event").cloned())
        .map(|e| serde_json::from_value(e).unwrap())
        .collect();
    assert_eq!(events.len(), TASKS * REQUESTS_PER_TASK * 2);
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r["seq"], json!(i + 1));
    }
    // Each task's records are in the order it wrote them.
    for ids in &per_task {
        let order: Vec<(&str, Stage)> = events
            .iter()
            .filter(|e| ids.contains(&e.audit_id))
            .map(|e| (e.audit_id.as_str(), e.stage))
            .collect();
        let expected: Vec<(&str, Stage)> = ids
            .iter()
            .flat_map(|id| {
                [
                    (id.as_str(), Stage::RequestReceived),
                    (id.as_str(), Stage::ResponseComplete),
                ]
            })
            .collect();
        assert_eq!(order, expected);
    }
    let report = verify_dir(tmp.path(), Some(auditor.public_key()), None);
    assert!(report.is_intact(), "{report}");
}

// ---------------------------------------------------------------------------------------------
// Tampering

/// A trail of 12 records: events 1–6 (three GETs), checkpoint 7, events 8–11, checkpoint 12;
/// and the outside checkpoint (of record 11) as storage keeps it.
struct TamperFixture {
    tmp: tempfile::TempDir,
    public: PublicKey,
    checkpoint: SignedCheckpoint,
}

async fn tamper_fixture() -> TamperFixture {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("trail");
    let auditor = Auditor::open(config(&dir, key())).await.unwrap();
    for _ in 0..3 {
        get(&auditor, CLUSTERS).await;
    }
    assert_eq!(auditor.checkpoint().await.unwrap().unwrap().seq, 6);
    for _ in 0..2 {
        get(&auditor, CLUSTERS).await;
    }
    let checkpoint = auditor.checkpoint().await.unwrap().unwrap();
    assert_eq!(checkpoint.seq, 11);
    auditor.shutdown().await.unwrap();
    assert_eq!(records(&dir).len(), 12);
    TamperFixture {
        public: auditor.public_key().clone(),
        tmp,
        checkpoint,
    }
}

impl TamperFixture {
    /// A copy of the trail with its lines changed by `f`; verified with key and checkpoint.
    fn verify_tampered(&self, f: impl FnOnce(&mut Vec<String>)) -> VerifyReport {
        let copy = tempfile::tempdir_in(self.tmp.path()).unwrap();
        let segment = copy.path().join("segment-000001.log");
        let text =
            std::fs::read_to_string(self.tmp.path().join("trail/segment-000001.log")).unwrap();
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        f(&mut lines);
        std::fs::write(
            &segment,
            lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
        )
        .unwrap();
        let report = verify_dir(copy.path(), Some(&self.public), Some(&self.checkpoint));
        println!("{report}");
        report
    }
}

/// Re-encodes a line after `f` changed its record, with a correct hash for the new content.
fn rewrite(line: &str, f: impl FnOnce(&mut Value)) -> String {
    let mut record: Value = serde_json::from_str(line).unwrap();
    f(&mut record);
    let (kind, payload) = match record.get("event") {
        Some(e) => (PayloadKind::Event, e.clone()),
        None => (PayloadKind::Checkpoint, record["checkpoint"].clone()),
    };
    let mut out = Vec::new();
    encode_record(
        kind,
        &canonical::to_vec(&payload),
        record["prev"].as_str().unwrap(),
        record["seq"].as_u64().unwrap(),
        &mut out,
    );
    String::from_utf8(out).unwrap().trim_end().to_string()
}

fn assert_problem(report: &VerifyReport, kind: ProblemKind, seq: Option<u64>, line: usize) {
    let problem = report
        .problem
        .as_ref()
        .unwrap_or_else(|| panic!("not detected:\n{report}"));
    assert_eq!(
        (problem.kind, problem.seq, problem.line),
        (kind, seq, Some(line)),
        "{problem}"
    );
}

#[tokio::test]
async fn tampering_is_detected_and_the_first_bad_record_named() {
    let f = tamper_fixture().await;

    let intact = f.verify_tampered(|_| {});
    assert!(intact.is_intact(), "{intact}");
    assert_eq!(
        (intact.records, intact.events, intact.checkpoints),
        (12, 10, 2)
    );
    assert_eq!(intact.head.as_ref().unwrap().0, 12);

    // Modified in place: the hash no longer matches.
    let r = f.verify_tampered(|l| l[3] = l[3].replace("\"verb\":\"list\"", "\"verb\":\"delete\""));
    assert_problem(&r, ProblemKind::Modified, Some(4), 4);
    // Modified and re-hashed: record 5 no longer chains onto it.
    let r = f.verify_tampered(|l| l[3] = rewrite(&l[3], |r| r["event"]["verb"] = json!("delete")));
    assert_problem(&r, ProblemKind::Modified, Some(4), 4);
    // Only whitespace changed: still a modification.
    let r = f.verify_tampered(|l| l[3] = l[3].replacen(',', ", ", 1));
    assert_problem(&r, ProblemKind::Modified, Some(4), 4);

    // Removed.
    let r = f.verify_tampered(|l| drop(l.remove(3)));
    assert_problem(&r, ProblemKind::Removed, Some(4), 4);

    // Inserted: a forged record that chains correctly, before the genuine record 5.
    let r = f.verify_tampered(|l| {
        let forged = rewrite(&l[4], |r| r["event"]["user"]["username"] = json!("mallory"));
        l.insert(4, forged);
    });
    assert_problem(&r, ProblemKind::Inserted, Some(5), 5);
    // … after it.
    let r = f.verify_tampered(|l| {
        let forged = rewrite(&l[4], |r| r["event"]["user"]["username"] = json!("mallory"));
        l.insert(5, forged);
    });
    assert_problem(&r, ProblemKind::Inserted, Some(5), 6);
    // … or a line that is no record at all.
    let r = f.verify_tampered(|l| l.insert(4, r#"{"hello":"world"}"#.into()));
    assert_problem(&r, ProblemKind::Inserted, None, 5);

    // Reordered.
    let r = f.verify_tampered(|l| l.swap(3, 4));
    assert_problem(&r, ProblemKind::Reordered, Some(5), 4);

    // Truncated: caught against the outside checkpoint (record 11), not without it.
    let r = f.verify_tampered(|l| l.truncate(9));
    assert_problem(&r, ProblemKind::Truncated, Some(10), 9);
    let copy = tempfile::tempdir_in(f.tmp.path()).unwrap();
    let text = std::fs::read_to_string(f.tmp.path().join("trail/segment-000001.log")).unwrap();
    let kept: String = text.lines().take(9).map(|l| format!("{l}\n")).collect();
    std::fs::write(copy.path().join("segment-000001.log"), kept).unwrap();
    assert!(verify_dir(copy.path(), Some(&f.public), None).is_intact());

    // A checkpoint signature changed (and its record re-hashed): the last record, whose
    // signature is all that protects it …
    let corrupt_signature = |r: &mut Value| {
        let sig = r["checkpoint"]["signature"].as_str().unwrap().to_string();
        let flipped = if sig.starts_with('A') {
            sig.replacen('A', "B", 1)
        } else {
            format!("A{}", &sig[1..])
        };
        r["checkpoint"]["signature"] = json!(flipped);
    };
    let r = f.verify_tampered(|l| l[11] = rewrite(&l[11], corrupt_signature));
    assert_problem(&r, ProblemKind::BadSignature, Some(12), 12);
    // … or one inside the chain (record 8 no longer chains onto it either).
    let r = f.verify_tampered(|l| l[6] = rewrite(&l[6], corrupt_signature));
    assert_problem(&r, ProblemKind::BadSignature, Some(7), 7);
    // Without the key, the broken link names it.
    let copy = tempfile::tempdir_in(f.tmp.path()).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines[6] = rewrite(&lines[6], corrupt_signature);
    std::fs::write(
        copy.path().join("segment-000001.log"),
        lines.join("\n") + "\n",
    )
    .unwrap();
    assert_problem(
        &verify_dir(copy.path(), None, None),
        ProblemKind::Modified,
        Some(7),
        7,
    );

    // The outside checkpoint forged or signed by another key.
    let mut forged = f.checkpoint.clone();
    forged.seq = 3;
    let dir = f.tmp.path().join("trail");
    let r = verify_dir(&dir, Some(&f.public), Some(&forged));
    assert_eq!(r.problem.unwrap().kind, ProblemKind::BadSignature);
    let other = key();
    let r = verify_dir(&dir, Some(other.public_key()), Some(&f.checkpoint));
    assert_eq!(r.problem.unwrap().kind, ProblemKind::BadSignature);
    let r = verify_dir(&dir, Some(other.public_key()), None);
    assert_problem(&r, ProblemKind::BadSignature, Some(7), 7);
    // Without a key the chain is still checked; signatures are not.
    let r = verify_dir(&dir, None, Some(&f.checkpoint));
    assert!(r.is_intact() && !r.signatures_checked);
}

#[tokio::test]
async fn a_removed_or_renamed_segment_is_detected() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("trail");
    let mut config = config(&dir, key());
    config.max_segment_bytes = 1; // every batch starts a segment
    let auditor = Auditor::open(config).await.unwrap();
    for _ in 0..4 {
        get(&auditor, CLUSTERS).await;
    }
    auditor.shutdown().await.unwrap();
    let segments = segment::list_segments(&dir).unwrap();
    // A GET's two records may share a batch; with the closing checkpoint, at least 5.
    assert!(segments.len() >= 5, "{segments:?}");
    assert!(verify_dir(&dir, Some(auditor.public_key()), None).is_intact());

    let first_seq = |path: &Path| {
        let text = std::fs::read_to_string(path).unwrap();
        parse_record(text.lines().next().unwrap().as_bytes())
            .unwrap()
            .seq
    };
    let missing = first_seq(&segments[3].1);
    std::fs::rename(&segments[3].1, tmp.path().join("aside")).unwrap();
    let r = verify_dir(&dir, Some(auditor.public_key()), None);
    let p = r.problem.unwrap();
    assert_eq!(
        (p.kind, p.seq, p.segment.as_ref()),
        (ProblemKind::Removed, Some(missing), Some(&segments[4].1))
    );

    // Put it back under a later name: out of order.
    std::fs::rename(tmp.path().join("aside"), dir.join("segment-999999.log")).unwrap();
    let r = verify_dir(&dir, Some(auditor.public_key()), None);
    assert_eq!(r.problem.unwrap().kind, ProblemKind::Reordered);
}

// ---------------------------------------------------------------------------------------------
// Recovery, locking, checkpoints in storage

#[tokio::test]
async fn a_torn_last_line_is_cut_off_kept_and_the_chain_continues() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("trail");
    let signing = tmp.path().join("audit.key");
    let (key, _) = SigningKey::load_or_generate(&signing).unwrap();
    let auditor = Auditor::open(config(&dir, key)).await.unwrap();
    get(&auditor, CLUSTERS).await;
    get(&auditor, CLUSTERS).await;
    auditor.shutdown().await.unwrap(); // + checkpoint: 5 records
    drop(auditor);

    // A kill in the middle of write(2): half a record, no line end.
    let segment = dir.join("segment-000001.log");
    let text = std::fs::read_to_string(&segment).unwrap();
    let torn = &text.lines().next().unwrap()[..60];
    std::fs::write(&segment, format!("{text}{torn}")).unwrap();
    let report = verify_dir(&dir, None, None);
    assert!(report.is_intact(), "a torn tail is not tampering: {report}");
    assert_eq!(report.incomplete_tail, Some((segment.clone(), 6, 60)));

    let (key, generated) = SigningKey::load_or_generate(&signing).unwrap();
    assert!(!generated);
    let auditor = Auditor::open(config(&dir, key)).await.unwrap();
    let recovery = auditor.recovery().unwrap().clone();
    assert_eq!((recovery.last_seq, recovery.discarded_bytes), (5, 60));
    assert_eq!(recovery.offset as usize, text.len());
    assert_eq!(std::fs::read_to_string(&recovery.saved_to).unwrap(), torn);
    get(&auditor, CLUSTERS).await;
    auditor.shutdown().await.unwrap();
    drop(auditor);

    let records = records(&dir);
    assert_eq!(records.len(), 8);
    assert_eq!(records[5]["seq"], json!(6));
    assert_eq!(records[5]["prev"], records[4]["hash"]);
    let public = PublicKey::load(&checkpoint::public_key_path(&signing)).unwrap();
    let report = verify_dir(&dir, Some(&public), None);
    assert!(
        report.is_intact() && report.incomplete_tail.is_none(),
        "{report}"
    );

    // A power loss that left zeros where data never landed: cut off as well.
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes.extend_from_slice(&[0; 4096]);
    std::fs::write(&segment, &bytes).unwrap();
    let auditor = Auditor::open(config(&dir, SigningKey::load(&signing).unwrap()))
        .await
        .unwrap();
    assert_eq!(auditor.recovery().unwrap().discarded_bytes, 4096);
    auditor.shutdown().await.unwrap();
    drop(auditor);

    // A complete line that is not a record is no torn write: the trail refuses to open.
    let mut text = std::fs::read_to_string(&segment).unwrap();
    text.push_str("{\"seq\":9}\n");
    std::fs::write(&segment, text).unwrap();
    match Auditor::open(config(&dir, SigningKey::load(&signing).unwrap())).await {
        Err(AuditError::Open(recovery::OpenError::Corrupt { line, .. })) => assert_eq!(line, 9),
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("opened a damaged trail"),
    }
}

#[tokio::test]
async fn one_process_writes_a_trail() {
    let tmp = tempfile::tempdir().unwrap();
    let first = Auditor::open(config(tmp.path(), key())).await.unwrap();
    match Auditor::open(config(tmp.path(), key())).await {
        Err(AuditError::Open(recovery::OpenError::Locked { .. })) => {}
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("two writers on one trail"),
    }
    first.shutdown().await.unwrap();
    drop(first);
    // The lock goes with the writer.
    Auditor::open(config(tmp.path(), key()))
        .await
        .unwrap()
        .shutdown()
        .await
        .unwrap();
}

#[tokio::test]
async fn checkpoints_go_to_storage_and_a_cut_trail_refuses_to_start() {
    /// A short interval, so the periodic checkpoint is observable.
    const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(50);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("trail");
    let storage: DynStorage = Arc::new(EmbeddedStore::open(&tmp.path().join("store")).unwrap());
    let signing = tmp.path().join("audit.key");
    let open = |interval: Duration| {
        let mut config = config(&dir, SigningKey::load_or_generate(&signing).unwrap().0);
        config.checkpoint_storage = Some(storage.clone());
        config.checkpoint_interval = interval;
        Auditor::open(config)
    };

    let auditor = open(CHECKPOINT_INTERVAL).await.unwrap();
    get(&auditor, CLUSTERS).await;
    let stored = eventually!(
        checkpoint::load_checkpoint(&*storage, "hub-0")
            .await
            .unwrap(),
        "a periodic checkpoint"
    );
    assert_eq!(stored.seq, 2);
    assert_eq!(stored.key_id, auditor.public_key().key_id());
    get(&auditor, CLUSTERS).await;
    auditor.shutdown().await.unwrap(); // the final checkpoint: records 1..=5 + 6
    let public = auditor.public_key().clone();
    drop(auditor);
    let last = checkpoint::load_checkpoint(&*storage, "hub-0")
        .await
        .unwrap()
        .unwrap();
    assert!(last.seq > stored.seq);
    assert!(verify_dir(&dir, Some(&public), Some(&last)).is_intact());
    // What `audit verify --dir --public-key --checkpoint` runs.
    let checkpoint_file = tmp.path().join("checkpoint.json");
    std::fs::write(&checkpoint_file, serde_json::to_vec(&last).unwrap()).unwrap();
    let report = verify_command(
        &dir,
        Some(&checkpoint::public_key_path(&signing)),
        Some(&checkpoint_file),
    )
    .unwrap();
    assert!(report.is_intact() && report.signatures_checked && report.checkpoint.is_some());
    assert!(report.to_string().contains("INTACT"), "{report}");
    assert!(verify_command(&dir, Some(&tmp.path().join("missing.pub")), None).is_err());

    // Restarting over the intact trail works and continues it.
    let auditor = open(NEVER).await.unwrap();
    get(&auditor, CLUSTERS).await;
    auditor.shutdown().await.unwrap();
    drop(auditor);
    let last = checkpoint::load_checkpoint(&*storage, "hub-0")
        .await
        .unwrap()
        .unwrap();

    // Cut the trail while the hub is down: it refuses to start, and says why.
    let segment = dir.join("segment-000001.log");
    let text = std::fs::read_to_string(&segment).unwrap();
    let kept: Vec<&str> = text.lines().take(4).collect();
    std::fs::write(&segment, format!("{}\n", kept.join("\n"))).unwrap();
    match open(NEVER).await {
        Err(AuditError::CheckpointMismatch { seq, reason }) => {
            assert_eq!(seq, last.seq);
            assert!(reason.contains("missing"), "{reason}");
        }
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("started over a cut trail"),
    }
    let r = verify_dir(&dir, Some(&public), Some(&last));
    assert_eq!(r.problem.unwrap().kind, ProblemKind::Truncated);
}

// ---------------------------------------------------------------------------------------------
// Failing closed

#[tokio::test]
async fn a_trail_that_cannot_be_written_refuses_requests_and_resumes_without_a_gap() {
    let tmp = tempfile::tempdir().unwrap();

    // A directory that cannot exist (its parent is a file) — refused even as root.
    let file = tmp.path().join("file");
    std::fs::write(&file, "x").unwrap();
    assert!(matches!(
        Auditor::open(config(&file.join("trail"), key())).await,
        Err(AuditError::Open(recovery::OpenError::Io { .. }))
    ));

    let dir = tmp.path().join("trail");
    let mut config = config(&dir, key());
    config.max_segment_bytes = 1; // every batch starts a new segment
    let auditor = Auditor::open(config).await.unwrap();
    get(&auditor, CLUSTERS).await;

    // The next segment cannot be created (something occupies its name): nothing can be
    // written, and the request is refused before it is handled.
    let (last, _) = *segment::list_segments(&dir).unwrap().last().unwrap();
    let obstacle = dir.join(segment::segment_file_name(last + 1));
    std::fs::create_dir(&obstacle).unwrap();
    let err = auditor
        .begin(attrs(Method::DELETE, &format!("{CLUSTERS}/edge-1")))
        .await
        .unwrap_err();
    assert!(matches!(err, AuditError::Write(_)), "{err}");
    // A read goes ahead while its RequestReceived is written, but cannot complete: its
    // response is refused too.
    let read = auditor
        .begin(attrs(Method::GET, &format!("{CLUSTERS}/edge-1")))
        .await;
    let err = match read {
        // Refused at once: the writer already knows it is failing.
        Err(err) => err,
        Ok(read) => read
            .complete(ResponseStatus::code(200), None)
            .await
            .unwrap_err(),
    };
    assert!(matches!(err, AuditError::Write(_)), "{err}");
    let api: crate::errors::ApiError = err.into();
    assert_eq!(api.code(), http::StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        api.to_string(),
        "Internal Server Error: failed to store audit event"
    );

    // Meanwhile the trail reports that it cannot write (readiness says so).
    assert!(matches!(auditor.health(), Err(AuditError::Write(_))));

    // Once the disk is usable again, the trail continues from its last record: the writer's
    // next retry finds it writable (without any request), and readiness comes back.
    std::fs::remove_dir(&obstacle).unwrap();
    eventually!(auditor.health().ok(), "the trail to be writable again");
    get(&auditor, CLUSTERS).await;
    auditor.shutdown().await.unwrap();
    let records = records(&dir);
    let seqs: Vec<u64> = records.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    assert_eq!(
        records.len(),
        6,
        "2 events, the checkpoint that found the trail writable, 2 events, the final checkpoint"
    );
    assert!(records[2].get("checkpoint").is_some(), "{:#?}", records[2]);
    let report = verify_dir(&dir, Some(auditor.public_key()), None);
    assert!(report.is_intact(), "{report}");
}

#[tokio::test]
async fn a_write_acts_only_once_its_request_received_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let auditor = Auditor::open(config(tmp.path(), key())).await.unwrap();
    auditor.faults().fill();
    let err = auditor
        .begin(attrs(Method::POST, CLUSTERS))
        .await
        .expect_err("a write must not begin while its RequestReceived cannot be written");
    assert!(matches!(err, AuditError::Write(_)), "{err}");
    assert!(
        auditor.health().is_err(),
        "readiness reports the failing trail"
    );
    assert!(events(tmp.path()).is_empty());
}

#[tokio::test]
async fn the_outcome_of_a_write_that_could_not_be_recorded_reaches_the_trail_once_it_can() {
    let tmp = tempfile::tempdir().unwrap();
    let auditor = Auditor::open(config(tmp.path(), key())).await.unwrap();

    // RequestReceived is written; then the disk fills while the write is applied.
    let write = auditor.begin(attrs(Method::POST, CLUSTERS)).await.unwrap();
    let id = write.audit_id().to_string();
    auditor.faults().fill();
    let err = write
        .complete(ResponseStatus::code(201), None)
        .await
        .expect_err("the client is told the record could not be written");
    assert!(matches!(err, AuditError::Write(_)), "{err}");
    // A read's outcome is not kept: it changed nothing.
    let read = auditor.begin(attrs(Method::GET, CLUSTERS)).await;
    assert!(
        read.is_err()
            || read
                .unwrap()
                .complete(ResponseStatus::code(200), None)
                .await
                .is_err()
    );
    assert!(
        auditor.health().is_err(),
        "not ready while the write's outcome is owed"
    );

    auditor.faults().free();
    eventually!(auditor.health().ok(), "the owed outcome to be written");
    let events = events(tmp.path());
    let stages: Vec<(String, Stage)> = events
        .iter()
        .map(|e| (e.audit_id.clone(), e.stage))
        .collect();
    assert_eq!(
        stages,
        [
            (id.clone(), Stage::RequestReceived),
            (id.clone(), Stage::ResponseComplete)
        ],
        "the write's outcome, and nothing of the read whose RequestReceived never landed"
    );
    let complete = &events[1];
    assert_eq!(complete.response_status.as_ref().unwrap().code, 201);
    let late = &complete.annotations[ANNOTATION_RECORDED_LATE];
    assert!(late.contains("No space left on device"), "{late}");

    auditor.shutdown().await.unwrap();
    let report = verify_dir(tmp.path(), Some(auditor.public_key()), None);
    assert!(report.is_intact(), "{report}");
}

// ---------------------------------------------------------------------------------------------
// Session recordings

#[tokio::test]
async fn session_recordings_are_capped_and_hashed_into_the_event() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = config(tmp.path(), key());
    config.session_max_bytes = 512;
    let auditor = Auditor::open(config).await.unwrap();

    let exec =
        format!("{PROXY}/api/v1/namespaces/default/pods/web-1/exec?command=sh&stdin=true&tty=true");
    let mut request = auditor.begin(attrs(Method::POST, &exec)).await.unwrap();
    request
        .response_started(ResponseStatus::code(101))
        .await
        .unwrap();
    let header = SessionHeader {
        width: Some(120),
        height: Some(40),
        title: "kubectl exec web-1 -- sh (retail/edge-1)".into(),
        env: vec![("SHELL".into(), "sh".into())],
    };
    let mut recorder = auditor.record_session(&request, header).await.unwrap();
    assert_eq!(
        recorder.relative_path(),
        format!("sessions/{}.cast", request.audit_id())
    );
    let word = "wörld".as_bytes();
    recorder.record(StreamKind::Stdout, b"$ ").await.unwrap();
    recorder
        .record(StreamKind::Stdin, b"echo hello ")
        .await
        .unwrap();
    // A character split across two frames is recorded whole.
    recorder
        .record(StreamKind::Stdin, &word[..2])
        .await
        .unwrap();
    recorder
        .record(StreamKind::Stdin, &word[2..])
        .await
        .unwrap();
    recorder.record_channel_message(b"\x02oops").await.unwrap();
    recorder
        .record_channel_message(br#"{"Width":100,"Height":30}"#)
        .await
        .unwrap_or(());
    recorder
        .record_channel_message(b"\x04{\"Width\":100,\"Height\":30}")
        .await
        .unwrap();
    recorder
        .record(StreamKind::Stdout, &[0xff, 0x00, 0xfe])
        .await
        .unwrap();
    for _ in 0..20 {
        recorder
            .record(StreamKind::Stdout, &[b'x'; 64])
            .await
            .unwrap();
    }
    let recording = recorder.finish().await.unwrap();
    assert!(recording.truncated);
    assert!(recording.file_bytes <= 512 + 100, "{recording:?}");
    assert_eq!(recording.stream_bytes, 2 + 11 + 6 + 4 + 3 + 20 * 64);
    request.attach_recording(&recording);
    request
        .complete(ResponseStatus::code(101), None)
        .await
        .unwrap();

    let bytes = std::fs::read(tmp.path().join(&recording.path)).unwrap();
    assert_eq!(canonical::sha256_hex(&bytes), recording.sha256);
    let lines: Vec<Value> = String::from_utf8(bytes)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        (lines[0]["version"].as_u64(), lines[0]["width"].as_u64()),
        (Some(2), Some(120))
    );
    let frames: Vec<(f64, &str, &str)> = lines[1..]
        .iter()
        .map(|f| {
            (
                f[0].as_f64().unwrap(),
                f[1].as_str().unwrap(),
                f[2].as_str().unwrap(),
            )
        })
        .collect();
    assert!(
        frames.windows(2).all(|w| w[0].0 <= w[1].0),
        "time goes forward"
    );
    let stdin: String = frames.iter().filter(|f| f.1 == "i").map(|f| f.2).collect();
    assert_eq!(stdin, "echo hello wörld");
    assert!(
        frames.contains(&(frames[4].0, "e", "oops"))
            || frames.iter().any(|f| f.1 == "e" && f.2 == "oops")
    );
    assert!(frames.iter().any(|f| f.1 == "r" && f.2 == "100x30"));
    assert!(frames.iter().any(|f| f.1 == "ob" && f.2 == "/wD+"));
    assert!(frames.last().unwrap().1 == "m" && frames.last().unwrap().2.contains("truncated"));

    let events = events(tmp.path());
    let complete = events
        .iter()
        .find(|e| e.stage == Stage::ResponseComplete)
        .unwrap();
    assert_eq!(
        complete.annotations[session::ANNOTATION_SESSION_RECORDING],
        recording.path
    );
    assert_eq!(
        complete.annotations[session::ANNOTATION_SESSION_RECORDING_SHA256],
        recording.sha256
    );
    assert_eq!(
        complete.annotations[session::ANNOTATION_SESSION_RECORDING_TRUNCATED],
        "true"
    );

    let report = verify_dir(tmp.path(), Some(auditor.public_key()), None);
    assert!(report.is_intact() && report.recordings == 1, "{report}");
    // Editing the recording is detected through the chain.
    let path = tmp.path().join(&recording.path);
    let edited = std::fs::read_to_string(&path)
        .unwrap()
        .replace("echo hello ", "echo HELLO ");
    std::fs::write(&path, edited).unwrap();
    let report = verify_dir(tmp.path(), Some(auditor.public_key()), None);
    let problem = report.problem.unwrap();
    assert_eq!(
        (problem.kind, problem.seq),
        (ProblemKind::RecordingModified, Some(3))
    );

    // A repeated audit ID does not overwrite a recording.
    let again = auditor
        .record_session(
            &request_with_id(&auditor, complete.audit_id.clone()).await,
            SessionHeader::default(),
        )
        .await
        .unwrap();
    assert_ne!(again.relative_path(), recording.path);
}

async fn request_with_id(auditor: &Auditor, id: String) -> AuditedRequest {
    let mut attrs = attrs(Method::GET, CLUSTERS);
    attrs.audit_id = Some(id);
    auditor.begin(attrs).await.unwrap()
}

// ---------------------------------------------------------------------------------------------
// Webhook

#[tokio::test]
async fn the_webhook_receives_the_trail_as_batched_event_lists() {
    use http_body_util::BodyExt as _;

    /// Batches close quickly in this test.
    const BATCH_MAX_WAIT: Duration = Duration::from_millis(100);
    const BATCH_MAX_SIZE: usize = 3;
    const TOKEN: &str = "siem-token";

    // An HTTPS server standing in for the SIEM; it fails its first request with 503.
    let ca = crate::pki::generate_ca("siem-ca").unwrap();
    let leaf = crate::pki::issue(
        &ca,
        &crate::pki::LeafSpec::server("siem", &["localhost"], &["127.0.0.1".parse().unwrap()]),
    )
    .unwrap();
    let certs = crate::http::tls::certs_from_pem(leaf.certificate_chain_pem.as_bytes()).unwrap();
    let key_der =
        rustls_pki_types::PrivateKeyDer::from_pem_slice(leaf.key_pem().as_bytes()).unwrap();
    let tls = crate::http::tls::server_config(certs, key_der, None).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received: Arc<std::sync::Mutex<Vec<(http::request::Parts, bytes::Bytes)>>> = Arc::default();
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    {
        let received = received.clone();
        let calls = calls.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let acceptor = tokio_rustls::TlsAcceptor::from(tls.clone());
                let received = received.clone();
                let calls = calls.clone();
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            let received = received.clone();
                            let calls = calls.clone();
                            async move {
                                let (parts, body) = req.into_parts();
                                let body = body.collect().await.unwrap().to_bytes();
                                let status =
                                    if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0
                                    {
                                        http::StatusCode::SERVICE_UNAVAILABLE
                                    } else {
                                        received.lock().unwrap().push((parts, body));
                                        http::StatusCode::OK
                                    };
                                Ok::<_, std::convert::Infallible>(
                                    http::Response::builder()
                                        .status(status)
                                        .body(http_body_util::Full::new(bytes::Bytes::new()))
                                        .unwrap(),
                                )
                            }
                        },
                    );
                    drop(
                        hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                            .await,
                    );
                });
            }
        });
    }

    // Configured as kube's --audit-webhook-config-file.
    let tmp = tempfile::tempdir().unwrap();
    let kubeconfig = tmp.path().join("webhook.kubeconfig");
    std::fs::write(
        &kubeconfig,
        crate::kubeconfig::render(
            "siem",
            &format!("https://127.0.0.1:{}/audit/events", addr.port()),
            ca.certificate_pem(),
            "hub",
            crate::kubeconfig::Credentials::Token(TOKEN),
            None,
        ),
    )
    .unwrap();
    let mut webhook = WebhookConfig::from_kubeconfig_file(&kubeconfig).unwrap();
    assert_eq!(webhook.batch_max_size, webhook::DEFAULT_BATCH_MAX_SIZE);
    webhook.batch_max_size = BATCH_MAX_SIZE;
    webhook.batch_max_wait = BATCH_MAX_WAIT;
    webhook.initial_backoff = Duration::from_millis(10);
    let dir = tmp.path().join("trail");
    let mut config = config(&dir, key());
    config.webhook = Some(webhook);
    let auditor = Auditor::open(config).await.unwrap();
    for _ in 0..4 {
        get(&auditor, CLUSTERS).await;
    }
    let mut w = auditor.begin(attrs(Method::POST, CLUSTERS)).await.unwrap();
    w.set_request_body(br#"{"kind":"Cluster"}"#);
    w.complete(ResponseStatus::code(201), None).await.unwrap();

    let expected: Vec<Event> = events(&dir);
    assert_eq!(expected.len(), 10);
    let got = eventually!(
        {
            let received = received.lock().unwrap();
            let n: usize = received
                .iter()
                .map(|(_, b)| {
                    serde_json::from_slice::<event::EventList>(b)
                        .unwrap()
                        .items
                        .len()
                })
                .sum();
            (n >= expected.len()).then(|| received.clone())
        },
        "the webhook to receive every event"
    );
    let mut items = Vec::new();
    for (parts, body) in &got {
        assert_eq!(parts.method, Method::POST);
        assert_eq!(parts.uri.path(), "/audit/events");
        assert_eq!(
            parts.headers[http::header::CONTENT_TYPE],
            "application/json"
        );
        assert_eq!(
            parts.headers[http::header::AUTHORIZATION],
            format!("Bearer {TOKEN}")
        );
        let list: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(list["kind"], "EventList");
        assert_eq!(list["apiVersion"], "audit.k8s.io/v1");
        assert_eq!(list["metadata"], json!({}));
        let list: event::EventList = serde_json::from_slice(body).unwrap();
        assert!(!list.items.is_empty() && list.items.len() <= BATCH_MAX_SIZE);
        items.extend(list.items);
    }
    // Everything, once, in trail order — including the batch the server failed the first time.
    assert_eq!(items, expected);
    assert!(calls.load(std::sync::atomic::Ordering::SeqCst) > got.len());
    assert_eq!(auditor.webhook_dropped(), 0);
    auditor.shutdown().await.unwrap();
}

use rustls_pki_types::pem::PemObject as _;

// ---------------------------------------------------------------------------------------------
// Measurement

/// Prints the latency of one append (a `begin` at level Metadata: serialize, queue, group
/// commit, acknowledgement) and the throughput under concurrency, for each durability.
/// `cargo test -p edgefleet-apiserver audit::tests::append_latency -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a test"]
async fn append_latency() {
    const SEQUENTIAL: usize = 2000;
    const TASKS: usize = 64;
    const PER_TASK: usize = 100;
    for durability in [Durability::AfterWrite, Durability::AfterSync] {
        let tmp = tempfile::tempdir().unwrap();
        let mut config = config(tmp.path(), key());
        config.durability = durability;
        let auditor = Auditor::open(config).await.unwrap();
        let uri = format!("{CLUSTERS}/edge-1");

        let mut begin = Vec::with_capacity(SEQUENTIAL);
        let mut request = Vec::with_capacity(SEQUENTIAL);
        for _ in 0..SEQUENTIAL {
            let attrs = attrs(Method::GET, &uri);
            let t0 = tokio::time::Instant::now();
            let r = auditor.begin(attrs).await.unwrap();
            let t1 = tokio::time::Instant::now();
            r.complete(ResponseStatus::code(200), None).await.unwrap();
            begin.push(t1 - t0);
            request.push(t0.elapsed());
        }

        let start = tokio::time::Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..TASKS {
            let auditor = auditor.clone();
            let uri = uri.clone();
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::with_capacity(PER_TASK);
                for _ in 0..PER_TASK {
                    let attrs = attrs(Method::GET, &uri);
                    let t0 = tokio::time::Instant::now();
                    let r = auditor.begin(attrs).await.unwrap();
                    lat.push(t0.elapsed());
                    r.complete(ResponseStatus::code(200), None).await.unwrap();
                }
                lat
            }));
        }
        let mut concurrent = Vec::new();
        for t in tasks {
            concurrent.extend(t.await.unwrap());
        }
        let elapsed = start.elapsed();
        auditor.shutdown().await.unwrap();

        let pct = |v: &mut Vec<Duration>, p: f64| {
            v.sort();
            v[((v.len() as f64 - 1.0) * p) as usize]
        };
        println!(
            "{durability:?}: one append p50 {:?} p99 {:?}; begin+complete p50 {:?} p99 {:?}; \
             {TASKS} concurrent: append p50 {:?} p99 {:?}, {:.0} records/s",
            pct(&mut begin, 0.5),
            pct(&mut begin, 0.99),
            pct(&mut request, 0.5),
            pct(&mut request, 0.99),
            pct(&mut concurrent, 0.5),
            pct(&mut concurrent, 0.99),
            (TASKS * PER_TASK * 2) as f64 / elapsed.as_secs_f64(),
        );
    }
}

/// Request handlers hold these across awaits on any worker thread.
#[test]
fn handles_are_send_and_sync() {
    fn is_send_sync<T: Send + Sync>() {}
    fn is_send<T: Send>() {}
    is_send_sync::<Auditor>();
    is_send_sync::<AuditedRequest>();
    is_send::<SessionRecorder>();
}
