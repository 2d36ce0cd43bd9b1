use proptest::prelude::*;

use super::*;

fn p(method: Method, uri: &str) -> RequestInfo {
    let (path, query) = match uri.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (uri, None),
    };
    parse(&method, path, query)
}

const HUB: &str = "/apis/edgefleet.io/v1alpha1/namespaces/retail/clusters";
const PROXY: &str = "/apis/edgefleet.io/v1alpha1/namespaces/retail/clusters/edge-1/proxy";

/// (method, uri) → (verb, group, version, namespace, resource, name, subresource)
#[test]
fn kube_request_info_table() {
    let cases: &[(Method, &str, [&str; 7])] = &[
        // The hub's own kinds.
        (Method::GET, HUB, ["list", "edgefleet.io", "v1alpha1", "retail", "clusters", "", ""]),
        (Method::GET, "/apis/edgefleet.io/v1alpha1/namespaces/retail/clusters?watch=true&rv=1",
            ["watch", "edgefleet.io", "v1alpha1", "retail", "clusters", "", ""]),
        (Method::GET, "/apis/edgefleet.io/v1alpha1/namespaces/retail/clusters/edge-1",
            ["get", "edgefleet.io", "v1alpha1", "retail", "clusters", "edge-1", ""]),
        (Method::PUT, "/apis/edgefleet.io/v1alpha1/namespaces/retail/clusters/edge-1/status",
            ["update", "edgefleet.io", "v1alpha1", "retail", "clusters", "edge-1", "status"]),
        (Method::DELETE, HUB, ["deletecollection", "edgefleet.io", "v1alpha1", "retail", "clusters", "", ""]),
        (Method::DELETE, "/apis/edgefleet.io/v1alpha1/environments/retail",
            ["delete", "edgefleet.io", "v1alpha1", "", "environments", "retail", ""]),
        (Method::GET, "/apis/edgefleet.io/v1alpha1/clusters?watch=1",
            ["watch", "edgefleet.io", "v1alpha1", "", "clusters", "", ""]),
        (Method::GET, "/apis/edgefleet.io/v1alpha1/watch/namespaces/retail/clusters",
            ["watch", "edgefleet.io", "v1alpha1", "retail", "clusters", "", ""]),
        (Method::GET, "/apis/edgefleet.io/v1alpha1/watch/namespaces/retail/clusters/edge-1",
            ["watch", "edgefleet.io", "v1alpha1", "retail", "clusters", "edge-1", ""]),
        (Method::POST, "/apis/edgefleet.io/v1alpha1/namespaces/retail/clusters/edge-1/proxy/api/v1/namespaces/default/pods",
            ["create", "edgefleet.io", "v1alpha1", "retail", "clusters", "edge-1", "proxy"]),
        (Method::HEAD, HUB, ["list", "edgefleet.io", "v1alpha1", "retail", "clusters", "", ""]),
        (Method::OPTIONS, HUB, ["", "edgefleet.io", "v1alpha1", "retail", "clusters", "", ""]),
        // Edge clusters' paths (proxied requests).
        (Method::POST, "/api/v1/namespaces/default/pods/web-1/exec?command=sh&stdin=true",
            ["create", "", "v1", "default", "pods", "web-1", "exec"]),
        (Method::GET, "/api/v1/namespaces/default/pods/web-1/exec",
            ["get", "", "v1", "default", "pods", "web-1", "exec"]),
        (Method::GET, "/api/v1/namespaces/default/pods", ["list", "", "v1", "default", "pods", "", ""]),
        (Method::GET, "/api/v1/namespaces/default/pods?watch=true&resourceVersion=5",
            ["watch", "", "v1", "default", "pods", "", ""]),
        (Method::GET, "/api/v1/namespaces/default/pods?watch=false", ["list", "", "v1", "default", "pods", "", ""]),
        (Method::GET, "/api/v1/namespaces/default/pods?watch=1&fieldSelector=metadata.name%3Dweb-1",
            ["watch", "", "v1", "default", "pods", "web-1", ""]),
        (Method::GET, "/api/v1/namespaces/default/pods?fieldSelector=spec.nodeName%3Dn1,metadata.name%3D%3Dweb-2",
            ["list", "", "v1", "default", "pods", "web-2", ""]),
        (Method::GET, "/api/v1/namespaces/default/pods?fieldSelector=metadata.name%21%3Dweb-2",
            ["list", "", "v1", "default", "pods", "", ""]),
        (Method::GET, "/api/v1/watch/namespaces/default/pods/web-1",
            ["watch", "", "v1", "default", "pods", "web-1", ""]),
        (Method::POST, "/api/v1/watch/namespaces/default/pods",
            ["watch", "", "v1", "default", "pods", "", ""]),
        (Method::GET, "/api/v1/namespaces/default/pods/web-1/log?follow=true",
            ["get", "", "v1", "default", "pods", "web-1", "log"]),
        (Method::DELETE, "/api/v1/namespaces/default/secrets", ["deletecollection", "", "v1", "default", "secrets", "", ""]),
        (Method::DELETE, "/api/v1/namespaces/default/secrets/s", ["delete", "", "v1", "default", "secrets", "s", ""]),
        (Method::DELETE, "/api/v1/namespaces/default/secrets?fieldSelector=metadata.name%3Ds",
            ["deletecollection", "", "v1", "default", "secrets", "", ""]),
        (Method::PATCH, "/apis/apps/v1/namespaces/shop/deployments/web/scale",
            ["patch", "apps", "v1", "shop", "deployments", "web", "scale"]),
        (Method::PUT, "/apis/apps/v1/namespaces/shop/deployments/web",
            ["update", "apps", "v1", "shop", "deployments", "web", ""]),
        (Method::GET, "/apis/apps/v1/deployments", ["list", "apps", "v1", "", "deployments", "", ""]),
        (Method::GET, "/api/v1/nodes/n1", ["get", "", "v1", "", "nodes", "n1", ""]),
        (Method::GET, "/api/v1/namespaces", ["list", "", "v1", "", "namespaces", "", ""]),
        (Method::GET, "/api/v1/namespaces/default", ["get", "", "v1", "default", "namespaces", "default", ""]),
        (Method::PUT, "/api/v1/namespaces/default/finalize",
            ["update", "", "v1", "default", "namespaces", "default", "finalize"]),
        (Method::GET, "/api/v1/namespaces/default/status",
            ["get", "", "v1", "default", "namespaces", "default", "status"]),
        (Method::GET, "/api/v1/proxy/namespaces/default/pods/web-1/metrics/x",
            ["proxy", "", "v1", "default", "pods", "web-1", ""]),
        (Method::GET, "/api/v1/namespaces/default/services/web:80/proxy/metrics",
            ["get", "", "v1", "default", "services", "web:80", "proxy"]),
        (Method::POST, "/api/v1/namespaces/default/pods/web-1/portforward",
            ["create", "", "v1", "default", "pods", "web-1", "portforward"]),
    ];
    for (method, uri, want) in cases {
        let i = p(method.clone(), uri);
        assert!(i.is_resource_request, "{uri}");
        let got = [
            i.verb.as_str(),
            i.api_group.as_str(),
            i.api_version.as_str(),
            i.namespace.as_str(),
            i.resource.as_str(),
            i.name.as_str(),
            i.subresource.as_str(),
        ];
        assert_eq!(&got, want, "{method} {uri}");
        assert_eq!(i.path, uri.split('?').next().unwrap());
    }
}

#[test]
fn rest_is_what_follows_the_subresource() {
    let i = p(
        Method::POST,
        &format!("{PROXY}/api/v1/namespaces/default/pods"),
    );
    assert_eq!(i.rest, "api/v1/namespaces/default/pods");
    assert_eq!(p(Method::GET, &format!("{PROXY}/")).rest, "");
    let verb = p(
        Method::GET,
        "/api/v1/proxy/namespaces/default/pods/web-1/metrics/x",
    );
    assert_eq!(
        (verb.subresource.as_str(), verb.rest.as_str()),
        ("", "metrics/x")
    );
}

#[test]
fn non_resource_requests() {
    for uri in [
        "/healthz",
        "/version",
        "/api",
        "/api/v1",
        "/apis",
        "/apis/apps",
        "/apis/apps/v1",
        "/apis/edgefleet.io/v1alpha1",
        "/openapi/v2",
        "/openapi/v3",
        "/api/v1/watch",
        "/apis/apps/v1/proxy",
        "/",
        "",
    ] {
        let i = p(Method::GET, uri);
        assert!(!i.is_resource_request, "{uri}");
        assert_eq!(i.verb, "get");
        assert_eq!(i.path, uri);
        assert!(!i.is_long_running());
    }
    assert_eq!(p(Method::POST, "/healthz").verb, "post");
}

#[test]
fn a_field_selector_names_the_object_only_when_the_list_options_decode() {
    let named = |uri: &str| p(Method::GET, uri).name;
    assert_eq!(
        named("/api/v1/pods?fieldSelector=metadata.name%3Dweb"),
        "web"
    );
    for uri in [
        // Not a valid path segment name.
        "/api/v1/pods?fieldSelector=metadata.name%3D..",
        "/api/v1/pods?fieldSelector=metadata.name%3Da%2Fb",
        // The list options do not decode.
        "/api/v1/pods?fieldSelector=metadata.name%3Dweb&limit=x",
        "/api/v1/pods?fieldSelector=metadata.name%3Dweb&timeoutSeconds=",
        "/api/v1/pods?fieldSelector=metadata.name%3Dweb&labelSelector=a+b",
        "/api/v1/pods?fieldSelector=metadata.name%3Dweb,x",
    ] {
        assert_eq!(named(uri), "", "{uri}");
    }
    // Undecodable options still watch when `watch` says so.
    let w = p(
        Method::GET,
        "/api/v1/pods?watch=yes&limit=x&fieldSelector=metadata.name%3Dweb",
    );
    assert_eq!((w.verb.as_str(), w.name.as_str()), ("watch", ""));
}

/// The edge request of a proxied request, as the audit parses it.
fn edge_of(proxied_uri: &str) -> RequestInfo {
    let hub = p(Method::GET, proxied_uri);
    assert_eq!(hub.subresource, "proxy");
    let query = proxied_uri.split_once('?').map(|(_, q)| q);
    parse(&Method::GET, &format!("/{}", hub.rest), query)
}

#[test]
fn watch_query_values_classify_alike_on_hub_and_proxied_paths() {
    for (query, verb) in [
        ("watch=yes", "watch"),
        ("watch=1", "watch"),
        ("watch=true", "watch"),
        ("watch=", "watch"),
        ("watch", "watch"),
        ("watch=false", "list"),
        ("watch=0", "list"),
        ("watch=False", "list"),
        ("", "list"),
    ] {
        let hub = p(Method::GET, &format!("{HUB}?{query}"));
        let edge = edge_of(&format!("{PROXY}/api/v1/namespaces/default/pods?{query}"));
        assert_eq!(hub.verb, verb, "hub path, ?{query}");
        assert_eq!(edge.verb, verb, "proxied path, ?{query}");
        assert_eq!(hub.is_long_running(), verb == "watch", "?{query}");
        assert_eq!(edge.is_long_running(), verb == "watch", "?{query}");
    }
}

#[test]
fn long_running_requests() {
    assert!(p(Method::POST, "/api/v1/namespaces/default/pods/web-1/exec").is_long_running());
    assert!(p(Method::GET, "/api/v1/pods?watch=1").is_long_running());
    assert!(p(Method::GET, "/api/v1/namespaces/a/pods/b/log").is_long_running());
    assert!(p(Method::GET, &format!("{PROXY}/api/v1/pods")).is_long_running());
    assert!(!p(Method::GET, "/api/v1/namespaces/a/pods/b").is_long_running());
}

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("api".to_owned()),
        Just("apis".to_owned()),
        Just("v1".to_owned()),
        Just("namespaces".to_owned()),
        Just("watch".to_owned()),
        Just("proxy".to_owned()),
        Just("status".to_owned()),
        Just("".to_owned()),
        "[a-z0-9.:-]{1,6}",
    ]
}

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        Just(Method::GET),
        Just(Method::HEAD),
        Just(Method::POST),
        Just(Method::PUT),
        Just(Method::PATCH),
        Just(Method::DELETE),
        Just(Method::OPTIONS),
    ]
}

proptest! {
    /// Any path and query parse without panicking, and what they say is consistent.
    #[test]
    fn any_request_parses(method in method(), segments in proptest::collection::vec(segment(), 0..9), query in "\\PC*") {
        let path = format!("/{}", segments.join("/"));
        let info = parse(&method, &path, Some(&query));
        prop_assert_eq!(&info.path, &path);
        if info.is_resource_request {
            prop_assert!(info.api_prefix == "api" || info.api_prefix == "apis");
            prop_assert!(!info.resource.is_empty() || segments.iter().any(String::is_empty));
            prop_assert!(matches!(
                info.verb.as_str(),
                "get" | "list" | "watch" | "create" | "update" | "patch" | "delete" | "deletecollection" | "proxy" | ""
            ));
            if info.verb == "deletecollection" {
                prop_assert!(info.name.is_empty());
            }
            // The path is the segments it was parsed from, in order.
            let mut rebuilt = vec![info.api_prefix.clone()];
            if info.api_prefix == "apis" { rebuilt.push(info.api_group.clone()); }
            rebuilt.push(info.api_version.clone());
            prop_assert!(path.trim_matches('/').starts_with(&rebuilt.join("/")));
        } else {
            prop_assert_eq!(info.verb, method.as_str().to_lowercase());
        }
    }

    /// Arbitrary bytes as path and query never panic.
    #[test]
    fn arbitrary_bytes_never_panic(path in "\\PC*", query in proptest::option::of("\\PC*")) {
        let _ = parse(&Method::GET, &path, query.as_deref());
    }

    /// A named object's path gives back its parts.
    #[test]
    fn object_paths_round_trip(
        group in proptest::option::of("[a-z]{1,5}\\.io"),
        namespace in proptest::option::of("[a-z][a-z0-9-]{0,6}"),
        resource in "[a-z]{1,8}",
        name in "[a-z0-9][a-z0-9.-]{0,8}",
        subresource in proptest::option::of("[a-z]{1,6}"),
    ) {
        prop_assume!(resource != "namespaces" && name != "watch" && name != "proxy");
        prop_assume!(!matches!(resource.as_str(), "watch" | "proxy"));
        let mut path = match &group { Some(g) => format!("/apis/{g}/v1"), None => "/api/v1".to_owned() };
        if let Some(ns) = &namespace { path.push_str(&format!("/namespaces/{ns}")); }
        path.push_str(&format!("/{resource}/{name}"));
        if let Some(sub) = &subresource { path.push_str(&format!("/{sub}")); }
        let info = parse(&Method::GET, &path, None);
        prop_assert!(info.is_resource_request);
        prop_assert_eq!(info.verb, "get");
        prop_assert_eq!(info.api_group, group.unwrap_or_default());
        prop_assert_eq!(info.namespace, namespace.unwrap_or_default());
        prop_assert_eq!(info.resource, resource);
        prop_assert_eq!(info.name, name);
        prop_assert_eq!(info.subresource, subresource.unwrap_or_default());
    }
}
