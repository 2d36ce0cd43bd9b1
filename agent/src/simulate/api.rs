//! The read-only core API a simulated cluster answers (enough for plain kubectl):
//!
//! | path                                   | JSON                         | also as                    |
//! |----------------------------------------|------------------------------|----------------------------|
//! | `GET /version`                         | version Info                 |                            |
//! | `GET /api`                             | APIVersions                  | aggregated discovery v2    |
//! | `GET /apis`                            | APIGroupList (empty)         | aggregated discovery v2    |
//! | `GET /api/v1`                          | APIResourceList              |                            |
//! | `GET /api/v1/nodes[/name]`             | NodeList / Node              | Table                      |
//! | `GET /api/v1/namespaces[/name]`        | NamespaceList / Namespace    | Table                      |
//! | `GET …?watch=true` on a collection     | a watch that stays silent    |                            |
//!
//! Lists take `labelSelector` and `fieldSelector` (`metadata.name`), parsed by the hub's parsers,
//! so a simulated cluster refuses (400) what the hub refuses. Another method on these
//! paths is 405, any other path 404, both as Status. Everything is computed from the
//! [`SimulatedCluster`] per request; nothing is cached per cluster.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use edgefleet_apimachinery::query::{InvalidInteger, QueryParams};
use edgefleet_apimachinery::selectors::{FieldSelectorExpr, LabelSelectorExpr};
use edgefleet_apimachinery::status::reason;
use edgefleet_apimachinery::table::{IncludeObject, TableError};
use edgefleet_tunnel::{body, TunnelBody};
use http::request::Parts;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body::Frame;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ListMeta;
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::{List, ListableResource, Metadata};
use serde::Serialize;
use tokio::time::Sleep;

use super::accept::{
    negotiate, Representation, AGGREGATED_DISCOVERY_CONTENT_TYPE, TABLE_CONTENT_TYPE,
};
use super::cluster::{SimulatedCluster, RESOURCE_VERSION};
use super::discovery;
use super::table::{namespace_table, node_table};
use crate::status::{self, json_response, JSON};
use crate::timeouts::SIMULATED_WATCH_TIMEOUT;

/// A simulated cluster as a `tower::Service`. Cheap to clone.
#[derive(Clone, Debug)]
pub struct SimulatedService {
    cluster: Arc<SimulatedCluster>,
}

impl SimulatedService {
    /// Serves `cluster`.
    pub fn new(cluster: Arc<SimulatedCluster>) -> Self {
        Self { cluster }
    }
}

impl<B> tower::Service<Request<B>> for SimulatedService {
    type Response = Response<TunnelBody>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<TunnelBody>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // The simulated API is read-only: request bodies are never read.
        let (parts, _body) = req.into_parts();
        std::future::ready(Ok(respond(&self.cluster, &parts, Timestamp::now())))
    }
}

/// The response to one request, at time `now` (for ages in Tables).
pub fn respond(cluster: &SimulatedCluster, req: &Parts, now: Timestamp) -> Response<TunnelBody> {
    let path = req.uri.path();
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let known = matches!(
        segments.as_slice(),
        ["version"]
            | ["api"]
            | ["apis"]
            | ["api", "v1"]
            | ["api", "v1", "nodes" | "namespaces"]
            | ["api", "v1", "nodes" | "namespaces", _]
    );
    if !known {
        return status::path_not_found();
    }
    if req.method != Method::GET {
        return status::method_not_allowed();
    }
    let query = Query::parse(req.uri.query());
    match segments.as_slice() {
        ["version"] => json(&cluster.version_info()),
        ["api"] => match negotiate(
            &req.headers,
            &[Representation::Json, Representation::AggregatedDiscovery],
        ) {
            Representation::AggregatedDiscovery => aggregated(&discovery::aggregated_api()),
            _ => json(&discovery::api_versions()),
        },
        ["apis"] => match negotiate(
            &req.headers,
            &[Representation::Json, Representation::AggregatedDiscovery],
        ) {
            Representation::AggregatedDiscovery => aggregated(&discovery::aggregated_apis()),
            _ => json(&discovery::api_group_list()),
        },
        ["api", "v1"] => json(&discovery::core_v1_resources()),
        ["api", "v1", _] if query.watch => watch(&query),
        ["api", "v1", "nodes"] => {
            let table = |items: &[_], include| node_table(items, now, include);
            list(req, &query, cluster.nodes(), table)
        }
        ["api", "v1", "namespaces"] => {
            let table = |items: &[_], include| namespace_table(items, now, include);
            list(req, &query, cluster.namespaces(), table)
        }
        ["api", "v1", "nodes", name] => match cluster.find_node(name) {
            Some(node) => get(req, &query, node, |items, include| {
                node_table(items, now, include)
            }),
            None => status::object_not_found("nodes", name),
        },
        ["api", "v1", "namespaces", name] => match cluster.find_namespace(name) {
            Some(ns) => get(req, &query, ns, |items, include| {
                namespace_table(items, now, include)
            }),
            None => status::object_not_found("namespaces", name),
        },
        _ => status::path_not_found(),
    }
}

/// The query parameters the simulated API looks at, read as kube-apiserver reads them (the
/// shared [`edgefleet_apimachinery::query`] rules): selectors, `includeObject`, `watch`,
/// `timeoutSeconds`.
#[derive(Debug)]
struct Query {
    label_selector: String,
    field_selector: String,
    include_object: Option<String>,
    watch: bool,
    timeout_seconds: Result<Option<i64>, InvalidInteger>,
}

/// The only field a simulated node or namespace can be selected by.
const SELECTABLE_FIELDS: &[&str] = &["metadata.name"];

impl Query {
    fn parse(query: Option<&str>) -> Self {
        let params = QueryParams::parse(query);
        let text = |name| params.first(name).unwrap_or_default().to_owned();
        Self {
            label_selector: text("labelSelector"),
            field_selector: text("fieldSelector"),
            include_object: params.first("includeObject").map(str::to_owned),
            watch: params.flag("watch"),
            timeout_seconds: params.int("timeoutSeconds"),
        }
    }

    fn include(&self) -> Result<IncludeObject, TableError> {
        IncludeObject::from_query(self.include_object.as_deref())
    }
}

fn list<T>(
    req: &Parts,
    query: &Query,
    items: Vec<T>,
    table: impl Fn(&[T], IncludeObject) -> Result<Bytes, TableError>,
) -> Response<TunnelBody>
where
    T: ListableResource
        + Metadata<Ty = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>
        + Serialize,
{
    // The hub's parsers: what the hub refuses, a simulated cluster refuses too.
    let labels = match LabelSelectorExpr::parse(&query.label_selector) {
        Ok(selector) => selector,
        Err(error) => return status::bad_request(error.to_string()),
    };
    let fields = match FieldSelectorExpr::parse(&query.field_selector, SELECTABLE_FIELDS) {
        Ok(selector) => selector,
        Err(error) => return status::bad_request(error.to_string()),
    };
    let empty = Default::default();
    let items: Vec<T> = items
        .into_iter()
        .filter(|item| {
            let meta = item.metadata();
            let name = meta.name.clone();
            labels.matches(meta.labels.as_ref().unwrap_or(&empty))
                && fields.matches(&|field| {
                    (field == "metadata.name").then(|| name.clone().unwrap_or_default())
                })
        })
        .collect();
    match negotiate(&req.headers, &[Representation::Json, Representation::Table]) {
        Representation::Table => {
            table_response(query.include().and_then(|include| table(&items, include)))
        }
        _ => json(&List {
            items,
            metadata: ListMeta {
                resource_version: Some(RESOURCE_VERSION.into()),
                ..ListMeta::default()
            },
        }),
    }
}

fn get<T: Serialize>(
    req: &Parts,
    query: &Query,
    item: T,
    table: impl Fn(&[T], IncludeObject) -> Result<Bytes, TableError>,
) -> Response<TunnelBody> {
    match negotiate(&req.headers, &[Representation::Json, Representation::Table]) {
        Representation::Table => table_response(
            query
                .include()
                .and_then(|include| table(std::slice::from_ref(&item), include)),
        ),
        _ => json(&item),
    }
}

fn json<T: Serialize>(value: &T) -> Response<TunnelBody> {
    typed_json(value, JSON)
}

fn aggregated<T: Serialize>(value: &T) -> Response<TunnelBody> {
    typed_json(value, AGGREGATED_DISCOVERY_CONTENT_TYPE)
}

fn table_response(table: Result<Bytes, TableError>) -> Response<TunnelBody> {
    match table {
        Ok(bytes) => json_response(
            StatusCode::OK,
            HeaderValue::from_static(TABLE_CONTENT_TYPE),
            bytes,
        ),
        // The client asked for an `includeObject` kube does not know.
        Err(error @ TableError::IncludeObject(_)) => status::bad_request(error.to_string()),
        Err(error) => status::failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            reason::INTERNAL_ERROR,
            format!("encoding the Table failed: {error}"),
        ),
    }
}

fn typed_json<T: Serialize>(value: &T, content_type: &'static str) -> Response<TunnelBody> {
    match serde_json::to_vec(value) {
        Ok(bytes) => json_response(
            StatusCode::OK,
            HeaderValue::from_static(content_type),
            Bytes::from(bytes),
        ),
        Err(error) => status::failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            reason::INTERNAL_ERROR,
            format!("encoding the response failed: {error}"),
        ),
    }
}

/// A watch on a cluster where nothing changes: 200, then silence until `timeoutSeconds` (or
/// [`SIMULATED_WATCH_TIMEOUT`]) ends it, as kube-apiserver ends a quiet watch.
fn watch(query: &Query) -> Response<TunnelBody> {
    let timeout = match &query.timeout_seconds {
        Ok(seconds) => seconds.map_or(SIMULATED_WATCH_TIMEOUT, |s| {
            Duration::from_secs(u64::try_from(s).unwrap_or(0)).min(SIMULATED_WATCH_TIMEOUT)
        }),
        Err(error) => return status::bad_request(error.to_string()),
    };
    let body = QuietWatch {
        until: Box::pin(tokio::time::sleep(timeout)),
    };
    let mut response = Response::new(body::boxed(body));
    response
        .headers_mut()
        .insert(http::header::CONTENT_TYPE, HeaderValue::from_static(JSON));
    response
}

struct QuietWatch {
    until: Pin<Box<Sleep>>,
}

impl http_body::Body for QuietWatch {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.until.as_mut().poll(cx).map(|()| None)
    }
}

#[cfg(test)]
mod tests;
