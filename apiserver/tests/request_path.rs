//! The hub's request path in process: security claims and HTTP behaviour proved against the
//! real stack (authentication, audit, impersonation, RBAC, registry, embedded store), driven
//! with `oneshot` — no socket, no process. See `common` for the harness.

mod common;

use common::*;
use edgefleet_apiserver::http::body;
use edgefleet_testkit::eventually;
use http::{Method, StatusCode};
use serde_json::json;

const ROOT: &str = "root-secret-token";

fn environments() -> String {
    format!("{GROUP_VERSION}/environments")
}

fn environment(name: &str) -> serde_json::Value {
    json!({"apiVersion": "edgefleet.io/v1alpha1", "kind": "Environment",
           "metadata": {"name": name}, "spec": {}})
}

fn proxy(env: &str, cluster: &str, rest: &str) -> String {
    format!("{GROUP_VERSION}/namespaces/{env}/clusters/{cluster}/proxy{rest}")
}

#[tokio::test]
async fn an_unauthenticated_request_is_refused_and_audited() {
    let hub = hub().await;
    let refused = hub
        .as_user("no-such-token", Method::GET, &environments(), None)
        .await;

    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    let status = refused.json();
    assert_eq!(
        (status["kind"].as_str(), status["reason"].as_str()),
        (Some("Status"), Some("Unauthorized"))
    );
    let events = hub.events_of(&refused.audit_id());
    let stages: Vec<&str> = events
        .iter()
        .map(|e| e["stage"].as_str().unwrap())
        .collect();
    assert_eq!(stages, ["RequestReceived", "ResponseComplete"]);
    let complete = &events[1];
    assert_eq!(complete["responseStatus"]["code"], 401);
    assert_eq!(complete["verb"], "list");
    assert_eq!(complete["objectRef"]["resource"], "environments");
    // kube records a failed authentication with an empty user.
    assert!(complete["user"].get("username").is_none(), "{complete}");
    assert_eq!(complete["sourceIPs"][0], "127.0.0.1");
}

#[tokio::test]
async fn a_request_whose_audit_record_cannot_be_written_is_refused_and_applies_nothing() {
    let hub = hub().await;
    hub.auditor.faults().fill();

    let refused = hub
        .as_user(
            ROOT,
            Method::POST,
            &environments(),
            Some(environment("refused")),
        )
        .await;
    assert_eq!(refused.status, StatusCode::INTERNAL_SERVER_ERROR);
    let status = refused.json();
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["reason"], "InternalError");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("failed to store audit event"),
        "{status}"
    );
    // Reads too: nothing leaves the hub unrecorded.
    let read = hub.as_user(ROOT, Method::GET, &environments(), None).await;
    assert_eq!(read.status, StatusCode::INTERNAL_SERVER_ERROR, "{read:?}");
    assert_eq!(read.json()["kind"], "Status");
    // Discovery and OpenAPI say it in plain text: client-go reads those bodies raw.
    let discovery = hub.as_user(ROOT, Method::GET, "/apis", None).await;
    assert_eq!(discovery.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        discovery.headers["content-type"],
        "text/plain; charset=utf-8"
    );
    assert_eq!(
        &discovery.body[..],
        b"Internal Server Error: failed to store audit event"
    );
    let ready = hub
        .send(
            hub.request(Method::GET, "/readyz?verbose", None)
                .body(body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(ready.status, StatusCode::INTERNAL_SERVER_ERROR);
    let text = String::from_utf8_lossy(&ready.body);
    assert!(text.contains("[-]audit-trail-writable failed"), "{text}");

    hub.auditor.faults().free();
    eventually!(
        { hub.auditor.health().ok() },
        "readiness once the trail can be written"
    );
    let ready = hub
        .send(
            hub.request(Method::GET, "/readyz", None)
                .body(body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(ready.status, StatusCode::OK);
    let get = hub
        .as_user(
            ROOT,
            Method::GET,
            &format!("{}/refused", environments()),
            None,
        )
        .await;
    assert_eq!(
        get.status,
        StatusCode::NOT_FOUND,
        "the refused create was not applied"
    );
    assert!(
        hub.events().iter().all(|e| e["verb"] != "create"),
        "no record of the refused create: it never began"
    );
}

#[tokio::test]
async fn a_committed_write_whose_outcome_cannot_be_recorded_reaches_the_trail_once_it_can() {
    let hub = hub().await;
    // The create's RequestReceived is written; its ResponseComplete is not.
    hub.auditor.faults().fill_after(1);

    let create = hub
        .as_user(
            ROOT,
            Method::POST,
            &environments(),
            Some(environment("committed")),
        )
        .await;
    assert_eq!(
        create.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{create:?}"
    );
    assert!(create.json()["message"]
        .as_str()
        .unwrap()
        .contains("failed to store audit event"));
    let id = create.audit_id();
    assert!(
        hub.auditor.health().is_err(),
        "not ready while an outcome is owed"
    );

    hub.auditor.faults().free();
    eventually!(
        { hub.auditor.health().ok() },
        "the owed outcome to reach the trail"
    );
    let events = hub.events_of(&id);
    let stages: Vec<&str> = events
        .iter()
        .map(|e| e["stage"].as_str().unwrap())
        .collect();
    assert_eq!(stages, ["RequestReceived", "ResponseComplete"]);
    let complete = &events[1];
    assert_eq!(
        complete["responseStatus"]["code"], 201,
        "the write's outcome: it was applied"
    );
    assert_eq!(complete["objectRef"]["name"], "committed");
    assert!(
        complete["annotations"]["edgefleet.io/recorded-late"]
            .as_str()
            .unwrap()
            .contains("No space left on device"),
        "{complete}"
    );
    let get = hub
        .as_user(
            ROOT,
            Method::GET,
            &format!("{}/committed", environments()),
            None,
        )
        .await;
    assert_eq!(get.status, StatusCode::OK);
}

#[tokio::test]
async fn the_caller_s_authorization_and_impersonate_headers_never_reach_the_edge() {
    let hub = hub().await;
    hub.cluster("retail", "pods-1").await;
    hub.tunnels.connect("retail", "pods-1");
    let pod = "/api/v1/namespaces/default/pods/edge-pod";

    // root (system:masters, bearer token) reads a pod, and execs in it.
    let get = hub
        .as_user(ROOT, Method::GET, &proxy("retail", "pods-1", pod), None)
        .await;
    assert_eq!(get.status, StatusCode::OK, "{get:?}");
    let exec = hub
        .send(
            hub.request(
                Method::GET,
                &proxy("retail", "pods-1", &format!("{pod}/exec?command=sh")),
                Some(ROOT),
            )
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-protocol", "v5.channel.k8s.io")
            .body(body::empty())
            .unwrap(),
        )
        .await;
    assert_eq!(exec.status, StatusCode::SWITCHING_PROTOCOLS, "{exec:?}");
    // ... as bob, with a UID, a group and extra values; and a forged impersonation of the
    // superuser group it may not take is refused before anything is sent.
    let as_bob = hub
        .send(
            hub.request(Method::GET, &proxy("retail", "pods-1", pod), Some(ROOT))
                .header("impersonate-user", "bob")
                .header("impersonate-uid", "uid-bob")
                .header("impersonate-group", "team-b")
                .header("impersonate-extra-scopes.example.com%2fteam", "gpu")
                .header("impersonate-extra-scopes.example.com%2fteam", "ml")
                .body(body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(as_bob.status, StatusCode::OK, "{as_bob:?}");
    let forged = hub
        .send(
            hub.request(
                Method::GET,
                &proxy("retail", "pods-1", pod),
                Some("vera-secret-token"),
            )
            .header("impersonate-user", "root")
            .header("impersonate-group", "system:masters")
            .body(body::empty())
            .unwrap(),
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN, "{forged:?}");

    let sent = hub.tunnels.sent();
    assert_eq!(
        sent.len(),
        3,
        "get, exec and bob's get reached the edge; the forgery did not"
    );
    for head in &sent {
        assert!(
            head.headers.get("authorization").is_none(),
            "{} {}",
            head.method,
            head.uri
        );
        for (name, value) in &head.headers {
            assert!(
                !String::from_utf8_lossy(value.as_bytes()).contains("secret-token"),
                "the caller's token reached the edge in {name}"
            );
        }
    }
    let values = |head: &http::request::Parts, name: &str| -> Vec<String> {
        head.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    };
    let (get, exec, bob) = (&sent[0], &sent[1], &sent[2]);
    assert_eq!(get.uri.path(), pod);
    assert_eq!(values(get, "impersonate-user"), ["root"]);
    assert_eq!(values(get, "impersonate-uid"), ["uid-root"]);
    assert_eq!(
        values(get, "impersonate-group"),
        ["system:masters", "system:authenticated"]
    );
    assert_eq!(exec.uri.path(), format!("{pod}/exec"));
    assert_eq!(values(exec, "impersonate-user"), ["root"]);
    assert!(
        exec.headers.get("upgrade").is_none(),
        "the upgrade is an extended CONNECT"
    );
    assert_eq!(values(bob, "impersonate-user"), ["bob"]);
    assert_eq!(values(bob, "impersonate-uid"), ["uid-bob"]);
    let groups = values(bob, "impersonate-group");
    assert!(
        groups.contains(&"team-b".into()) && !groups.contains(&"system:masters".into()),
        "{groups:?}"
    );
    let extra: Vec<(String, Vec<String>)> = bob
        .headers
        .keys()
        .filter_map(|n| n.as_str().strip_prefix("impersonate-extra-"))
        .map(|key| {
            let decoded = percent_encoding::percent_decode_str(key)
                .decode_utf8_lossy()
                .into_owned();
            (decoded, values(bob, &format!("impersonate-extra-{key}")))
        })
        .collect();
    assert_eq!(
        extra,
        [(
            "scopes.example.com/team".to_string(),
            vec!["gpu".to_string(), "ml".to_string()]
        )]
    );
}

#[tokio::test]
async fn watch_yes_1_and_false_classify_the_same_in_router_and_audit() {
    let hub = hub().await;
    hub.cluster("retail", "edge-1").await;
    hub.tunnels.connect("retail", "edge-1");
    for (value, verb) in [("yes", "watch"), ("1", "watch"), ("false", "list")] {
        // The router: a watch answers with a stream of events, a list with a list.
        let uri = format!("{}?watch={value}&timeoutSeconds=1", environments());
        let response = hub.as_user(ROOT, Method::GET, &uri, None).await;
        assert_eq!(response.status, StatusCode::OK);
        let id = response.audit_id();
        let first = response
            .body
            .split(|b| *b == b'\n')
            .next()
            .unwrap_or_default();
        let first: serde_json::Value = serde_json::from_slice(first).unwrap();
        let served = if first["type"] == "ADDED" {
            "watch"
        } else {
            assert_eq!(first["kind"], "EnvironmentList", "{first}");
            "list"
        };
        assert_eq!(served, verb, "?watch={value} served as {first}");
        // The audit: the same verb.
        let events = eventually!(
            {
                let events = hub.events_of(&id);
                events
                    .iter()
                    .any(|e| e["stage"] == "ResponseComplete")
                    .then_some(events)
            },
            "the request's record"
        );
        assert!(
            events.iter().all(|e| e["verb"] == verb),
            "?watch={value}: {events:?}"
        );

        // Through the proxy the edge cluster classifies it; the hub's record says the same.
        let proxied = hub
            .as_user(
                ROOT,
                Method::GET,
                &proxy("retail", "edge-1", &format!("/api/v1/pods?watch={value}")),
                None,
            )
            .await;
        let events = hub.events_of(&proxied.audit_id());
        assert!(
            !events.is_empty() && events.iter().all(|e| e["verb"] == verb),
            "proxied ?watch={value}: {events:?}"
        );
    }
}

/// Moved from the end-to-end `a_disconnected_cluster_answers_503_and_an_unknown_one_404`
/// (which keeps what needs a real agent: the tunnel going away).
#[tokio::test]
async fn a_disconnected_cluster_answers_503_and_an_unknown_one_404() {
    let hub = hub().await;
    hub.cluster("retail", "store-1").await;
    hub.cluster("retail", "never-connected").await;
    hub.tunnels.connect("retail", "store-1");
    let get = |cluster: &'static str| {
        let hub = &hub;
        async move {
            hub.as_user(
                ROOT,
                Method::GET,
                &proxy(
                    "retail",
                    cluster,
                    "/apis/edgefleet.io/v1alpha1/environments",
                ),
                None,
            )
            .await
        }
    };

    let connected = get("store-1").await;
    assert_eq!(connected.status, StatusCode::OK, "{connected:?}");

    let disconnected = get("never-connected").await;
    assert_eq!(
        disconnected.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{disconnected:?}"
    );
    let body = disconnected.json();
    assert_eq!(body["kind"], "Status");
    assert_eq!(body["reason"], "ServiceUnavailable");
    assert_eq!(body["code"], 503);
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("cluster retail/never-connected is not connected"),
        "{body}"
    );

    let unknown = get("no-such-cluster").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{unknown:?}");
    let body = unknown.json();
    assert_eq!(body["reason"], "NotFound");
    assert_eq!(
        body["message"],
        r#"clusters.edgefleet.io "no-such-cluster" not found"#
    );
}

/// Moved from the end-to-end proxy test: the agent's own paths (desired bundles, content,
/// facts) are the hub's; no caller may reach them through the proxy, not even an admin,
/// connected or not.
#[tokio::test]
async fn the_agent_s_own_paths_cannot_be_proxied() {
    let hub = hub().await;
    hub.cluster("retail", "store-1").await;
    hub.cluster("retail", "never-connected").await;
    hub.tunnels.connect("retail", "store-1");
    for cluster in ["store-1", "never-connected"] {
        for (method, path) in [
            (Method::PUT, "/.well-known/edgefleet/bundle"),
            (Method::PUT, "/.well-known/edgefleet/content/00"),
            (Method::GET, "/.well-known/edgefleet/facts"),
        ] {
            let body = (method == Method::PUT).then(|| json!({}));
            let refused = hub
                .as_user(ROOT, method, &proxy("retail", cluster, path), body)
                .await;
            assert_eq!(
                refused.status,
                StatusCode::FORBIDDEN,
                "{cluster}{path}: {refused:?}"
            );
            let status = refused.json();
            assert_eq!(status["reason"], "Forbidden");
            assert!(
                status["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("edgefleet agent"),
                "{status}"
            );
        }
    }
    assert!(hub.tunnels.sent().is_empty(), "nothing reached the agent");
}
