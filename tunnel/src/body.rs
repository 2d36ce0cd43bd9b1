//! The one body type that crosses the tunnel in requests from the hub and responses from the
//! agent's wrapper service: boxed, so the hub can forward any body (a kubectl upload, a pushed
//! bundle) over one HTTP/2 connection typed for a single body type.

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};

use crate::error::BoxError;

/// Body of requests sent through the tunnel and of responses served by the agent.
pub type TunnelBody = UnsyncBoxBody<Bytes, BoxError>;

/// Boxes any body into a [`TunnelBody`].
pub fn boxed<B>(body: B) -> TunnelBody
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// An empty [`TunnelBody`].
pub fn empty() -> TunnelBody {
    boxed(Empty::<Bytes>::new())
}

/// A [`TunnelBody`] holding `bytes`.
pub fn full(bytes: impl Into<Bytes>) -> TunnelBody {
    boxed(Full::new(bytes.into()))
}
