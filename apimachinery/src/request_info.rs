//! What a request asks for, from its method, path and query, by kube-apiserver's
//! `RequestInfoFactory` rules (`k8s.io/apiserver/pkg/endpoints/request/requestinfo.go`). The hub
//! parses its own requests with it (routing, authorization, audit), and the audit parses the
//! edge part of a proxied request (`clusters/{name}/proxy/{rest}`) with it, so that both name a
//! verb the same way.
//!
//! ```text
//! /api/<version>[/<special verb>]/namespaces/<ns>/<resource>[/<name>[/<subresource>[/<rest>...]]]
//! /apis/<group>/<version>[/<special verb>]/...            special verbs: watch, proxy
//! /api/<version>/namespaces/<ns>[/status|/finalize]       the Namespace object itself
//! /api/<version>/<resource>[/<name>[/<subresource>[/<rest>...]]]   cluster-scoped
//! anything shorter, or outside /api and /apis              a non-resource request
//!     (/healthz, /version, /api, /api/<v>, /apis, /apis/<g>, /apis/<g>/<v>, /openapi/v3, /)
//! ```
//!
//! The verb:
//!
//! | request                                 | verb                                          |
//! |-----------------------------------------|-----------------------------------------------|
//! | `/watch/...` or `/proxy/...` after the version | `watch` / `proxy`, whatever the method; `proxy` takes no subresource |
//! | GET or HEAD with a name                 | `get`                                         |
//! | GET or HEAD without a name              | `watch` if the query's `watch` is true ([`crate::query`]: anything but `0`/`false`), else `list` |
//! | POST, PUT, PATCH                        | `create`, `update`, `patch`                   |
//! | DELETE with / without a name            | `delete` / `deletecollection`                 |
//! | any other method                        | `""`                                          |
//! | non-resource request                    | the method, lowercased                        |
//!
//! A `list` or `watch` whose `fieldSelector` pins `metadata.name=<n>` (kube's
//! `RequiresExactMatch`) names object `<n>`, when `<n>` is a valid path segment name (not `.`
//! or `..`, no `/` or `%`) and the list options decode: `labelSelector` and `fieldSelector`
//! parse, `limit` and `timeoutSeconds` are integers. When they do not decode, kube falls back to
//! the raw first `watch` value for the verb and names nothing; so do we.
//!
//! Deviation from kube: a path that ends right after a special verb (`/api/v1/watch`) is an
//! error for kube (it answers 500); here it is a non-resource request, which nothing serves.
//! `rest` is ours: the path segments after `<subresource>` (after `<name>` for the `proxy`
//! verb), which `clusters/{name}/proxy/{rest}` forwards.

use http::Method;

use crate::query::QueryParams;
use crate::selectors::{FieldSelectorExpr, LabelSelectorExpr};

/// A parsed request (kube's `RequestInfo`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestInfo {
    /// Whether the path names an API resource (as opposed to `/healthz`, `/apis`, ...).
    pub is_resource_request: bool,
    /// The URL path, without the query.
    pub path: String,
    /// The Kubernetes verb (see the module table), or for non-resource requests the lowercased
    /// HTTP method.
    pub verb: String,
    /// `api` or `apis`.
    pub api_prefix: String,
    pub api_group: String,
    pub api_version: String,
    pub namespace: String,
    pub resource: String,
    pub subresource: String,
    pub name: String,
    /// Path segments after the subresource, joined with `/` (`proxy/api/v1/pods` →
    /// `api/v1/pods`).
    pub rest: String,
}

/// Verbs kube treats as long-running (no request timeout, a `ResponseStarted` audit stage).
const LONG_RUNNING_VERBS: &[&str] = &["watch", "proxy"];
/// Subresources kube treats as long-running.
const LONG_RUNNING_SUBRESOURCES: &[&str] = &["attach", "exec", "proxy", "log", "portforward"];

impl RequestInfo {
    /// kube-apiserver's `BasicLongRunningRequestCheck(["watch","proxy"],
    /// ["attach","exec","proxy","log","portforward"])`.
    pub fn is_long_running(&self) -> bool {
        is_long_running(self.is_resource_request, &self.verb, &self.subresource)
    }
}

/// kube-apiserver's long-running rule, for a request described by its parts.
pub fn is_long_running(is_resource_request: bool, verb: &str, subresource: &str) -> bool {
    is_resource_request
        && (LONG_RUNNING_VERBS.contains(&verb) || LONG_RUNNING_SUBRESOURCES.contains(&subresource))
}

/// Parses a request: `path` without the query, `query` without the `?`.
pub fn parse(method: &Method, path: &str, query: Option<&str>) -> RequestInfo {
    let mut info = RequestInfo {
        path: path.to_owned(),
        verb: method.as_str().to_lowercase(),
        ..RequestInfo::default()
    };
    let trimmed = path.trim_matches('/');
    let mut parts: &[&str] = &if trimmed.is_empty() {
        Vec::new()
    } else {
        trimmed.split('/').collect()
    };
    let (prefix, group_parts) = match parts.first() {
        Some(&"api") => ("api", 0),
        Some(&"apis") => ("apis", 1),
        _ => return info,
    };
    // prefix, [group,] version and at least one more segment.
    if parts.len() < 3 + group_parts {
        return info;
    }
    parts = &parts[1..];
    let group = if group_parts == 1 { parts[0] } else { "" };
    parts = &parts[group_parts..];
    let version = parts[0];
    parts = &parts[1..];

    let verb = if matches!(parts[0], "watch" | "proxy") {
        if parts.len() < 2 {
            return info; // see the module docs: kube fails these
        }
        let verb = parts[0];
        parts = &parts[1..];
        verb.to_owned()
    } else {
        match *method {
            Method::POST => "create",
            Method::GET | Method::HEAD => "get",
            Method::PUT => "update",
            Method::PATCH => "patch",
            Method::DELETE => "delete",
            _ => "",
        }
        .to_owned()
    };
    info.is_resource_request = true;
    info.api_prefix = prefix.to_owned();
    info.api_group = group.to_owned();
    info.api_version = version.to_owned();
    info.verb = verb;

    if parts[0] == "namespaces" && parts.len() > 1 {
        info.namespace = parts[1].to_owned();
        // `/namespaces/<ns>/status` and `/finalize` are subresources of the Namespace; anything
        // else after the name is a resource in that namespace.
        if parts.len() > 2 && !matches!(parts[2], "status" | "finalize") {
            parts = &parts[2..];
        }
    }

    // resource/name/subresource/rest... — the proxy verb takes no subresource.
    let takes_subresource = info.verb != "proxy";
    info.resource = parts[0].to_owned();
    if let Some(name) = parts.get(1) {
        info.name = (*name).to_owned();
    }
    let rest_from = if takes_subresource {
        if let Some(sub) = parts.get(2) {
            info.subresource = (*sub).to_owned();
        }
        3
    } else {
        2
    };
    if parts.len() > rest_from {
        info.rest = parts[rest_from..].join("/");
    }

    if info.name.is_empty() && info.verb == "get" {
        let params = QueryParams::parse(query);
        let (watch, name) = match list_options(&params) {
            Some((watch, name)) => (watch, name),
            None => (params.flag("watch"), None),
        };
        info.verb = if watch { "watch" } else { "list" }.to_owned();
        if let Some(name) = name {
            info.name = name;
        }
    }
    if info.name.is_empty() && info.verb == "delete" {
        info.verb = "deletecollection".to_owned();
    }
    info
}

/// What `RequestInfo` takes from the list options: whether to watch, and the name a field
/// selector pins; `None` when the options do not decode (see the module docs).
fn list_options(params: &QueryParams<'_>) -> Option<(bool, Option<String>)> {
    LabelSelectorExpr::parse(params.first("labelSelector").unwrap_or_default()).ok()?;
    let fields =
        FieldSelectorExpr::parse_any(params.first("fieldSelector").unwrap_or_default()).ok()?;
    params.int("limit").ok()?;
    params.int("timeoutSeconds").ok()?;
    let name = fields
        .required_value("metadata.name")
        .filter(|name| is_valid_path_segment_name(name))
        .map(str::to_owned);
    Some((params.flag("watch"), name))
}

/// kube's `path.IsValidPathSegmentName`.
fn is_valid_path_segment_name(name: &str) -> bool {
    name != "." && name != ".." && !name.contains(['/', '%'])
}

#[cfg(test)]
mod tests;
