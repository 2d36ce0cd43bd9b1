//! The request pipeline, in kube-apiserver's order (DESIGN.md §4): request info →
//! authentication → authorization → router.

use std::sync::Arc;

use futures::future::BoxFuture;
use http::{Request, Response};
use hyper::body::Incoming;

use super::body::Body;
use super::router::Router;
use super::server::Handler;
use crate::request_info;

/// The stack every request goes through.
pub struct Pipeline {
    pub router: Arc<Router>,
}

impl Handler for Pipeline {
    fn handle(&self, req: Request<Incoming>) -> BoxFuture<'static, Response<Body>> {
        let router = self.router.clone();
        Box::pin(async move {
            let info = request_info::parse(req.method(), req.uri().path(), req.uri().query());
            router.route(&info, req).await
        })
    }
}
