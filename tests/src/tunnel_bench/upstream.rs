//! The upstream every benchmarked path ends at: an HTTPS server (HTTP/2 and HTTP/1.1 by ALPN,
//! as kube-apiserver serves) standing in for an edge cluster's kube-apiserver. Run as its own
//! process (`tunnel-bench serve-upstream`), so the load generator's CPU is not its CPU.
//!
//! | path                          | answer                                                   |
//! |-------------------------------|----------------------------------------------------------|
//! | `GET /bench/small`            | a ConfigMap of [`SMALL_BODY_BYTES`] (a small kubectl GET) |
//! | `GET /bench/blob?bytes=N`     | N bytes, streamed in 64 KiB chunks as flow control allows |
//! | `GET /bench/watch`            | one watch event, then the stream stays open, silent      |
//! | `GET /version`                | version info (the agent's facts watcher reads it)        |
//! | `GET /api/v1/nodes`           | an empty NodeList; with `watch=1`, a silent open watch   |
//! | anything else                 | a 404 Status                                             |

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use http::{header, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::pki::BenchPki;

/// Size of the small GET's body: about a ConfigMap or a small Pod as kubectl fetches it.
pub const SMALL_BODY_BYTES: usize = 1024;
/// Chunk size of streamed bodies.
const CHUNK_BYTES: usize = 64 * 1024;
/// Streams per connection the upstream allows (as the hub's own front does).
const MAX_CONCURRENT_STREAMS: u32 = 1000;

type UpstreamBody = BoxBody<Bytes, Infallible>;

/// Bodies built once and shared by every response.
struct Canned {
    small: Bytes,
    chunk: Bytes,
}

fn canned() -> Canned {
    let mut data = String::new();
    while data.len() < SMALL_BODY_BYTES - 200 {
        data.push_str("0123456789abcdef");
    }
    let mut small = serde_json::to_vec(&serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "bench", "namespace": "default", "resourceVersion": "1",
                     "uid": "6c0d1e2f-0000-4000-8000-000000000000"},
        "data": {"payload": data},
    }))
    .expect("static JSON");
    small.resize(SMALL_BODY_BYTES.max(small.len()), b' ');
    Canned {
        small: Bytes::from(small),
        chunk: Bytes::from(vec![b'x'; CHUNK_BYTES]),
    }
}

/// Serves on `listen` until the process ends; prints `listening on <addr>` once bound.
pub async fn serve(pki: &BenchPki, listen: SocketAddr) -> anyhow::Result<()> {
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(
        edgefleet_tunnel::tls::certificates_from_pem(&pki.read("upstream.crt")?)?,
        edgefleet_tunnel::tls::private_key_from_pem(&pki.read("upstream.key")?)?,
    )?;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    let listener = TcpListener::bind(listen).await?;
    println!("listening on {}", listener.local_addr()?);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http2()
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS);
    let builder = Arc::new(builder);
    let canned = Arc::new(canned());
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, builder, canned) = (acceptor.clone(), builder.clone(), canned.clone());
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let service = hyper::service::service_fn(move |req| {
                let canned = canned.clone();
                async move { Ok::<_, Infallible>(route(&canned, &req)) }
            });
            let _ = builder
                .serve_connection_with_upgrades(TokioIo::new(tls), service)
                .await;
        });
    }
}

fn route(canned: &Canned, req: &Request<Incoming>) -> Response<UpstreamBody> {
    let query = req.uri().query().unwrap_or("");
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
    };
    let watching = matches!(param("watch"), Some("1" | "true"));
    match req.uri().path() {
        "/bench/small" => json(StatusCode::OK, canned.small.clone()),
        "/bench/blob" => {
            let bytes: u64 = param("bytes").and_then(|b| b.parse().ok()).unwrap_or(0);
            blob(canned.chunk.clone(), bytes)
        }
        "/bench/watch" => held_watch(Bytes::from_static(
            b"{\"type\":\"ADDED\",\"object\":{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"bench\",\"resourceVersion\":\"1\"}}}\n",
        )),
        "/version" => json(
            StatusCode::OK,
            Bytes::from_static(br#"{"major":"1","minor":"31","gitVersion":"v1.31.4","gitCommit":"bench","gitTreeState":"clean","buildDate":"2026-01-01T00:00:00Z","goVersion":"go1.23","compiler":"gc","platform":"linux/amd64"}"#),
        ),
        "/api/v1/nodes" if watching => held_watch(Bytes::new()),
        "/api/v1/nodes" => json(
            StatusCode::OK,
            Bytes::from_static(br#"{"kind":"NodeList","apiVersion":"v1","metadata":{"resourceVersion":"1"},"items":[]}"#),
        ),
        _ => json(
            StatusCode::NOT_FOUND,
            Bytes::from_static(br#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}"#),
        ),
    }
}

fn json(status: StatusCode, body: Bytes) -> Response<UpstreamBody> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(body).boxed())
        .expect("a static response")
}

/// `total` bytes, produced a chunk at a time only as the connection asks for more (so a
/// stalled reader stalls production, as a real server's would).
fn blob(chunk: Bytes, total: u64) -> Response<UpstreamBody> {
    let frames = futures::stream::unfold(total, move |left| {
        let chunk = chunk.clone();
        async move {
            if left == 0 {
                return None;
            }
            let n = left.min(chunk.len() as u64);
            Some((
                Ok::<_, Infallible>(Frame::data(chunk.slice(..n as usize))),
                left - n,
            ))
        }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, total)
        .body(BodyExt::boxed(StreamBody::new(frames)))
        .expect("a static response")
}

/// A watch: `first` (if any), then nothing until the client goes away.
fn held_watch(first: Bytes) -> Response<UpstreamBody> {
    let head = futures::stream::iter((!first.is_empty()).then(|| Ok(Frame::data(first))));
    let frames = head.chain(futures::stream::pending());
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json;stream=watch")
        .body(BodyExt::boxed(StreamBody::new(frames)))
        .expect("a static response")
}
