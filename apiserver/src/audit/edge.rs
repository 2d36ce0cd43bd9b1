//! What a proxied request asks of the edge cluster: kube-apiserver's `RequestInfoFactory` rules
//! applied to the path after `clusters/{name}/proxy`, so that an event's `objectRef` and `verb`
//! describe the edge object (`pods/web-1/exec` in `default`), not the hub's `clusters/proxy`.
//!
//! ```text
//! /api/<version>[/<special verb>]/namespaces/<ns>/<resource>[/<name>[/<subresource>[/...]]]
//! /apis/<group>/<version>[/<special verb>]/...           special verbs: watch, proxy
//! /api/<version>/namespaces/<ns>[/status|/finalize]      the Namespace object itself
//! GET without a name → list, or watch with ?watch=<anything but 0/false>; a list or watch with
//! ?fieldSelector=metadata.name=<n> names object <n>; DELETE without a name → deletecollection.
//! anything else (/healthz, /version, /api, /apis/<group>) → a non-resource request
//! ```

use http::Method;

use super::event::ObjectReference;

/// A request as kube's `RequestInfo` describes it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EdgeRequestInfo {
    pub is_resource_request: bool,
    /// The URL path (without query).
    pub path: String,
    /// `get list watch create update patch delete deletecollection proxy`, or for non-resource
    /// requests the lowercased HTTP method.
    pub verb: String,
    pub api_prefix: String,
    pub api_group: String,
    pub api_version: String,
    pub namespace: String,
    pub resource: String,
    pub subresource: String,
    pub name: String,
}

/// Verbs kube treats as long-running (no request timeout, a `ResponseStarted` event).
const LONG_RUNNING_VERBS: &[&str] = &["watch", "proxy"];
/// Subresources kube treats as long-running.
const LONG_RUNNING_SUBRESOURCES: &[&str] = &["attach", "exec", "proxy", "log", "portforward"];

impl EdgeRequestInfo {
    /// The `objectRef` of an event about this request; `None` for non-resource requests.
    pub fn object_ref(&self) -> Option<ObjectReference> {
        self.is_resource_request.then(|| ObjectReference {
            resource: self.resource.clone(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            api_group: self.api_group.clone(),
            api_version: self.api_version.clone(),
            subresource: self.subresource.clone(),
            ..ObjectReference::default()
        })
    }

    /// kube-apiserver's `BasicLongRunningRequestCheck(["watch","proxy"],
    /// ["attach","exec","proxy","log","portforward"])`.
    pub fn is_long_running(&self) -> bool {
        is_long_running(self.is_resource_request, &self.verb, &self.subresource)
    }
}

/// kube-apiserver's long-running rule for any request.
pub fn is_long_running(is_resource_request: bool, verb: &str, subresource: &str) -> bool {
    is_resource_request
        && (LONG_RUNNING_VERBS.contains(&verb) || LONG_RUNNING_SUBRESOURCES.contains(&subresource))
}

/// Parses a request to a Kubernetes API server: `path` without the query, `query` without `?`.
pub fn parse(method: &Method, path: &str, query: Option<&str>) -> EdgeRequestInfo {
    let mut info = EdgeRequestInfo {
        path: path.to_string(),
        verb: method.as_str().to_lowercase(),
        ..EdgeRequestInfo::default()
    };
    let trimmed = path.trim_matches('/');
    let mut parts: Vec<&str> = if trimmed.is_empty() {
        Vec::new()
    } else {
        trimmed.split('/').collect()
    };
    if parts.len() < 3 {
        return info;
    }
    let prefix = parts[0];
    if prefix != "api" && prefix != "apis" {
        return info;
    }
    parts.remove(0);
    let mut group = "";
    if prefix == "apis" {
        if parts.len() < 3 {
            return info;
        }
        group = parts.remove(0);
    }
    let version = parts.remove(0);

    let verb = if matches!(parts[0], "watch" | "proxy") {
        if parts.len() < 2 {
            // kube refuses to interpret `/api/v1/watch` and answers as a non-resource request.
            return info;
        }
        parts.remove(0).to_string()
    } else {
        match *method {
            Method::POST => "create",
            Method::GET | Method::HEAD => "get",
            Method::PUT => "update",
            Method::PATCH => "patch",
            Method::DELETE => "delete",
            _ => "",
        }
        .to_string()
    };

    info.is_resource_request = true;
    info.api_prefix = prefix.to_string();
    info.api_group = group.to_string();
    info.api_version = version.to_string();
    info.verb = verb;

    if parts[0] == "namespaces" && parts.len() > 1 {
        info.namespace = parts[1].to_string();
        // `/namespaces/<ns>/status` and `/finalize` are subresources of the Namespace;
        // anything else after the name is a resource in that namespace.
        if parts.len() > 2 && !matches!(parts[2], "status" | "finalize") {
            parts.drain(..2);
        }
    }

    // resource/name/subresource/anything/else — proxy (the verb) keeps no subresource.
    if parts.len() >= 3 && info.verb != "proxy" {
        info.subresource = parts[2].to_string();
    }
    if parts.len() >= 2 {
        info.name = parts[1].to_string();
    }
    info.resource = parts[0].to_string();

    if info.name.is_empty() && info.verb == "get" {
        info.verb = if query_flag(query, "watch") {
            "watch"
        } else {
            "list"
        }
        .to_string();
        if let Some(name) = field_selector_name(query) {
            info.name = name;
        }
    }
    if info.name.is_empty() && info.verb == "delete" {
        info.verb = "deletecollection".into();
    }
    info
}

/// Query parameters, percent-decoded.
fn query_pairs(query: Option<&str>) -> impl Iterator<Item = (String, String)> + '_ {
    form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
}

/// A boolean query parameter as kube's parameter codec reads it: present with any value but
/// `0` or `false` (in any case) means true.
fn query_flag(query: Option<&str>, name: &str) -> bool {
    query_pairs(query)
        .find(|(k, _)| k == name)
        .is_some_and(|(_, v)| v != "0" && !v.eq_ignore_ascii_case("false"))
}

/// The name a field selector pins with `metadata.name=<n>` or `metadata.name==<n>` (kube's
/// `RequiresExactMatch`), when it is a valid path segment.
fn field_selector_name(query: Option<&str>) -> Option<String> {
    let (_, selector) = query_pairs(query).find(|(k, _)| k == "fieldSelector")?;
    for term in split_unescaped(&selector, ',') {
        let term = term.trim();
        if term.contains("!=") {
            continue;
        }
        let value = term
            .strip_prefix("metadata.name==")
            .or_else(|| term.strip_prefix("metadata.name="));
        if let Some(value) = value {
            let value = unescape_selector_value(value.trim());
            let valid = !value.is_empty()
                && value != "."
                && value != ".."
                && !value.contains('/')
                && !value.contains('%');
            return valid.then_some(value);
        }
    }
    None
}

/// Splits at `sep` where it is not escaped with a backslash.
fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut escaped = false;
    for c in s.chars() {
        let last = parts.last_mut().expect("parts is never empty");
        if escaped {
            last.push('\\');
            last.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            parts.push(String::new());
        } else {
            last.push(c);
        }
    }
    parts
}

fn unescape_selector_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(method: Method, uri: &str) -> EdgeRequestInfo {
        let (path, query) = match uri.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (uri, None),
        };
        parse(&method, path, query)
    }

    /// (method, uri) → (verb, group, version, namespace, resource, name, subresource)
    #[test]
    fn kube_request_info_table() {
        let cases: &[(Method, &str, [&str; 7])] = &[
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
            (Method::GET, "/api/v1/namespaces/default/pods/web-1/log?follow=true",
                ["get", "", "v1", "default", "pods", "web-1", "log"]),
            (Method::DELETE, "/api/v1/namespaces/default/secrets", ["deletecollection", "", "v1", "default", "secrets", "", ""]),
            (Method::DELETE, "/api/v1/namespaces/default/secrets/s", ["delete", "", "v1", "default", "secrets", "s", ""]),
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
        }
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
            "/openapi/v2",
            "/api/v1/watch",
            "/",
        ] {
            let i = p(Method::GET, uri);
            assert!(!i.is_resource_request, "{uri}");
            assert_eq!(i.verb, "get");
            assert_eq!(i.object_ref(), None);
        }
    }

    #[test]
    fn object_ref_and_long_running() {
        let exec = p(Method::POST, "/api/v1/namespaces/default/pods/web-1/exec");
        assert_eq!(
            exec.object_ref().unwrap(),
            ObjectReference {
                resource: "pods".into(),
                namespace: "default".into(),
                name: "web-1".into(),
                api_version: "v1".into(),
                subresource: "exec".into(),
                ..ObjectReference::default()
            }
        );
        assert!(exec.is_long_running());
        assert!(p(Method::GET, "/api/v1/pods?watch=1").is_long_running());
        assert!(p(Method::GET, "/api/v1/namespaces/a/pods/b/log").is_long_running());
        assert!(!p(Method::GET, "/api/v1/namespaces/a/pods/b").is_long_running());
        assert!(!p(Method::GET, "/healthz").is_long_running());
    }
}
