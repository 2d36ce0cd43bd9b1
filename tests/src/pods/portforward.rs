//! `port-forward` over SPDY (`portforward.k8s.io`), whether the SPDY connection is the upgraded
//! HTTP/1.1 connection itself or tunnelled inside a WebSocket (`SPDY/3.1+portforward.k8s.io`,
//! kubectl's default since 1.31: the WebSocket's binary messages carry the SPDY byte stream).
//!
//! ```text
//! per forwarded TCP connection the client opens two streams with the same requestid:
//!   streamtype=error port=P requestid=N   (the client closes its side at once)
//!   streamtype=data  port=P requestid=N   bytes both ways
//! the server connects to the pod's port P and copies; when the client FINs data, the server
//! FINs data and error. A port nobody listens on: a message on the error stream, FIN both.
//! ```
//!
//! The pod's only open port is [`api::ECHO_PORT`], which echoes what it receives.

use std::collections::HashMap;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::{api, spdy};

/// The SPDY subprotocol of port forwarding.
pub const PROTOCOL: &str = "portforward.k8s.io";
/// The WebSocket subprotocol that tunnels it.
pub const TUNNELED_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";

#[derive(Default)]
struct Pair {
    error: Option<spdy::Stream>,
    data: Option<spdy::Stream>,
}

/// Serves port forwarding on a SPDY session until the client hangs up.
pub async fn serve(mut session: spdy::Session) {
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    while let Some(stream) = session.streams.recv().await {
        let request = stream.header("requestid").unwrap_or_default().to_string();
        let pair = pairs.entry(request.clone()).or_default();
        match stream.header("streamtype") {
            Some("error") => pair.error = Some(stream),
            Some("data") => pair.data = Some(stream),
            other => {
                eprintln!("test upstream: unexpected port-forward stream type {other:?}");
                session.writer.reset(stream.id);
                continue;
            }
        }
        if pair.error.is_some() && pair.data.is_some() {
            let pair = pairs.remove(&request).expect("just completed");
            let (Some(error), Some(data)) = (pair.error, pair.data) else {
                continue;
            };
            tokio::spawn(forward(session.writer.clone(), error, data));
        }
    }
}

async fn forward(writer: spdy::Writer, error: spdy::Stream, mut data: spdy::Stream) {
    let port = data.header("port").and_then(|p| p.parse::<u16>().ok());
    if port == Some(api::ECHO_PORT) {
        while let Some(chunk) = data.data.recv().await {
            writer.data(data.id, chunk);
        }
    } else {
        let port = data.header("port").unwrap_or_default();
        let message = format!(
            "error forwarding port {port} to pod {}, uid {}: failed to connect to localhost:{port} inside the pod: connection refused",
            api::POD,
            api::POD_UID,
        );
        writer.data(error.id, Bytes::from(message));
    }
    writer.fin(data.id);
    writer.fin(error.id);
}

/// Serves port forwarding tunnelled in a WebSocket: the messages' payloads are one byte stream
/// in each direction, which a SPDY session reads and writes.
pub async fn over_websocket<S>(ws: WebSocketStream<S>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    let (mut from_spdy, mut to_spdy) = tokio::io::split(ours);
    let (mut sink, mut source) = ws.split();
    tokio::spawn(async move {
        let mut buf = vec![0; 32 * 1024];
        loop {
            match from_spdy.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let message = Message::Binary(Bytes::copy_from_slice(&buf[..n]));
                    if sink.send(message).await.is_err() {
                        return;
                    }
                }
            }
        }
        let _ = sink
            .send(Message::Close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            })))
            .await;
    });
    tokio::spawn(async move {
        while let Some(Ok(message)) = source.next().await {
            if let Message::Binary(data) = message {
                if to_spdy.write_all(&data).await.is_err() {
                    break;
                }
            }
        }
        let _ = to_spdy.shutdown().await;
    });
    serve(spdy::serve(theirs)).await;
}
