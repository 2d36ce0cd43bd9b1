//! What a request asks for, parsed from its method and path the way kube-apiserver's
//! `RequestInfoFactory` does, before authentication: authorization, audit and routing all read it.
//!
//! ```text
//! /apis/<group>/<version>[/watch]/namespaces/<ns>/<resource>[/<name>[/<subresource>[/<rest>...]]]
//! /apis/<group>/<version>[/watch]/<resource>[/<name>[/<subresource>[/<rest>...]]]
//! /api/<version>/...                                  (core group; we serve none of it)
//! anything else                                        non-resource request (/healthz, /openapi/v3, ...)
//! ```

use http::Method;

/// A parsed request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestInfo {
    /// Whether the path names an API resource (as opposed to `/healthz`, `/apis`, ...).
    pub is_resource_request: bool,
    /// The URL path, for non-resource requests.
    pub path: String,
    /// get list watch create update patch delete deletecollection — or, for non-resource
    /// requests, the lowercased HTTP method.
    pub verb: String,
    /// `api` or `apis`.
    pub api_prefix: String,
    pub api_group: String,
    pub api_version: String,
    pub namespace: String,
    pub resource: String,
    pub subresource: String,
    pub name: String,
    /// Path segments after the subresource (`proxy/api/v1/pods` → `api/v1/pods`).
    pub rest: String,
}

/// Query flag that turns a GET of a collection into a watch: kube's parameter codec reads a
/// boolean as true when present with any value but `0` or `false` (any case), and only its
/// first value counts.
fn is_watch_query(query: Option<&str>) -> bool {
    form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "watch")
        .is_some_and(|(_, v)| v != "0" && !v.eq_ignore_ascii_case("false"))
}

/// Parses `method` and `path` (without the query) into a [`RequestInfo`].
pub fn parse(method: &Method, path: &str, query: Option<&str>) -> RequestInfo {
    let mut info = RequestInfo {
        path: path.to_string(),
        verb: method.as_str().to_lowercase(),
        ..Default::default()
    };
    let trimmed = path.trim_matches('/');
    let mut parts: Vec<&str> = if trimmed.is_empty() {
        vec![]
    } else {
        trimmed.split('/').collect()
    };

    let prefix = parts.first().copied().unwrap_or_default();
    let min_parts = match prefix {
        "apis" => 3,
        "api" => 2,
        _ => return info,
    };
    if parts.len() < min_parts {
        return info; // discovery: /apis, /apis/<group>, /api
    }
    info.is_resource_request = true;
    info.api_prefix = prefix.to_string();
    parts.remove(0);
    if prefix == "apis" {
        info.api_group = parts.remove(0).to_string();
    }
    info.api_version = parts.remove(0).to_string();

    // The deprecated /watch/ prefix.
    let mut watch_prefix = false;
    if parts.first() == Some(&"watch") {
        watch_prefix = true;
        parts.remove(0);
    }

    if parts.first() == Some(&"namespaces") {
        if parts.len() > 1 {
            info.namespace = parts[1].to_string();
            if parts.len() > 2 {
                parts.drain(..2);
            } else {
                // `/namespaces/<ns>`: the namespace object itself.
                info.resource = "namespaces".into();
                info.name = info.namespace.clone();
                parts.clear();
            }
        } else {
            info.resource = "namespaces".into();
            parts.clear();
        }
    }
    if let Some(resource) = parts.first() {
        info.resource = resource.to_string();
    }
    if let Some(name) = parts.get(1) {
        info.name = name.to_string();
    }
    if let Some(sub) = parts.get(2) {
        info.subresource = sub.to_string();
    }
    if parts.len() > 3 {
        info.rest = parts[3..].join("/");
    }
    if info.resource.is_empty() && info.namespace.is_empty() {
        // `/apis/<group>/<version>`: the resource list of a group version.
        info.is_resource_request = false;
        info.verb = method.as_str().to_lowercase();
        return info;
    }

    info.verb = match *method {
        Method::GET | Method::HEAD => {
            if watch_prefix || (info.name.is_empty() && is_watch_query(query)) {
                "watch"
            } else if info.name.is_empty() {
                "list"
            } else {
                "get"
            }
        }
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => {
            if info.name.is_empty() {
                "deletecollection"
            } else {
                "delete"
            }
        }
        _ => "",
    }
    .to_string();
    // A watch of a single object is a list/watch of a collection filtered by name.
    if watch_prefix && !info.name.is_empty() && info.subresource.is_empty() {
        info.verb = "watch".into();
    }
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(method: Method, path: &str, query: Option<&str>) -> RequestInfo {
        parse(&method, path, query)
    }

    #[test]
    fn namespaced_resources() {
        let i = p(
            Method::GET,
            "/apis/edgefleet.io/v1alpha1/namespaces/retail/clusters",
            None,
        );
        assert!(i.is_resource_request);
        assert_eq!(
            (
                i.verb.as_str(),
                i.api_group.as_str(),
                i.api_version.as_str(),
                i.namespace.as_str(),
                i.resource.as_str()
            ),
            ("list", "edgefleet.io", "v1alpha1", "retail", "clusters")
        );
        let w = p(
            Method::GET,
            "/apis/edgefleet.io/v1alpha1/namespaces/retail/clusters",
            Some("watch=true&rv=1"),
        );
        assert_eq!(w.verb, "watch");
        let g = p(
            Method::GET,
            "/apis/edgefleet.io/v1alpha1/namespaces/retail/clusters/edge-1",
            None,
        );
        assert_eq!((g.verb.as_str(), g.name.as_str()), ("get", "edge-1"));
        let s = p(
            Method::PUT,
            "/apis/edgefleet.io/v1alpha1/namespaces/retail/clusters/edge-1/status",
            None,
        );
        assert_eq!(
            (s.verb.as_str(), s.subresource.as_str()),
            ("update", "status")
        );
        let d = p(
            Method::DELETE,
            "/apis/edgefleet.io/v1alpha1/namespaces/retail/clusters",
            None,
        );
        assert_eq!(d.verb, "deletecollection");
    }

    #[test]
    fn proxy_keeps_the_rest_of_the_path() {
        let i = p(Method::POST, "/apis/edgefleet.io/v1alpha1/namespaces/retail/clusters/edge-1/proxy/api/v1/namespaces/default/pods", None);
        assert_eq!(
            (i.verb.as_str(), i.subresource.as_str()),
            ("create", "proxy")
        );
        assert_eq!(i.rest, "api/v1/namespaces/default/pods");
    }

    #[test]
    fn cluster_scoped_and_all_namespaces() {
        let e = p(
            Method::DELETE,
            "/apis/edgefleet.io/v1alpha1/environments/retail",
            None,
        );
        assert_eq!(
            (
                e.verb.as_str(),
                e.namespace.as_str(),
                e.resource.as_str(),
                e.name.as_str()
            ),
            ("delete", "", "environments", "retail")
        );
        let all = p(
            Method::GET,
            "/apis/edgefleet.io/v1alpha1/clusters",
            Some("watch=1"),
        );
        assert_eq!((all.verb.as_str(), all.namespace.as_str()), ("watch", ""));
        let old = p(
            Method::GET,
            "/apis/edgefleet.io/v1alpha1/watch/namespaces/retail/clusters",
            None,
        );
        assert_eq!(
            (old.verb.as_str(), old.namespace.as_str()),
            ("watch", "retail")
        );
    }

    #[test]
    fn non_resource_paths() {
        for path in [
            "/healthz",
            "/apis",
            "/apis/edgefleet.io",
            "/apis/edgefleet.io/v1alpha1",
            "/api",
            "/openapi/v3",
            "/",
        ] {
            let i = p(Method::GET, path, None);
            assert!(!i.is_resource_request, "{path}");
            assert_eq!(i.verb, "get");
            assert_eq!(i.path, path);
        }
        let core = p(Method::GET, "/api/v1/namespaces/default/pods", None);
        assert!(core.is_resource_request);
        assert_eq!(
            (core.api_group.as_str(), core.resource.as_str()),
            ("", "pods")
        );
    }
}
