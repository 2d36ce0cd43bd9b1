//! The facts stream: the long-lived `GET` [`FACTS_PATH`](edgefleet_api::agent::FACTS_PATH)
//! response, `application/x-ndjson`, one [`ClusterFacts`](edgefleet_api::agent::ClusterFacts)
//! line per frame.
//!
//! ```text
//!   feed (watch channel of the current line; None until the facts are first known)
//!     │
//!     ▼  FactsBody
//!   line ─► emit at once, reset the heartbeat
//!   changed line ─► emit at once, reset the heartbeat
//!   heartbeat elapsed ─► emit the last line again, reset the heartbeat
//!   feed's owner gone ─► end of body (the hub reopens the stream)
//! ```
//!
//! Until the facts are known (a real agent before its first successful node list) the body
//! sends nothing: an empty line would tell the hub the cluster has no nodes. Once known, the
//! last facts keep being repeated even while the upstream is unreachable, since the heartbeat
//! says the *agent* is alive; the facts themselves stay what was last seen.
//!
//! Each stream costs one watch receiver and one timer: no task, nothing rendered per stream.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use edgefleet_tunnel::{body, TunnelBody};
use futures::StreamExt;
use http::{header, HeaderValue, Response};
use http_body::Frame;
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};
use tokio_stream::wrappers::WatchStream;

/// `Content-Type` of the facts stream.
pub const NDJSON: &str = "application/x-ndjson";

/// The current facts line (JSON + newline), `None` until known.
pub type FactsFeed = watch::Receiver<Option<Bytes>>;

/// The 200 response streaming `feed`, repeating the last line every `heartbeat`.
pub fn facts_response(feed: FactsFeed, heartbeat: Duration) -> Response<TunnelBody> {
    let body = FactsBody {
        lines: WatchStream::new(feed),
        last: None,
        heartbeat: Box::pin(tokio::time::sleep(heartbeat)),
        interval: heartbeat,
    };
    let mut response = Response::new(body::boxed(body));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(NDJSON));
    response
}

struct FactsBody {
    lines: WatchStream<Option<Bytes>>,
    last: Option<Bytes>,
    heartbeat: Pin<Box<Sleep>>,
    interval: Duration,
}

impl FactsBody {
    fn emit(&mut self, line: Bytes) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let deadline = Instant::now() + self.interval;
        self.heartbeat.as_mut().reset(deadline);
        self.last = Some(line.clone());
        Poll::Ready(Some(Ok(Frame::data(line))))
    }
}

impl http_body::Body for FactsBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        loop {
            match this.lines.poll_next_unpin(cx) {
                Poll::Ready(Some(Some(line))) => return this.emit(line),
                // Not known yet: keep waiting for the first facts.
                Poll::Ready(Some(None)) => continue,
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => break,
            }
        }
        if let Some(last) = &this.last {
            if this.heartbeat.as_mut().poll(cx).is_ready() {
                let line = last.clone();
                return this.emit(line);
            }
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    const HEARTBEAT: Duration = Duration::from_secs(20);

    async fn next_line(body: &mut TunnelBody) -> Bytes {
        body.frame().await.unwrap().unwrap().into_data().unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_line_at_once_changes_at_once_and_the_same_line_as_heartbeat() {
        let (tx, feed) = watch::channel(Some(Bytes::from_static(b"{\"a\":1}\n")));
        let response = facts_response(feed, HEARTBEAT);
        assert_eq!(response.headers()[header::CONTENT_TYPE], NDJSON);
        let mut body = response.into_body();

        let start = Instant::now();
        assert_eq!(next_line(&mut body).await, "{\"a\":1}\n");
        assert_eq!(start.elapsed(), Duration::ZERO);

        // Nothing until the heartbeat is due, then the same line.
        assert_eq!(next_line(&mut body).await, "{\"a\":1}\n");
        assert_eq!(start.elapsed(), HEARTBEAT);

        // A change is sent at once and restarts the heartbeat.
        tokio::time::advance(Duration::from_secs(5)).await;
        tx.send_replace(Some(Bytes::from_static(b"{\"a\":2}\n")));
        let changed_at = Instant::now();
        assert_eq!(next_line(&mut body).await, "{\"a\":2}\n");
        assert_eq!(changed_at.elapsed(), Duration::ZERO);
        assert_eq!(next_line(&mut body).await, "{\"a\":2}\n");
        assert_eq!(changed_at.elapsed(), HEARTBEAT);

        // The feed's owner going away ends the stream.
        drop(tx);
        assert!(body.frame().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_is_sent_before_the_facts_are_known() {
        let (tx, feed) = watch::channel(None);
        let mut body = facts_response(feed, HEARTBEAT).into_body();
        let silent = tokio::time::timeout(3 * HEARTBEAT, body.frame()).await;
        assert!(
            silent.is_err(),
            "sent {silent:?} before any facts were known"
        );

        tx.send_replace(Some(Bytes::from_static(b"{}\n")));
        assert_eq!(next_line(&mut body).await, "{}\n");
    }
}
