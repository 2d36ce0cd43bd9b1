use http_body_util::BodyExt;
use serde_json::Value;

use super::*;
use crate::simulate::cluster::{ClusterShape, World};

const DAY: i64 = 24 * 3600;
const TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
const AGGREGATED: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";

fn started() -> Timestamp {
    Timestamp::from_second(1_700_000_000).unwrap()
}

fn cluster() -> SimulatedCluster {
    let world = World::new(ClusterShape::default(), started()).unwrap();
    SimulatedCluster::new("retail", "store-1", world)
}

/// A request as kubectl sends it, answered five days after the cluster was created.
fn get(path: &str, accept: Option<&'static str>) -> Response<TunnelBody> {
    request(Method::GET, path, accept)
}

fn request(method: Method, path: &str, accept: Option<&'static str>) -> Response<TunnelBody> {
    let mut builder = Request::builder().method(method).uri(path);
    if let Some(accept) = accept {
        builder = builder.header(http::header::ACCEPT, accept);
    }
    let (parts, ()) = builder.body(()).unwrap().into_parts();
    let now = Timestamp::from_second(started().as_second() + 5 * DAY).unwrap();
    respond(&cluster(), &parts, now)
}

async fn body_json(response: Response<TunnelBody>) -> Value {
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}

fn content_type(response: &Response<TunnelBody>) -> &str {
    response.headers()[http::header::CONTENT_TYPE]
        .to_str()
        .unwrap()
}

#[tokio::test]
async fn version_names_the_simulated_kubernetes() {
    let v = body_json(get("/version", None)).await;
    assert_eq!(v["gitVersion"], "v1.31.4+k3s1");
    assert_eq!(
        (v["major"].as_str(), v["minor"].as_str()),
        (Some("1"), Some("31"))
    );
    assert_eq!(v["platform"], "linux/amd64");
}

#[tokio::test]
async fn legacy_discovery_serves_the_core_group_only() {
    let api = body_json(get("/api", Some("application/json"))).await;
    assert_eq!(api["kind"], "APIVersions");
    assert_eq!(api["versions"], serde_json::json!(["v1"]));

    let apis = body_json(get("/apis", None)).await;
    assert_eq!(apis["kind"], "APIGroupList");
    assert_eq!(apis["groups"], serde_json::json!([]));

    let v1 = body_json(get("/api/v1", None)).await;
    assert_eq!(v1["kind"], "APIResourceList");
    assert_eq!(v1["groupVersion"], "v1");
    let resources: Vec<(&str, &str, bool)> = v1["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap(),
                r["kind"].as_str().unwrap(),
                r["namespaced"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        resources,
        [("namespaces", "Namespace", false), ("nodes", "Node", false)]
    );
    assert_eq!(
        v1["resources"][1]["verbs"],
        serde_json::json!(["get", "list", "watch"])
    );
    assert_eq!(v1["resources"][1]["shortNames"], serde_json::json!(["no"]));
}

#[tokio::test]
async fn aggregated_discovery_is_served_when_asked_for() {
    let response = get("/api", Some(AGGREGATED));
    assert_eq!(content_type(&response), AGGREGATED_DISCOVERY_CONTENT_TYPE);
    let api = body_json(response).await;
    assert_eq!(api["kind"], "APIGroupDiscoveryList");
    assert_eq!(api["apiVersion"], "apidiscovery.k8s.io/v2");
    let version = &api["items"][0]["versions"][0];
    assert_eq!(version["version"], "v1");
    assert_eq!(version["freshness"], "Current");
    let node = &version["resources"][1];
    assert_eq!(node["resource"], "nodes");
    assert_eq!(node["scope"], "Cluster");
    assert_eq!(
        node["responseKind"],
        serde_json::json!({"group": "", "version": "v1", "kind": "Node"})
    );

    let response = get("/apis", Some(AGGREGATED));
    assert_eq!(content_type(&response), AGGREGATED_DISCOVERY_CONTENT_TYPE);
    let apis = body_json(response).await;
    assert_eq!(apis["kind"], "APIGroupDiscoveryList");
    assert_eq!(apis["items"], serde_json::json!([]));
}

#[tokio::test]
async fn nodes_list_as_json_with_realistic_status() {
    let response = get("/api/v1/nodes?limit=500", Some("application/json"));
    assert_eq!(content_type(&response), "application/json");
    let list = body_json(response).await;
    assert_eq!(list["kind"], "NodeList");
    assert_eq!(list["apiVersion"], "v1");
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    let node = &items[0];
    assert_eq!(node["kind"], "Node");
    assert_eq!(node["metadata"]["name"], "store-1-node-0");
    let labels = &node["metadata"]["labels"];
    assert_eq!(labels["kubernetes.io/hostname"], "store-1-node-0");
    assert_eq!(labels["nvidia.com/gpu.product"], "NVIDIA-L4");
    assert_eq!(node["status"]["capacity"]["nvidia.com/gpu"], "2");
    assert_eq!(node["status"]["allocatable"]["nvidia.com/gpu"], "2");
    assert_eq!(node["status"]["capacity"]["pods"], "110");
    assert_eq!(node["status"]["nodeInfo"]["kubeletVersion"], "v1.31.4+k3s1");
    let ready = node["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap();
    assert_eq!(ready["status"], "True");
}

#[tokio::test]
async fn nodes_list_as_a_table_has_kubectls_columns() {
    let response = get("/api/v1/nodes?limit=500", Some(TABLE));
    assert_eq!(content_type(&response), TABLE_CONTENT_TYPE);
    let table = body_json(response).await;
    assert_eq!(table["kind"], "Table");
    assert_eq!(table["apiVersion"], "meta.k8s.io/v1");
    let columns: Vec<(&str, i64)> = table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["priority"].as_i64().unwrap()))
        .collect();
    assert_eq!(
        columns,
        [
            ("Name", 0),
            ("Status", 0),
            ("Roles", 0),
            ("Age", 0),
            ("Version", 0),
            ("Internal-IP", 1),
            ("External-IP", 1),
            ("OS-Image", 1),
            ("Kernel-Version", 1),
            ("Container-Runtime", 1),
        ]
    );
    let rows = table["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    let cells = |i: usize| rows[i]["cells"].as_array().unwrap().clone();
    assert_eq!(
        cells(0)[..5],
        [
            Value::from("store-1-node-0"),
            Value::from("Ready"),
            Value::from("control-plane,master"),
            Value::from("5d"),
            Value::from("v1.31.4+k3s1")
        ]
    );
    assert_eq!(cells(1)[2], "<none>");
    assert!(cells(1)[5].as_str().unwrap().starts_with("10."));
    assert_eq!(cells(1)[6], "<none>");
    // kubectl reads names and labels from each row's metadata.
    assert_eq!(rows[0]["object"]["kind"], "PartialObjectMetadata");
    assert_eq!(rows[0]["object"]["metadata"]["name"], "store-1-node-0");

    let bare = body_json(get("/api/v1/nodes?includeObject=None", Some(TABLE))).await;
    assert!(bare["rows"][0].get("object").is_none());
}

#[tokio::test]
async fn namespaces_as_json_and_as_a_table() {
    let list = body_json(get("/api/v1/namespaces", None)).await;
    assert_eq!(list["kind"], "NamespaceList");
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["default", "kube-node-lease", "kube-public", "kube-system"]
    );
    assert_eq!(list["items"][0]["status"]["phase"], "Active");

    let table = body_json(get("/api/v1/namespaces", Some(TABLE))).await;
    let columns: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(columns, ["Name", "Status", "Age"]);
    assert_eq!(
        table["rows"][3]["cells"],
        serde_json::json!(["kube-system", "Active", "5d"])
    );
}

#[tokio::test]
async fn lists_honour_label_and_field_selectors() {
    let names = |list: Value| -> Vec<String> {
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["metadata"]["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let control_plane = body_json(get(
        "/api/v1/nodes?labelSelector=node-role.kubernetes.io%2Fcontrol-plane%3Dtrue",
        None,
    ))
    .await;
    assert_eq!(names(control_plane), ["store-1-node-0"]);
    let workers = body_json(get(
        "/api/v1/nodes?labelSelector=node-role.kubernetes.io%2Fcontrol-plane%21%3Dtrue",
        None,
    ))
    .await;
    assert_eq!(names(workers), ["store-1-node-1", "store-1-node-2"]);
    let none = body_json(get(
        "/api/v1/nodes?labelSelector=nvidia.com%2Fgpu.product%3DH100",
        None,
    ))
    .await;
    assert!(names(none).is_empty());
    let by_name = body_json(get(
        "/api/v1/namespaces?fieldSelector=metadata.name%3Ddefault",
        None,
    ))
    .await;
    assert_eq!(names(by_name), ["default"]);

    let table = body_json(get(
        "/api/v1/nodes?labelSelector=kubernetes.io%2Fhostname%3Dstore-1-node-2",
        Some(TABLE),
    ))
    .await;
    assert_eq!(table["rows"].as_array().unwrap().len(), 1);

    let bad = get("/api/v1/nodes?labelSelector=tier%20in%20(a", None);
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    assert_eq!(body_json(bad).await["kind"], "Status");
    let bad = get(
        "/api/v1/nodes?fieldSelector=spec.unschedulable%3Dtrue",
        None,
    );
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn selectors_and_table_options_the_hub_refuses_are_refused() {
    // The simulator's own parser used to accept these; the hub's (now the one parser) does not.
    for uri in [
        "/api/v1/nodes?labelSelector=tier%3Da%20b",
        "/api/v1/nodes?labelSelector=Tier%20Key%3Dx",
        "/api/v1/nodes?labelSelector=tier%3D-edge",
        "/api/v1/nodes?labelSelector=tier%20in%20(a)b",
        "/api/v1/namespaces?fieldSelector=metadata.name%3Da%3Db",
        "/api/v1/namespaces?fieldSelector=metadata.name%3Da%5Cb",
    ] {
        let response = get(uri, None);
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{uri}");
        let status = body_json(response).await;
        assert_eq!(status["reason"], "BadRequest", "{uri}");
    }
    let bad = get("/api/v1/nodes?includeObject=Everything", Some(TABLE));
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let message = body_json(bad).await["message"].as_str().unwrap().to_owned();
    assert!(
        message.starts_with("includeObject: Unsupported value"),
        "{message}"
    );
    // A watch flag is never refused: `?watch=yes` is a watch, as on the hub.
    let watch = get("/api/v1/nodes?watch=yes&timeoutSeconds=0", None);
    assert_eq!(watch.status(), StatusCode::OK);
}

#[tokio::test]
async fn single_objects_as_json_and_table_and_missing_ones_as_404() {
    let node = body_json(get("/api/v1/nodes/store-1-node-1", None)).await;
    assert_eq!(node["kind"], "Node");
    assert_eq!(node["metadata"]["name"], "store-1-node-1");
    let table = body_json(get("/api/v1/nodes/store-1-node-1", Some(TABLE))).await;
    assert_eq!(table["rows"].as_array().unwrap().len(), 1);
    let ns = body_json(get("/api/v1/namespaces/kube-system", None)).await;
    assert_eq!(ns["kind"], "Namespace");

    let missing = get("/api/v1/nodes/store-1-node-7", None);
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let status = body_json(missing).await;
    assert_eq!(status["reason"], "NotFound");
    assert_eq!(status["message"], "nodes \"store-1-node-7\" not found");
    assert_eq!(
        get("/api/v1/namespaces/prod", None).status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn anything_else_is_a_404_status_and_writes_are_405() {
    for path in [
        "/api/v1/pods",
        "/api/v1/namespaces/default/pods",
        "/apis/apps/v1",
        "/api/v2",
        "/healthz/x",
        "/api/v1/namespaces/default/pods/p/exec",
    ] {
        let response = get(path, None);
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        let status = body_json(response).await;
        assert_eq!(status["kind"], "Status", "{path}");
        assert_eq!(status["code"], 404, "{path}");
    }
    for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
        let response = request(method.clone(), "/api/v1/nodes/store-1-node-0", None);
        assert_eq!(
            response.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_watch_stays_open_and_silent_until_its_timeout() {
    let response = get(
        "/api/v1/nodes?watch=true&timeoutSeconds=60&resourceVersion=1",
        None,
    );
    assert_eq!(response.status(), StatusCode::OK);
    let started = tokio::time::Instant::now();
    let mut body = response.into_body();
    assert!(body.frame().await.is_none());
    assert_eq!(started.elapsed(), Duration::from_secs(60));
}
