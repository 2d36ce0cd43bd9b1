//! The tunnel handshake: one frame from the agent, one frame back, then HTTP/2.
//!
//! It runs inside TLS, before any HTTP/2 byte, so the hub can decide who the agent is (and
//! enroll it) before it spends an HTTP/2 connection on it.
//!
//! ```text
//!   frame := length:u32 (big-endian, 1..=MAX_HANDSHAKE_FRAME_BYTES) ‖ JSON document
//!
//!   agent ── Hello   {"protocolVersion":1,"agentVersion":…,"identityClaim":…,
//!                     "bootstrapToken":…,"csrPem":…,"capabilities":[…]} ──────────► hub
//!   agent ◄── {"type":"welcome","identity":…,"certificateChainPem":…,
//!              "hubReplica":…,"keepalive":{"intervalMs":…,"timeoutMs":…}}
//!          or {"type":"refused","reason":"bootstrap token already used","retryAfterMs":…} ── hub
//! ```
//!
//! After a Welcome the agent serves HTTP/2 and the hub speaks it as the client; after a Refused
//! the hub closes the connection. Unknown JSON fields are ignored so either side can add fields
//! without a version bump; `protocolVersion` changes only for incompatible changes.
//!
//! Decoding is total: any byte string yields a value or a [`FrameError`], allocation is bounded
//! by [`MAX_HANDSHAKE_FRAME_BYTES`] (the length is checked before anything is allocated), and
//! `serde_json` bounds nesting depth. [`decode_hello`] and [`decode_reply`] are the entry points
//! the fuzz target (`tunnel/fuzz`) and the property tests drive. Timeouts on a slow sender are
//! the caller's (the whole handshake runs under `HANDSHAKE_TIMEOUT`).

use std::fmt;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub use crate::limits::MAX_HANDSHAKE_FRAME_BYTES;

/// The handshake version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// Capability: the agent accepts extended CONNECT (RFC 8441) streams.
pub const CAPABILITY_EXTENDED_CONNECT: &str = "extended-connect";
/// Capability: the agent answers certificate rotation on the reserved paths.
pub const CAPABILITY_CERTIFICATE_ROTATION: &str = "certificate-rotation";

const LENGTH_PREFIX_BYTES: usize = 4;

/// The agent's opening message.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Hello {
    /// Must equal [`PROTOCOL_VERSION`] of the hub.
    pub protocol_version: u32,
    /// The agent's build version, for the hub's status and logs.
    #[serde(default)]
    pub agent_version: String,
    /// Who the agent says it is (e.g. `cluster:retail/edge-1`). A claim only: the hub trusts
    /// the client certificate or the bootstrap token, never this alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_claim: Option<String>,
    /// Single-use enrollment token. Never logged ([`fmt::Debug`] redacts it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap_token: Option<String>,
    /// PKCS#10 request for the certificate the hub should issue on enrollment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csr_pem: Option<String>,
    /// Optional features the agent supports (see the `CAPABILITY_*` constants).
    #[serde(default)]
    pub capabilities: Vec<String>,
}

impl fmt::Debug for Hello {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hello")
            .field("protocol_version", &self.protocol_version)
            .field("agent_version", &self.agent_version)
            .field("identity_claim", &self.identity_claim)
            .field(
                "bootstrap_token",
                &self.bootstrap_token.as_ref().map(|_| "<redacted>"),
            )
            .field("csr_pem", &self.csr_pem.as_ref().map(|c| c.len()))
            .field("capabilities", &self.capabilities)
            .finish()
    }
}

/// The hub's answer to a [`Hello`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum HubReply {
    /// Admitted: switch to HTTP/2.
    Welcome(Welcome),
    /// Not admitted: the hub closes the connection after this frame.
    Refused(Refused),
}

/// The hub admitted the agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Welcome {
    /// The identity the hub accepted, e.g. `cluster:retail/edge-1`.
    pub identity: String,
    /// The certificate chain (leaf first) the hub issued for the agent's CSR, when it enrolled
    /// the agent on this connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_chain_pem: Option<String>,
    /// Which hub replica holds the session.
    #[serde(default)]
    pub hub_replica: String,
    /// Keepalive the agent should use on this session.
    pub keepalive: KeepaliveParams,
}

/// The hub refused the agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Refused {
    /// Why, for a human reading the agent's log ("bootstrap token already used").
    pub reason: String,
    /// Do not try again before this many milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

impl Refused {
    /// `retry_after_ms` as a duration.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after_ms.map(Duration::from_millis)
    }
}

/// HTTP/2 keepalive parameters on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeepaliveParams {
    /// PING after this many milliseconds of silence.
    pub interval_ms: u64,
    /// Give up on the peer when a PING is unanswered this many milliseconds.
    pub timeout_ms: u64,
}

/// Why a handshake frame could not be read or decoded.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The length prefix exceeds [`MAX_HANDSHAKE_FRAME_BYTES`] (often: the peer is not speaking
    /// this protocol, e.g. an HTTP client whose `GET ` reads as a 1 GiB length).
    #[error("handshake frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A zero length prefix.
    #[error("empty handshake frame")]
    Empty,
    /// Fewer bytes than the frame needs (only from the slice decoders).
    #[error("handshake frame truncated: need {needed} bytes, have {available}")]
    Truncated {
        /// Bytes the complete frame occupies, prefix included.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// The payload is not the expected JSON document.
    #[error("handshake frame is not a valid message")]
    Json(#[source] serde_json::Error),
    /// The message does not fit in a frame (encoding side).
    #[error("handshake message of {len} bytes does not fit in a frame")]
    MessageTooLarge {
        /// Encoded length.
        len: usize,
    },
    /// Reading or writing the transport failed (including the peer closing mid-frame).
    #[error("handshake transport failed")]
    Io(#[source] std::io::Error),
}

/// Encodes `message` as one frame (length prefix + JSON).
pub fn encode_frame<T: Serialize>(message: &T) -> Result<Vec<u8>, FrameError> {
    let json = serde_json::to_vec(message).map_err(FrameError::Json)?;
    if json.len() > MAX_HANDSHAKE_FRAME_BYTES {
        return Err(FrameError::MessageTooLarge { len: json.len() });
    }
    let len =
        u32::try_from(json.len()).map_err(|_| FrameError::MessageTooLarge { len: json.len() })?;
    let mut frame = Vec::with_capacity(LENGTH_PREFIX_BYTES + json.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&json);
    Ok(frame)
}

/// Decodes one frame from the front of `bytes`, returning the message and the number of bytes
/// the frame occupied (anything after it is not the handshake's).
pub fn decode_frame<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, usize), FrameError> {
    let Some(prefix) = bytes.first_chunk::<LENGTH_PREFIX_BYTES>() else {
        return Err(FrameError::Truncated {
            needed: LENGTH_PREFIX_BYTES,
            available: bytes.len(),
        });
    };
    let len = checked_len(*prefix)?;
    let end = LENGTH_PREFIX_BYTES + len;
    let Some(payload) = bytes.get(LENGTH_PREFIX_BYTES..end) else {
        return Err(FrameError::Truncated {
            needed: end,
            available: bytes.len(),
        });
    };
    Ok((decode_payload(payload)?, end))
}

/// [`decode_frame`] for the agent's [`Hello`]: the parser the hub runs on untrusted bytes.
pub fn decode_hello(bytes: &[u8]) -> Result<(Hello, usize), FrameError> {
    decode_frame(bytes)
}

/// [`decode_frame`] for the hub's [`HubReply`].
pub fn decode_reply(bytes: &[u8]) -> Result<(HubReply, usize), FrameError> {
    decode_frame(bytes)
}

/// Reads exactly one frame from `reader` and decodes it. Reads nothing beyond the frame, so the
/// HTTP/2 bytes that follow stay in the stream.
pub async fn read_message<T, R>(reader: &mut R) -> Result<T, FrameError>
where
    T: DeserializeOwned,
    R: AsyncRead + Unpin,
{
    let mut prefix = [0_u8; LENGTH_PREFIX_BYTES];
    reader
        .read_exact(&mut prefix)
        .await
        .map_err(FrameError::Io)?;
    let len = checked_len(prefix)?;
    // Bounded by `checked_len`: never more than MAX_HANDSHAKE_FRAME_BYTES.
    let mut payload = vec![0_u8; len];
    reader
        .read_exact(&mut payload)
        .await
        .map_err(FrameError::Io)?;
    decode_payload(&payload)
}

/// Writes `message` as one frame and flushes it.
pub async fn write_message<T, W>(writer: &mut W, message: &T) -> Result<(), FrameError>
where
    T: Serialize,
    W: AsyncWrite + Unpin,
{
    let frame = encode_frame(message)?;
    writer.write_all(&frame).await.map_err(FrameError::Io)?;
    writer.flush().await.map_err(FrameError::Io)
}

fn checked_len(prefix: [u8; LENGTH_PREFIX_BYTES]) -> Result<usize, FrameError> {
    // u32 always fits in usize on the 32- and 64-bit targets we build for; saturate otherwise.
    let len = usize::try_from(u32::from_be_bytes(prefix)).unwrap_or(usize::MAX);
    if len == 0 {
        return Err(FrameError::Empty);
    }
    if len > MAX_HANDSHAKE_FRAME_BYTES {
        return Err(FrameError::TooLarge {
            len,
            max: MAX_HANDSHAKE_FRAME_BYTES,
        });
    }
    Ok(len)
}

fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T, FrameError> {
    serde_json::from_slice(payload).map_err(FrameError::Json)
}

#[cfg(test)]
mod tests;
