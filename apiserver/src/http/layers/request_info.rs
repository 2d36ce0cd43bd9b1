//! The first layer: what a request asks for, parsed once from its method, path, query and
//! headers, before anything judges it.
//!
//! kube's `WithRequestInfo`. Authentication needs nothing of it, but the audit layer (the
//! event's verb and objectRef), authorization (the attributes) and the router (the handler)
//! all read the same [`RequestInfo`], so they cannot disagree about what a request is: a
//! `?watch=yes` the router serves as a watch is audited and authorized as a watch.

use std::task::{Context, Poll};

use http::Request;
use tower::{Layer, Service};

use super::ServiceFuture;
use crate::http::body::Body;
use edgefleet_apimachinery::request_info::{self, RequestInfo};

/// Puts the request's [`RequestInfo`] into its extensions.
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestInfoLayer;

impl<S> Layer<S> for RequestInfoLayer {
    type Service = WithRequestInfo<S>;

    fn layer(&self, inner: S) -> Self::Service {
        WithRequestInfo { inner }
    }
}

/// See [`RequestInfoLayer`].
#[derive(Clone, Debug)]
pub struct WithRequestInfo<S> {
    inner: S,
}

/// The request info of a request head: kube's rules for method and path, and an upgrade
/// through the proxy (exec, attach, port-forward) authorized as `create` whatever its method.
pub fn request_info_of(parts: &http::request::Parts) -> RequestInfo {
    let mut info = request_info::parse(&parts.method, parts.uri.path(), parts.uri.query());
    crate::http::proxy::authorize_upgrades_as_create(&mut info, &parts.headers);
    info
}

impl<S, B> Service<Request<B>> for WithRequestInfo<S>
where
    S: Service<Request<B>, Response = http::Response<Body>, Error = std::convert::Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = std::convert::Infallible;
    type Future = ServiceFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let (mut parts, body) = req.into_parts();
        let info = request_info_of(&parts);
        parts.extensions.insert(info);
        Box::pin(self.inner.call(Request::from_parts(parts, body)))
    }
}

#[cfg(test)]
mod tests {
    use http::Method;

    use super::*;

    const CLUSTERS: &str = "/apis/edgefleet.io/v1alpha1/namespaces/retail/clusters";

    fn info(method: Method, uri: &str, upgrade: bool) -> RequestInfo {
        let mut req = Request::builder().method(method).uri(uri);
        if upgrade {
            req = req
                .header("connection", "Upgrade")
                .header("upgrade", "websocket");
        }
        request_info_of(&req.body(()).unwrap().into_parts().0)
    }

    #[test]
    fn a_collection_get_is_a_watch_exactly_when_kube_says_so() {
        for (query, verb) in [
            ("watch=yes", "watch"),
            ("watch=true", "watch"),
            ("watch=1", "watch"),
            ("watch=false", "list"),
            ("watch=0", "list"),
            ("", "list"),
        ] {
            let uri = format!("{CLUSTERS}?{query}");
            assert_eq!(info(Method::GET, &uri, false).verb, verb, "?{query}");
        }
    }

    #[test]
    fn an_upgrade_through_the_proxy_is_a_create_and_elsewhere_keeps_its_verb() {
        let exec = format!("{CLUSTERS}/edge-1/proxy/api/v1/namespaces/default/pods/p/exec");
        assert_eq!(info(Method::GET, &exec, true).verb, "create");
        assert_eq!(info(Method::GET, &exec, false).verb, "get");
        assert_eq!(
            info(Method::GET, &format!("{CLUSTERS}/edge-1"), true).verb,
            "get"
        );
    }
}
