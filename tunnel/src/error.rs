//! The crate's error type.
//!
//! One enum for everything the public API returns. The hub maps it to HTTP in one place:
//! [`Error::NotConnected`] → 503, [`Error::ReservedPath`] → 404, a failed stream
//! ([`Error::Request`]) → 502. A malformed frame or a misbehaving peer only ever ends that
//! stream or that connection; nothing here is fatal to the process.

use std::time::Duration;

use crate::handshake::FrameError;

/// Boxed error, the currency of hyper and tower bodies and services.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the tunnel.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No session for this identity on this hub replica (never connected, disconnected, or
    /// closed). Returned at once, without waiting for the agent.
    #[error("agent {identity:?} is not connected to this hub replica")]
    NotConnected {
        /// The identity looked up.
        identity: String,
    },
    /// Paths under `/.well-known/edgefleet-tunnel` belong to the tunnel and are never forwarded.
    #[error("path {path:?} is reserved for the tunnel itself")]
    ReservedPath {
        /// The refused path.
        path: String,
    },
    /// A request through the tunnel failed (the stream was reset, the connection was lost
    /// mid-response, the request was malformed).
    #[error("request through the tunnel failed")]
    Request(#[source] hyper::Error),
    /// An extended CONNECT was answered with 2xx but the stream could not be taken over.
    #[error("upgrading the tunnel stream failed")]
    Upgrade(#[source] hyper::Error),
    /// The agent does not accept extended CONNECT streams on this session.
    #[error("the agent does not accept extended CONNECT streams")]
    ExtendedConnectUnsupported,
    /// A handshake frame could not be read or decoded.
    #[error("tunnel handshake failed")]
    Handshake(#[source] FrameError),
    /// The hub refused the agent.
    #[error("the hub refused the tunnel: {reason}")]
    Refused {
        /// The hub's reason, for the agent's log.
        reason: String,
        /// How long the hub asked the agent to wait.
        retry_after: Option<Duration>,
    },
    /// The peer broke the tunnel protocol (wrong ALPN, TLS version, unexpected answer).
    #[error("tunnel protocol violation: {0}")]
    Protocol(String),
    /// Connecting, TLS or HTTP/2 setup failed.
    #[error("tunnel connection failed")]
    Connect(#[source] std::io::Error),
    /// HTTP/2 setup failed.
    #[error("HTTP/2 setup failed")]
    Http2(#[source] hyper::Error),
    /// A step ran out of time.
    #[error("timed out during {0}")]
    Timeout(&'static str),
    /// TLS configuration could not be built from the given material.
    #[error("invalid TLS configuration")]
    TlsConfig(#[source] rustls::Error),
    /// PEM material (certificate, key, CSR) could not be parsed.
    #[error("invalid PEM: {0}")]
    Pem(String),
    /// Generating a key, a CSR or a certificate failed.
    #[error("certificate operation failed")]
    Certificate(#[source] rcgen::Error),
    /// An issued certificate does not belong to the key it was requested for.
    #[error("issued certificate does not match the agent's key")]
    CertificateKeyMismatch,
    /// Reading or writing the agent's identity directory failed.
    #[error("identity store at {path} failed")]
    IdentityStore {
        /// File or directory involved.
        path: std::path::PathBuf,
        /// The I/O failure.
        #[source]
        source: std::io::Error,
    },
    /// The agent answered a rotation step with an unexpected status.
    #[error("certificate rotation step {step} answered {status}")]
    Rotation {
        /// Which reserved path.
        step: &'static str,
        /// The agent's status code.
        status: http::StatusCode,
    },
    /// Reading a reserved-path body failed or it was too large.
    #[error("reading a tunnel control body failed")]
    ControlBody(#[source] BoxError),
    /// The hub's certificate signer failed.
    #[error("signing the agent's certificate failed")]
    Signer(#[source] BoxError),
}

/// `error` and its sources, joined with `: `, for one log line or one message. A cause whose
/// text ends the text so far is left out: hyper, rustls and io errors often repeat their cause
/// in their own message.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
