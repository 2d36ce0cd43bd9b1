//! Body capture: the request body read (bounded) for the audit record, when the policy's level
//! records request bodies — never for upgrades, whose "body" is the upgraded protocol.
//!
//! The last layer before the router, because only an authorized request's body is worth
//! reading, and because it is where the request body becomes the one body type
//! ([`Body`]) the router and the proxy take: a body read for the record is handed on whole.
//! A body over [`MAX_REQUEST_BODY_BYTES`](crate::http::body::MAX_REQUEST_BODY_BYTES) is
//! refused here (413) rather than recorded in part.

use std::convert::Infallible;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::BodyExt as _;
use tower::{Layer, Service};

use super::{ready_inner, AuditContext, Next, ServiceFuture};
use crate::http::body::{self, error_response, Body, BoxError};

/// Reads the request body for the audit record when the record wants it.
#[derive(Clone, Copy, Debug, Default)]
pub struct BodyCaptureLayer;

impl<S> Layer<S> for BodyCaptureLayer {
    type Service = CaptureBody<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CaptureBody { inner }
    }
}

/// See [`BodyCaptureLayer`].
#[derive(Clone, Debug)]
pub struct CaptureBody<S> {
    inner: S,
}

/// Whether a request's body is read for its record.
pub fn captures(audit: Option<&AuditContext>, headers: &HeaderMap) -> bool {
    audit.is_some_and(AuditContext::wants_request_body)
        && !headers.contains_key(http::header::UPGRADE)
}

impl<S, B> Service<Request<B>> for CaptureBody<S>
where
    S: Next<Body>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = ServiceFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let mut inner = ready_inner(&mut self.inner);
        Box::pin(async move {
            let (parts, request_body) = req.into_parts();
            let audit = parts.extensions.get::<AuditContext>();
            let request_body = if captures(audit, &parts.headers) {
                match body::read_body(request_body).await {
                    Ok(bytes) => {
                        if let Some(audit) = audit {
                            audit.set_request_body(&bytes);
                        }
                        body::full(bytes)
                    }
                    Err(err) => return Ok(error_response(&err)),
                }
            } else {
                request_body
                    .map_err(|e| std::io::Error::other(e.into()))
                    .boxed_unsync()
            };
            inner.call(Request::from_parts(parts, request_body)).await
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::{Method, Request};
    use tower::ServiceExt as _;

    use super::*;
    use crate::audit::{AuditConfig, Auditor, SigningKey};
    use crate::http::layers::testing::{echo, with_info};
    use crate::http::layers::{AuditLayer, Authenticated};

    const CLUSTERS: &str = "/apis/edgefleet.io/v1alpha1/namespaces/retail/clusters";

    async fn auditor(dir: &std::path::Path) -> Auditor {
        let mut config = AuditConfig::new(dir, "hub-0", SigningKey::generate().unwrap().0);
        config.checkpoint_interval = Duration::ZERO;
        Auditor::open(config).await.unwrap()
    }

    fn post(body: Vec<u8>, upgrade: bool) -> Request<Body> {
        let user = crate::auth::UserInfo::new("alice");
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(CLUSTERS)
            .extension(Authenticated(user.clone()))
            .extension(user);
        if upgrade {
            req = req
                .header("connection", "Upgrade")
                .header("upgrade", "SPDY/3.1");
        }
        with_info(req.body(body::full(body)).unwrap())
    }

    fn request_objects(dir: &std::path::Path) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        for (_, path) in crate::audit::segment::list_segments(dir).unwrap() {
            for line in std::fs::read_to_string(path).unwrap().lines() {
                let record: serde_json::Value = serde_json::from_str(line).unwrap();
                out.push(record["event"]["requestObject"].clone());
            }
        }
        out
    }

    #[test]
    fn nothing_is_captured_without_a_record_that_wants_it() {
        assert!(!captures(None, &HeaderMap::new()));
    }

    #[tokio::test]
    async fn a_write_s_body_is_recorded_and_handed_on_whole_but_an_upgrade_s_is_not_read() {
        let tmp = tempfile::tempdir().unwrap();
        let seen = echo();
        let service = AuditLayer::new(Some(auditor(tmp.path()).await))
            .layer(BodyCaptureLayer.layer(seen.clone()));
        let object = br#"{"kind":"Cluster","metadata":{"name":"edge-1"}}"#.to_vec();

        let created = service
            .clone()
            .oneshot(post(object.clone(), false))
            .await
            .unwrap();
        assert_eq!(created.status(), 200);
        let upgraded = service.oneshot(post(object, true)).await.unwrap();
        assert_eq!(upgraded.status(), 200);

        let objects = request_objects(tmp.path());
        assert_eq!(objects[1]["metadata"]["name"], "edge-1", "{objects:?}");
        assert!(
            objects[3].is_null(),
            "an upgrade's bytes are the protocol, not a body"
        );
        assert_eq!(seen.count(), 2);
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_refused_and_goes_no_further() {
        let tmp = tempfile::tempdir().unwrap();
        let seen = echo();
        let service = AuditLayer::new(Some(auditor(tmp.path()).await))
            .layer(BodyCaptureLayer.layer(seen.clone()));
        let big = vec![b' '; body::MAX_REQUEST_BODY_BYTES + 1];

        let response = service.oneshot(post(big, false)).await.unwrap();

        assert_eq!(response.status(), 413);
        assert_eq!(seen.count(), 0);
    }
}
