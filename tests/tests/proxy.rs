//! kubectl to an edge cluster through the hub's `clusters/{name}/proxy`, end to end with real
//! processes:
//!
//! ```text
//! kubectl ──► hub (edgefleet-apiserver dev) ──tunnel──► edgefleet-agent run ──► upstream
//!   kubeconfig from `edgefleet-apiserver kubeconfig --cluster env/name`
//! ```
//!
//! The upstream is a second `edgefleet-apiserver dev` (a real Kubernetes API server for the
//! edgefleet kinds, with RBAC and impersonation of its own) for the management verbs and
//! authorization, and the pods test double ([`edgefleet_e2e::pods`]) where the test needs to see
//! the headers the edge receives. The streaming protocols are in `remote_command.rs`.

use std::path::Path;
use std::time::Duration;

use edgefleet_api::testing;
use edgefleet_e2e::client::HubClient;
use edgefleet_e2e::edge::{register_cluster, EdgeAgent};
use edgefleet_e2e::hub::{DevConfig, Hub};
use edgefleet_e2e::kubectl::{stop, Kubectl, Lines};
use edgefleet_e2e::pods::{self, PodServer};
use edgefleet_testkit::eventually;
use http::{Method, StatusCode};
use serde_json::Value;

/// How long a watch event may take to arrive through hub, tunnel and agent on a busy machine.
const EVENT_DEADLINE: Duration = Duration::from_secs(30);

/// An Environment labelled `tier=<tier>`, as YAML.
fn environment(name: &str, tier: &str) -> String {
    testing::environment(name).label("tier", tier).yaml()
}

/// `get -w` printing one `TYPE NAME TIER` line per event.
fn watch_environments(k: &Kubectl) -> (std::process::Child, Lines) {
    let mut child = k.spawn(&[
        "get",
        "environments",
        "--watch",
        "--output-watch-events",
        "-o",
        r#"jsonpath={.type} {.object.metadata.name} {.object.metadata.labels.tier}{"\n"}"#,
    ]);
    let lines = Lines::new(child.stdout.take().expect("piped"));
    (child, lines)
}

#[test]
fn get_watch_apply_patch_delete_and_discovery_run_unchanged_through_the_proxy() {
    let hub = Hub::dev().expect("hub starts");
    let edge = Hub::dev().expect("the edge cluster's API server starts");
    let _agent = EdgeAgent::start(&hub, "retail", "store-1", &edge.kubeconfig).expect("agent");
    let k = Kubectl::new(
        &hub.cluster_kubeconfig(&hub.kubeconfig, "retail", "store-1")
            .unwrap(),
    );

    // Discovery, as kubectl does it (aggregated or legacy), through the proxy.
    let resources = k.ok(&["api-resources", "-o", "name"]);
    for kind in [
        "environments.edgefleet.io",
        "clusters.edgefleet.io",
        "namespaces",
    ] {
        assert!(
            resources.lines().any(|l| l == kind),
            "{kind} in {resources}"
        );
    }

    let (watch, mut events) = watch_environments(&k);
    // The watch is established once kubectl has listed (an empty list: no event yet); an object
    // created now arrives as ADDED whether the watch started before or after it.
    let created = k.ok_stdin(
        &["apply", "-f", "-"],
        Some(environment("site-a", "edge").as_bytes()),
    );
    assert!(
        created.contains("environment.edgefleet.io/site-a created"),
        "{created}"
    );
    events.wait_for(EVENT_DEADLINE, |l| l == "ADDED site-a edge");

    // The object is on the edge cluster, not on the hub.
    assert_eq!(
        edge.ok(&[
            "get",
            "environment",
            "site-a",
            "-o",
            "jsonpath={.metadata.name}"
        ]),
        "site-a"
    );
    let on_hub = hub.fails(&["get", "environment", "site-a"], None);
    assert!(on_hub.contains("NotFound"), "{on_hub}");

    assert_eq!(
        k.ok(&[
            "get",
            "environment",
            "site-a",
            "-o",
            "jsonpath={.metadata.labels.tier}"
        ]),
        "edge"
    );
    let table = k.ok(&["get", "environments"]);
    assert!(
        table.lines().next().unwrap_or_default().starts_with("NAME") && table.contains("site-a"),
        "server-side printing through the proxy: {table}"
    );

    k.ok(&[
        "patch",
        "environment",
        "site-a",
        "--type=merge",
        "-p",
        r#"{"metadata":{"labels":{"tier":"core"}}}"#,
    ]);
    events.wait_for(EVENT_DEADLINE, |l| l == "MODIFIED site-a core");
    assert_eq!(
        edge.ok(&[
            "get",
            "environment",
            "site-a",
            "-o",
            "jsonpath={.metadata.labels.tier}"
        ]),
        "core"
    );

    // Server-side apply of a change, then delete.
    k.ok_stdin(
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=e2e",
            "-f",
            "-",
        ],
        Some(environment("site-a", "far-edge").as_bytes()),
    );
    events.wait_for(EVENT_DEADLINE, |l| l == "MODIFIED site-a far-edge");
    k.ok(&["delete", "environment", "site-a"]);
    events.wait_for(EVENT_DEADLINE, |l| l.starts_with("DELETED site-a"));
    let gone = edge.fails(&["get", "environment", "site-a"], None);
    assert!(gone.contains("NotFound"), "{gone}");
    stop(watch);
}

/// Static tokens of the hub: `token,user,uid,"groups"`.
const HUB_TOKENS: &str = "\
alice-secret-token,alice,uid-alice,\"retail-ops\"
carol-secret-token,carol,uid-carol,\"retail-auditors\"
vera-secret-token,vera,uid-vera,\"edgefleet:viewers\"
root-secret-token,root,uid-root,\"system:masters\"
";

fn binding(kind: &str, name: &str, namespace: Option<&str>, role: &str, group: &str) -> String {
    let namespace = namespace
        .map(|ns| format!("  namespace: {ns}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: {kind}\nmetadata:\n  name: {name}\n{namespace}\
         roleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: {role}\n\
         subjects:\n- apiGroup: rbac.authorization.k8s.io\n  kind: Group\n  name: {group}\n"
    )
}

/// The hub's policy: in environment `retail`, `retail-ops` and `retail-auditors` may use every
/// proxy verb (edgefleet-operator); nobody of them has anything in `logistics`.
fn hub_rbac() -> String {
    [
        binding(
            "RoleBinding",
            "retail-ops",
            Some("retail"),
            "edgefleet-operator",
            "retail-ops",
        ),
        binding(
            "RoleBinding",
            "retail-auditors",
            Some("retail"),
            "edgefleet-operator",
            "retail-auditors",
        ),
    ]
    .join("---\n")
}

/// The edge cluster's own policy: `retail-ops` administers it, `retail-auditors` only reads.
fn edge_rbac() -> String {
    [
        binding(
            "ClusterRoleBinding",
            "retail-ops",
            None,
            "edgefleet-admin",
            "retail-ops",
        ),
        binding(
            "ClusterRoleBinding",
            "retail-auditors",
            None,
            "edgefleet-viewer",
            "retail-auditors",
        ),
    ]
    .join("---\n")
}

fn user(hub: &Hub, name: &str, environment: &str, cluster: &str) -> Kubectl {
    let token = format!("{name}-secret-token");
    let base = hub.token_kubeconfig(name, &token).unwrap();
    Kubectl::new(&hub.cluster_kubeconfig(&base, environment, cluster).unwrap())
}

#[test]
fn rbac_separates_environments_lets_viewers_read_and_the_edge_authorizes_the_caller() {
    let hub_rbac = hub_rbac();
    let hub = Hub::dev_with(DevConfig {
        tokens: Some(HUB_TOKENS),
        rbac: Some(&hub_rbac),
        ..DevConfig::default()
    })
    .expect("hub starts");
    let edge_rbac = edge_rbac();
    let edge = Hub::dev_with(DevConfig {
        rbac: Some(&edge_rbac),
        ..DevConfig::default()
    })
    .expect("the edge cluster's API server starts");
    let _agent = EdgeAgent::start(&hub, "retail", "store-1", &edge.kubeconfig).expect("agent");
    register_cluster(&hub, "logistics", "depot-1");

    // alice (retail-ops): everything in retail's cluster.
    let alice = user(&hub, "alice", "retail", "store-1");
    alice.ok_stdin(
        &["apply", "-f", "-"],
        Some(environment("alice-site", "edge").as_bytes()),
    );
    assert_eq!(
        edge.ok(&[
            "get",
            "environment",
            "alice-site",
            "-o",
            "jsonpath={.metadata.name}"
        ]),
        "alice-site"
    );
    alice.ok(&["delete", "environment", "alice-site"]);

    // ... and nothing in logistics': a 403 from the hub, whose Status names what is missing.
    // (kubectl shows discovery's 403 without its message; `get --raw` on the hub shows it.)
    let alice_logistics = user(&hub, "alice", "logistics", "depot-1");
    let denied = alice_logistics.fails(&["get", "environments"]);
    assert!(denied.contains("Error from server (Forbidden)"), "{denied}");
    let alice_hub = Kubectl::new(&hub.token_kubeconfig("alice", "alice-secret-token").unwrap());
    let denied = alice_hub.fails(&[
        "get",
        "--raw",
        "/apis/edgefleet.io/v1alpha1/namespaces/logistics/clusters/depot-1/proxy/apis/edgefleet.io/v1alpha1/environments",
    ]);
    assert!(
        denied.contains(
            r#"Error from server (Forbidden): clusters.edgefleet.io "depot-1" is forbidden: User "alice" cannot get resource "clusters/proxy" in API group "edgefleet.io" in the namespace "logistics""#
        ),
        "{denied}"
    );

    // vera (edgefleet:viewers): get and watch through the proxy, but no delete or create.
    edge.ok_stdin(&["apply", "-f", "-"], Some(&environment("shared", "edge")));
    let vera = user(&hub, "vera", "retail", "store-1");
    assert_eq!(
        vera.ok(&[
            "get",
            "environment",
            "shared",
            "-o",
            "jsonpath={.metadata.labels.tier}"
        ]),
        "edge"
    );
    let (watch, mut events) = watch_environments(&vera);
    events.wait_for(EVENT_DEADLINE, |l| l == "ADDED shared edge");
    edge.ok(&["label", "environment", "shared", "tier=core", "--overwrite"]);
    events.wait_for(EVENT_DEADLINE, |l| l == "MODIFIED shared core");
    stop(watch);
    let denied = vera.fails(&["delete", "environment", "shared"]);
    assert!(
        denied.contains(
            r#"User "vera" cannot delete resource "clusters/proxy" in API group "edgefleet.io" in the namespace "retail""#
        ),
        "{denied}"
    );
    let denied = vera.fails(&["label", "environment", "shared", "tier=x", "--overwrite"]);
    assert!(
        denied.contains(r#"User "vera" cannot patch resource "clusters/proxy""#),
        "{denied}"
    );

    // carol (retail-auditors): the hub lets her delete through the proxy, the edge cluster's
    // own RBAC does not — judged as carol (user and groups), not as the agent.
    let carol = user(&hub, "carol", "retail", "store-1");
    assert!(carol
        .ok(&["get", "environments", "-o", "name"])
        .contains("environment.edgefleet.io/shared"));
    let denied = carol.fails(&["delete", "environment", "shared"]);
    assert!(
        denied.contains(
            r#"environments.edgefleet.io "shared" is forbidden: User "carol" cannot delete resource "environments" in API group "edgefleet.io" at the cluster scope"#
        ),
        "{denied}"
    );
    assert_eq!(
        edge.ok(&[
            "get",
            "environment",
            "shared",
            "-o",
            "jsonpath={.metadata.name}"
        ]),
        "shared"
    );
}

/// `base` (root's token) impersonating bob: UID, a group and extra values, as kubectl's `--as`
/// flags would (the kubeconfig is the only way to give kubectl user extras).
fn impersonating_kubeconfig(hub: &Hub, base: &Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(base).unwrap();
    let mut config: Value = serde_yaml_ng::from_str(&text).unwrap();
    let user = &mut config["users"][0]["user"];
    user["as"] = "bob".into();
    user["as-uid"] = "uid-bob".into();
    user["as-groups"] = serde_json::json!(["team-b"]);
    user["as-user-extra"] = serde_json::json!({"scopes.example.com/team": ["gpu", "ml"]});
    let path = hub.dir.path().join("root-as-bob.kubeconfig");
    std::fs::write(&path, serde_yaml_ng::to_string(&config).unwrap()).unwrap();
    path
}

/// `%2F` → `/`: header names carry extra keys URL-escaped.
fn unescape(key: &str) -> String {
    percent_encoding::percent_decode_str(key)
        .decode_utf8_lossy()
        .into_owned()
}

#[test]
fn the_edge_receives_the_caller_as_impersonation_headers_and_never_the_callers_token() {
    // bob, whom root impersonates below, reads through the proxy in retail.
    let rbac = binding(
        "RoleBinding",
        "team-b",
        Some("retail"),
        "edgefleet-viewer",
        "team-b",
    );
    let hub = Hub::dev_with(DevConfig {
        tokens: Some(HUB_TOKENS),
        rbac: Some(&rbac),
        ..DevConfig::default()
    })
    .expect("hub starts");
    let upstream = PodServer::start().expect("test upstream starts");
    let upstream_kubeconfig = hub.dir.path().join("upstream.kubeconfig");
    upstream.write_kubeconfig(&upstream_kubeconfig).unwrap();
    let _agent = EdgeAgent::start(&hub, "retail", "pods-1", &upstream_kubeconfig).expect("agent");
    let pod_path = format!(
        "/api/v1/namespaces/{}/pods/{}",
        pods::api::NAMESPACE,
        pods::api::POD
    );

    // root (system:masters, bearer token) reads the pod, and execs in it.
    let root = user(&hub, "root", "retail", "pods-1");
    assert_eq!(
        root.ok(&["get", "pod", pods::api::POD, "-o", "name"]),
        "pod/edge-pod\n"
    );
    assert_eq!(
        root.ok(&["exec", pods::api::POD, "--", "echo", "hi"]),
        "hi\n"
    );
    // ... as bob, with a UID, a group and extra values (kubectl's --as, from the kubeconfig).
    let root_base = hub.token_kubeconfig("root", "root-secret-token").unwrap();
    let as_bob = Kubectl::new(
        &hub.cluster_kubeconfig(
            &impersonating_kubeconfig(&hub, &root_base),
            "retail",
            "pods-1",
        )
        .unwrap(),
    );
    assert_eq!(
        as_bob.ok(&["get", "pod", pods::api::POD, "-o", "name"]),
        "pod/edge-pod\n"
    );

    let requests = upstream.requests();
    let agent_credential = format!("Bearer {}", upstream.token);
    for request in &requests {
        // (Messages name requests, never their credentials.)
        assert!(
            request.header_values("authorization") == std::slice::from_ref(&agent_credential),
            "the edge sees the agent's credential only: {} {}",
            request.method,
            request.uri
        );
        for (name, value) in &request.headers {
            let value = String::from_utf8_lossy(value.as_bytes());
            assert!(
                !value.contains("root-secret-token"),
                "the caller's token reached the edge in {name}"
            );
        }
    }
    let of = |path: &str, user: &str| {
        requests
            .iter()
            .find(|r| {
                r.uri.path() == path && r.header_values("impersonate-user") == [user.to_string()]
            })
            .unwrap_or_else(|| {
                let seen: Vec<String> = requests.iter().map(|r| r.uri.to_string()).collect();
                panic!("a request for {path} as {user} among {seen:?}")
            })
            .clone()
    };
    let get = of(&pod_path, "root");
    assert_eq!(get.header_values("impersonate-uid"), ["uid-root"]);
    assert_eq!(
        get.header_values("impersonate-group"),
        ["system:masters", "system:authenticated"]
    );
    let exec = of(&format!("{pod_path}/exec"), "root");
    assert_eq!(exec.header_values("impersonate-uid"), ["uid-root"]);
    assert!(exec
        .header_values("impersonate-group")
        .contains(&"system:masters".to_string()));
    assert_eq!(exec.header_values("upgrade"), ["websocket"]);

    let bob = of(&pod_path, "bob");
    assert_eq!(bob.header_values("impersonate-uid"), ["uid-bob"]);
    assert!(
        bob.header_values("impersonate-group")
            .contains(&"team-b".to_string())
            && !bob
                .header_values("impersonate-group")
                .contains(&"system:masters".to_string()),
        "{:?}",
        bob.header_values("impersonate-group")
    );
    let extra: Vec<(String, Vec<String>)> = bob
        .headers
        .keys()
        .filter_map(|name| name.as_str().strip_prefix("impersonate-extra-"))
        .map(|key| {
            (
                unescape(key),
                bob.header_values(&format!("impersonate-extra-{key}")),
            )
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

/// What a disconnected or unknown cluster answers is proved in process
/// (`apiserver/tests/request_path.rs`, `a_disconnected_cluster_answers_503_and_an_unknown_one_404`);
/// this is what needs a real agent and tunnel: the tunnel going away.
#[test]
fn a_cluster_whose_agent_goes_away_answers_503_at_once() {
    let hub = Hub::dev().expect("hub starts");
    let edge = Hub::dev().expect("the edge cluster's API server starts");
    let mut agent = EdgeAgent::start(&hub, "retail", "store-1", &edge.kubeconfig).expect("agent");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = runtime
        .block_on(HubClient::connect(&hub.kubeconfig, 1))
        .expect("client");
    let get = |cluster: &str| -> (StatusCode, Value) {
        let path = format!(
            "/apis/edgefleet.io/v1alpha1/namespaces/retail/clusters/{cluster}/proxy/apis/edgefleet.io/v1alpha1/environments"
        );
        let (status, body) = runtime
            .block_on(client.call(Method::GET, &path, None, bytes::Bytes::new()))
            .expect("the hub answers");
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    };

    let (status, list) = get("store-1");
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["kind"], "EnvironmentList");

    // The agent goes away. Until the hub has noticed, a request may still succeed or fail on
    // the dying tunnel (503 "proxying ... failed"); then every one answers 503 "not connected"
    // at once, never hanging until some timeout.
    agent.kill();
    eventually!(
        blocking,
        within = Duration::from_secs(30),
        {
            let (status, body) = get("store-1");
            assert!(
                status == StatusCode::OK || status == StatusCode::SERVICE_UNAVAILABLE,
                "{status}: {body}"
            );
            let message = body["message"].as_str().unwrap_or_default();
            message
                .contains("cluster retail/store-1 is not connected")
                .then_some(())
        },
        "the hub to answer that store-1 is not connected"
    );
    // kubectl says so too.
    let k = Kubectl::new(
        &hub.cluster_kubeconfig(&hub.kubeconfig, "retail", "store-1")
            .unwrap(),
    );
    let said = k.fails(&["get", "environments"]);
    assert!(
        said.contains("Error from server (ServiceUnavailable)"),
        "{said}"
    );
    let said = Kubectl::new(&hub.kubeconfig).fails(&[
        "get",
        "--raw",
        "/apis/edgefleet.io/v1alpha1/namespaces/retail/clusters/store-1/proxy/api",
    ]);
    assert!(
        said.contains(
            "Error from server (ServiceUnavailable): cluster retail/store-1 is not connected"
        ),
        "{said}"
    );
}
