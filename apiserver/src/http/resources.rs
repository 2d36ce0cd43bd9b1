//! Handlers of `/apis/edgefleet.io/v1alpha1/...` resource requests: thin translations between
//! HTTP (query, headers, body, representation) and the registry.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use edgefleet_apimachinery::request_info::RequestInfo;
use edgefleet_apimachinery::table::{IncludeObject, ListMeta};
use futures::StreamExt;
use http::header::{ACCEPT, CONTENT_TYPE, USER_AGENT};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use rand::Rng;
use serde_json::{json, Value};

use super::body::{self, add_warnings, Body};
use super::decode;
use super::params::{self, Query};
use super::router::{SubresourceHandler, Subresources};
use crate::agents::AgentHub;
use crate::errors::ApiError;
use crate::negotiation::{self, BodyType, Encoding, Offers, Representation, Transform};
use crate::registry::cacher::CachedObject;
use crate::registry::watch::{Frame, WatchOptions, WatchStart};
use crate::registry::{ListOptions, Patch, Registry, Resource, Target, WriteOptions, WriteOutcome};

/// kube-apiserver's `--min-request-timeout`: watches without `timeoutSeconds` end after a random
/// time between one and two of these, so that clients re-spread over replicas.
const MIN_REQUEST_TIMEOUT: Duration = Duration::from_secs(1800);

/// Serves one resource request.
pub async fn handle(
    registry: &Registry,
    subresources: &Subresources,
    info: &RequestInfo,
    req: Request<Body>,
) -> Result<Response<Body>, ApiError> {
    if info.api_group != edgefleet_api::GROUP || info.api_version != edgefleet_api::VERSION {
        return Err(ApiError::NoSuchPath);
    }
    let resource = registry
        .resource(&info.resource)
        .ok_or(ApiError::NoSuchPath)?
        .clone();
    match (resource.namespaced(), info.namespace.is_empty()) {
        // A cluster-scoped kind has no namespaced URLs.
        (false, false) => return Err(ApiError::NoSuchPath),
        // A namespaced kind across all namespaces: only list and watch.
        (true, true) if !matches!(info.verb.as_str(), "list" | "watch") => {
            return Err(ApiError::NoSuchPath)
        }
        _ => {}
    }
    if !info.name.is_empty() {
        if let Some(handler) = subresources.get(&info.resource, &info.subresource) {
            return handler.handle(info, req).await;
        }
    }
    let target = match info.subresource.as_str() {
        "" => Target::Main,
        "status" if !info.name.is_empty() => Target::Status,
        _ => return Err(ApiError::NoSuchPath),
    };
    if !info.rest.is_empty() {
        return Err(ApiError::NoSuchPath);
    }

    let (parts, body) = req.into_parts();
    let query = Query::parse(parts.uri.query());
    // kube's request deadline filter refuses a `timeout` it cannot read on every request but the
    // long-running ones (watches; proxied requests do not come here).
    if info.verb != "watch" {
        query.request_timeout()?;
    }
    let ctx = Ctx {
        registry,
        resource: &resource,
        info,
        headers: &parts.headers,
        query: &query,
    };

    match (info.verb.as_str(), target) {
        ("get", _) => ctx.get(parts.method == Method::HEAD).await,
        ("list", Target::Main) => ctx.list().await,
        ("watch", Target::Main) => ctx.watch().await,
        ("create", Target::Main) => ctx.create(body::read_body(body).await?).await,
        ("update", _) => ctx.update(target, body::read_body(body).await?).await,
        ("patch", _) => ctx.patch(target, body::read_body(body).await?).await,
        ("delete", Target::Main) => ctx.delete(body::read_body(body).await?).await,
        ("deletecollection", Target::Main) => {
            ctx.delete_collection(body::read_body(body).await?).await
        }
        _ => Err(ApiError::MethodNotAllowed),
    }
}

struct Ctx<'a> {
    registry: &'a Registry,
    resource: &'a Arc<Resource>,
    info: &'a RequestInfo,
    headers: &'a HeaderMap,
    query: &'a Query,
}

impl Ctx<'_> {
    fn header(&self, name: http::header::HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn representation(&self) -> Result<Representation, ApiError> {
        negotiation::negotiate(self.header(ACCEPT), Offers::OBJECTS)
    }

    fn write_options(&self) -> Result<WriteOptions, ApiError> {
        Ok(WriteOptions {
            dry_run: self.query.dry_run()?,
            field_manager: self.query.field_manager(self.header(USER_AGENT))?,
            field_validation: self.query.field_validation()?,
            force: self.query.flag("force"),
        })
    }

    /// Parses a JSON (or YAML) request body of a write; see [`decode::write_body`].
    fn parse_body(
        &self,
        bytes: &[u8],
        body_type: BodyType,
    ) -> Result<(Value, Vec<String>), ApiError> {
        decode::write_body(bytes, body_type, self.query.field_validation()?)
    }

    /// One object in the negotiated representation.
    fn object_response(
        &self,
        status: StatusCode,
        obj: &Arc<CachedObject>,
        rep: Representation,
    ) -> Result<Response<Body>, ApiError> {
        let meta = ListMeta {
            resource_version: obj.mod_revision.to_string(),
            ..Default::default()
        };
        match rep.transform {
            Transform::Table => {
                let table = self.resource.table(
                    std::slice::from_ref(obj),
                    &meta,
                    self.query.include_object()?,
                    true,
                )?;
                body::json_bytes_response(status, table, rep.encoding)
            }
            Transform::PartialObjectMetadata => {
                body::json_bytes_response(status, self.resource.partial(obj)?, rep.encoding)
            }
            _ => body::json_bytes_response(status, obj.json.clone(), rep.encoding),
        }
    }

    fn write_response(
        &self,
        mut outcome: WriteOutcome,
        success: StatusCode,
        decode_warnings: Vec<String>,
    ) -> Result<Response<Body>, ApiError> {
        outcome.warnings.splice(0..0, decode_warnings);
        let status = if outcome.created {
            StatusCode::CREATED
        } else {
            success
        };
        let mut resp = self.object_response(status, &outcome.object, self.representation()?)?;
        add_warnings(&mut resp, &outcome.warnings);
        Ok(resp)
    }

    async fn get(&self, head: bool) -> Result<Response<Body>, ApiError> {
        let rep = self.representation()?;
        let obj = self
            .resource
            .get(
                &self.info.namespace,
                &self.info.name,
                self.query.get("resourceVersion"),
            )
            .await?;
        let mut resp = self.object_response(StatusCode::OK, &obj, rep)?;
        if head {
            *resp.body_mut() = body::empty();
        }
        Ok(resp)
    }

    fn list_options(&self) -> Result<ListOptions, ApiError> {
        // Read as kube's ListOptions reads it, though a list (unlike a watch) ends when done.
        self.query.timeout()?;
        Ok(ListOptions {
            namespace: self.info.namespace.clone(),
            filter: self.query.filter()?,
            limit: self.query.limit()?,
            continue_token: self
                .query
                .get("continue")
                .filter(|c| !c.is_empty())
                .map(String::from),
            resource_version: self.query.get("resourceVersion").map(String::from),
            resource_version_match: self.query.resource_version_match()?,
        })
    }

    async fn list(&self) -> Result<Response<Body>, ApiError> {
        let rep = self.representation()?;
        let result = self.resource.list(&self.list_options()?).await?;
        let meta = ListMeta {
            resource_version: result.revision.to_string(),
            continue_token: result.continue_token,
            remaining: result.remaining,
        };
        match rep.transform {
            Transform::Table => {
                let table = self.resource.table(
                    &result.items,
                    &meta,
                    self.query.include_object()?,
                    true,
                )?;
                body::json_bytes_response(StatusCode::OK, table, rep.encoding)
            }
            Transform::PartialObjectMetadata => body::json_bytes_response(
                StatusCode::OK,
                self.resource.partial_list(&result.items, &meta)?,
                rep.encoding,
            ),
            _ => body::json_bytes_response(
                StatusCode::OK,
                self.resource.list_json(&result.items, &meta),
                rep.encoding,
            ),
        }
    }

    async fn watch(&self) -> Result<Response<Body>, ApiError> {
        let rep = self.representation()?;
        let mut filter = self.query.filter()?;
        if !self.info.name.is_empty() && filter.fields.is_empty() {
            // `/watch/.../<name>` (deprecated form): a watch of one object. (A name taken from
            // `fieldSelector=metadata.name=` is already in the selector, with its other terms.)
            filter.fields = edgefleet_apimachinery::selectors::FieldSelectorExpr::parse(
                &format!("metadata.name={}", self.info.name),
                crate::registry::object::SELECTABLE_FIELDS,
            )
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        }
        let rv = self
            .query
            .get("resourceVersion")
            .filter(|rv| !rv.is_empty());
        // A `*bool`: present (even empty, which is true) or not.
        let send_initial = self
            .query
            .get("sendInitialEvents")
            .map(|_| self.query.flag("sendInitialEvents"));
        let bookmarks = self.query.flag("allowWatchBookmarks");
        if send_initial.is_some() {
            if !bookmarks {
                return Err(ApiError::BadRequest(
                    "sendInitialEvents requires allowWatchBookmarks=true".into(),
                ));
            }
            if self.query.resource_version_match()?
                != Some(crate::registry::ResourceVersionMatch::NotOlderThan)
            {
                return Err(ApiError::BadRequest(
                    "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan"
                        .into(),
                ));
            }
        }
        let start = match rv {
            None => WatchStart::Consistent,
            Some("0") => WatchStart::Any,
            Some(rv) => WatchStart::After(crate::registry::parse_revision(rv)?),
        };
        let initial_events = match (send_initial, start) {
            (Some(send), _) => send,
            (None, WatchStart::After(_)) => false,
            (None, _) => true,
        };
        let timeout = self.query.timeout()?.unwrap_or_else(|| {
            let base = MIN_REQUEST_TIMEOUT.as_secs();
            Duration::from_secs(rand::rng().random_range(base..2 * base))
        });
        let opts = WatchOptions {
            namespace: self.info.namespace.clone(),
            filter,
            start,
            initial_events,
            initial_events_end: send_initial == Some(true),
            bookmarks,
            timeout,
        };
        let frames = self.resource.watch(opts).await?;
        let encoder = WatchEncoder {
            resource: self.resource.clone(),
            rep,
            include: self.query.include_object()?,
        };
        let stream = tokio_stream::wrappers::ReceiverStream::new(frames).map(move |frame| {
            Ok::<_, std::io::Error>(http_body::Frame::data(encoder.encode(frame)))
        });
        let mut resp = Response::new(StreamBody::new(stream).boxed_unsync());
        let content_type = match rep.encoding {
            Encoding::Json => "application/json",
            Encoding::Yaml => "application/yaml",
        };
        resp.headers_mut()
            .insert(CONTENT_TYPE, http::HeaderValue::from_static(content_type));
        Ok(resp)
    }

    async fn create(&self, bytes: Bytes) -> Result<Response<Body>, ApiError> {
        let body_type = negotiation::body_type(self.header(CONTENT_TYPE))?;
        if !matches!(body_type, BodyType::Json | BodyType::Yaml) {
            return Err(ApiError::UnsupportedMediaType(format!(
                "the body of a create must be application/json or application/yaml, not {}",
                self.header(CONTENT_TYPE).unwrap_or_default()
            )));
        }
        let (obj, warnings) = self.parse_body(&bytes, body_type)?;
        let outcome = self
            .resource
            .create(
                self.registry,
                &self.info.namespace,
                obj,
                &self.write_options()?,
            )
            .await?;
        self.write_response(outcome, StatusCode::CREATED, warnings)
    }

    async fn update(&self, target: Target, bytes: Bytes) -> Result<Response<Body>, ApiError> {
        let body_type = negotiation::body_type(self.header(CONTENT_TYPE))?;
        if !matches!(body_type, BodyType::Json | BodyType::Yaml) {
            return Err(ApiError::UnsupportedMediaType(
                "the body of an update must be application/json or application/yaml".into(),
            ));
        }
        let (obj, warnings) = self.parse_body(&bytes, body_type)?;
        let outcome = self
            .resource
            .replace(
                &self.info.namespace,
                &self.info.name,
                target,
                obj,
                &self.write_options()?,
            )
            .await?;
        self.write_response(outcome, StatusCode::OK, warnings)
    }

    async fn patch(&self, target: Target, bytes: Bytes) -> Result<Response<Body>, ApiError> {
        let body_type = negotiation::body_type(self.header(CONTENT_TYPE))?;
        let mut opts = self.write_options()?;
        if opts.force && body_type != BodyType::ApplyPatch {
            return Err(ApiError::BadRequest(
                "force: Forbidden: may not be specified for non-apply patch".into(),
            ));
        }
        let (patch, warnings) = match body_type {
            BodyType::JsonPatch => {
                let (value, warnings) = self.parse_body(&bytes, body_type)?;
                let patch = serde_json::from_value(value).map_err(|e| {
                    ApiError::BadRequest(format!("the JSON patch is not a list of operations: {e}"))
                })?;
                (Patch::Json(patch), warnings)
            }
            BodyType::MergePatch => {
                let (value, warnings) = self.parse_body(&bytes, body_type)?;
                (Patch::Merge(value), warnings)
            }
            BodyType::ApplyPatch => {
                let (config, warnings) = self.parse_body(&bytes, body_type)?;
                // Apply records who owns what: the manager must be named, not guessed from the
                // user agent (kube's PatchOptions validation).
                opts.field_manager = self.query.explicit_field_manager()?;
                let outcome = self
                    .resource
                    .apply(
                        self.registry,
                        &self.info.namespace,
                        &self.info.name,
                        target,
                        config,
                        &opts,
                    )
                    .await?;
                return self.write_response(outcome, StatusCode::OK, warnings);
            }
            BodyType::StrategicMergePatch => {
                return Err(ApiError::UnsupportedMediaType(format!(
                    "strategic merge patch is not supported for {} (as for custom resources); use one of: {}",
                    self.resource.group_resource,
                    negotiation::PATCH_TYPES
                )))
            }
            BodyType::Json | BodyType::Yaml => {
                return Err(ApiError::UnsupportedMediaType(format!(
                    "the body of the request was in an unknown format - accepted media types include: {}",
                    negotiation::PATCH_TYPES
                )))
            }
        };
        let outcome = self
            .resource
            .patch(&self.info.namespace, &self.info.name, target, patch, &opts)
            .await?;
        self.write_response(outcome, StatusCode::OK, warnings)
    }

    async fn delete(&self, bytes: Bytes) -> Result<Response<Body>, ApiError> {
        let opts = params::delete_options(self.query, &bytes)?;
        let obj = self
            .resource
            .delete(self.registry, &self.info.namespace, &self.info.name, &opts)
            .await?;
        self.object_response(StatusCode::OK, &obj, self.representation()?)
    }

    async fn delete_collection(&self, bytes: Bytes) -> Result<Response<Body>, ApiError> {
        let opts = params::delete_options(self.query, &bytes)?;
        let deleted = self
            .resource
            .delete_collection(self.registry, &self.list_options()?, &opts)
            .await?;
        let meta = ListMeta::default();
        body::json_bytes_response(
            StatusCode::OK,
            self.resource.list_json(&deleted, &meta),
            self.representation()?.encoding,
        )
    }
}

/// Turns watch frames into `{"type": ..., "object": ...}` lines.
struct WatchEncoder {
    resource: Arc<Resource>,
    rep: Representation,
    include: IncludeObject,
}

/// `{"type":"<kind>","object":<object>}`, splicing the object's JSON.
fn event_line(kind: &str, object: &[u8]) -> Vec<u8> {
    let mut line = Vec::with_capacity(object.len() + 32);
    line.extend_from_slice(b"{\"type\":\"");
    line.extend_from_slice(kind.as_bytes());
    line.extend_from_slice(b"\",\"object\":");
    line.extend_from_slice(object);
    line.push(b'}');
    line
}

impl WatchEncoder {
    fn encode(&self, frame: Frame) -> Bytes {
        let line = match frame {
            Frame::Event { kind, object } => match self.rep.transform {
                Transform::Table | Transform::PartialObjectMetadata => {
                    let meta = ListMeta {
                        resource_version: object.mod_revision.to_string(),
                        ..Default::default()
                    };
                    let converted = match self.rep.transform {
                        Transform::Table => self.resource.table(
                            std::slice::from_ref(&object),
                            &meta,
                            self.include,
                            true,
                        ),
                        _ => self.resource.partial(&object),
                    };
                    match converted {
                        Ok(converted) => event_line(kind, &converted),
                        Err(err) => error_line(&err),
                    }
                }
                _ => event_line(kind, &object.json),
            },
            Frame::Bookmark {
                revision,
                initial_events_end,
            } => {
                let (kind, api_version) = match self.rep.transform {
                    Transform::PartialObjectMetadata => ("PartialObjectMetadata", "meta.k8s.io/v1"),
                    Transform::Table => ("Table", "meta.k8s.io/v1"),
                    _ => (self.resource.kind(), edgefleet_api::API_VERSION),
                };
                let mut metadata = json!({"resourceVersion": revision.to_string()});
                if initial_events_end {
                    metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
                }
                serde_json::to_vec(&json!({"type": "BOOKMARK", "object": {"kind": kind, "apiVersion": api_version, "metadata": metadata}}))
                    .unwrap_or_default()
            }
            Frame::Error(err) => error_line(&err),
        };
        let mut line = line;
        line.push(b'\n');
        match self.rep.encoding {
            Encoding::Json => Bytes::from(line),
            // YAML watch streams are documents separated by `---`.
            Encoding::Yaml => {
                let value: Value = serde_json::from_slice(&line).unwrap_or(Value::Null);
                let mut doc = serde_yaml_ng::to_string(&value).unwrap_or_default();
                doc.push_str("---\n");
                Bytes::from(doc)
            }
        }
    }
}

fn error_line(err: &ApiError) -> Vec<u8> {
    serde_json::to_vec(&json!({"type": "ERROR", "object": err.status()})).unwrap_or_default()
}

/// `clusters/{name}/bootstrap`, served by the agents' side.
pub struct Bootstrap {
    agents: Option<Arc<AgentHub>>,
}

impl Bootstrap {
    /// Without `agents` (no tunnel port) every request is a 503.
    pub fn new(agents: Option<Arc<AgentHub>>) -> Self {
        Bootstrap { agents }
    }
}

#[async_trait::async_trait]
impl SubresourceHandler for Bootstrap {
    async fn handle(
        &self,
        info: &RequestInfo,
        req: Request<Body>,
    ) -> Result<Response<Body>, ApiError> {
        bootstrap(self.agents.as_deref(), info, &req.into_parts().0).await
    }
}

/// `GET clusters/{name}/bootstrap`: the agent's install manifest with a fresh token, as a `v1`
/// List (JSON, or YAML documents when asked for YAML).
async fn bootstrap(
    agents: Option<&AgentHub>,
    info: &RequestInfo,
    req: &http::request::Parts,
) -> Result<Response<Body>, ApiError> {
    if info.verb != "get" || !info.rest.is_empty() {
        return Err(ApiError::MethodNotAllowed);
    }
    let agents = agents.ok_or_else(|| {
        ApiError::ServiceUnavailable(
            "this hub has no tunnel port for agents (start it with a tunnel CA)".into(),
        )
    })?;
    let accept = req.headers.get(ACCEPT).and_then(|v| v.to_str().ok());
    let rep = negotiation::negotiate(accept, Offers::PLAIN)?;
    let list = agents.bootstrap(&info.namespace, &info.name).await?;
    match rep.encoding {
        Encoding::Json => body::value_response(StatusCode::OK, &list, Encoding::Json),
        Encoding::Yaml => {
            // Documents, so that `kubectl apply -f` on the edge cluster reads them one by one.
            let mut docs = String::new();
            for item in list["items"].as_array().into_iter().flatten() {
                docs.push_str("---\n");
                docs.push_str(
                    &serde_yaml_ng::to_string(item)
                        .map_err(|e| ApiError::Internal(e.to_string()))?,
                );
            }
            Ok(body::bytes_response(
                StatusCode::OK,
                "application/yaml",
                docs,
            ))
        }
    }
}
