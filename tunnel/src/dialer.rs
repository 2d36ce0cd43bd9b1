//! The hub's way to reach an agent: a [`tower::Service`] per identity.
//!
//! Each call looks the identity up in the [`SessionRegistry`] and opens one HTTP/2 stream on
//! that agent's connection; no socket is opened per request. An identity with no session fails
//! at once with [`Error::NotConnected`] (the hub answers 503) rather than waiting for the agent
//! to come back: the caller (kubectl) has its own retry policy and should not hang on ours.
//!
//! Upgrades (exec, attach, port-forward) use [`Dialer::upgrade`]: an RFC 8441 extended CONNECT
//! stream (`:method CONNECT`, `:protocol websocket` or `spdy/3.1`) that becomes a plain
//! bidirectional byte stream once the agent answers 2xx. It is one more HTTP/2 stream, flow
//! controlled like the others, so a stalled exec session cannot block anything else.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Method, Request, Response};
use hyper::body::Incoming;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;

use crate::body;
use crate::error::{BoxError, Error, Result};
use crate::registry::{Session, SessionRegistry};

/// A bidirectional byte stream through the tunnel (`AsyncRead + AsyncWrite`).
pub type UpgradedStream = TokioIo<Upgraded>;

/// The result of an extended CONNECT.
#[derive(Debug)]
pub enum UpgradeOutcome {
    /// The agent accepted: `head` is its response (e.g. `sec-websocket-protocol`), `stream`
    /// the byte stream.
    Upgraded {
        /// Status and headers of the agent's 2xx response.
        head: http::response::Parts,
        /// The byte stream.
        stream: UpgradedStream,
    },
    /// The agent answered with a non-2xx response (e.g. 403 from the edge cluster's RBAC),
    /// to relay to the caller as is.
    Rejected(Response<Incoming>),
}

/// Sends requests to one agent. Cheap to create and clone; see the module docs.
#[derive(Clone, Debug)]
pub struct Dialer {
    registry: SessionRegistry,
    identity: Arc<str>,
}

impl Dialer {
    pub(crate) fn new(registry: SessionRegistry, identity: Arc<str>) -> Self {
        Self { registry, identity }
    }

    /// The identity this dialer reaches.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    fn session(&self) -> Result<Session> {
        self.registry
            .get(&self.identity)
            .ok_or_else(|| Error::NotConnected {
                identity: self.identity.to_string(),
            })
    }

    /// Sends one request and returns the agent's streaming response.
    pub async fn send<B>(&self, req: Request<B>) -> Result<Response<Incoming>>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let session = self.session()?;
        session.send(req.map(body::boxed)).await
    }

    /// Opens an extended CONNECT stream with `:protocol` = `protocol`. `req`'s method is set to
    /// CONNECT; its path and headers are passed through.
    pub async fn upgrade(&self, protocol: &str, req: Request<()>) -> Result<UpgradeOutcome> {
        let session = self.session()?;
        if !session.supports_extended_connect() {
            return Err(Error::ExtendedConnectUnsupported);
        }
        let (mut parts, ()) = req.into_parts();
        parts.method = Method::CONNECT;
        parts
            .extensions
            .insert(hyper::ext::Protocol::from(protocol));
        let response = session
            .send(Request::from_parts(parts, body::empty()))
            .await?;
        if !response.status().is_success() {
            return Ok(UpgradeOutcome::Rejected(response));
        }
        let mut response = response;
        let on_upgrade = hyper::upgrade::on(&mut response);
        let (head, _empty) = response.into_parts();
        let upgraded = on_upgrade.await.map_err(Error::Upgrade)?;
        Ok(UpgradeOutcome::Upgraded {
            head,
            stream: TokioIo::new(upgraded),
        })
    }
}

impl<B> tower::Service<Request<B>> for Dialer
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<Incoming>;
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Incoming>>> + Send>>;

    /// Always ready: HTTP/2 queues streams beyond the agent's concurrency limit, and an absent
    /// session is reported per call.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // Look the session up now, not when the future is first polled, so the request goes to
        // the session current at the time of the call.
        let session = self.session();
        let req = req.map(body::boxed::<B>);
        Box::pin(async move { session?.send(req).await })
    }
}
