use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde_json::json;

use super::*;
use crate::auth::authn::testing::head;
use crate::auth::authn::{TokenFile, UnionAuthenticator};
use crate::auth::test_apiserver::{Answer, TestApiserver, TOKEN_REVIEWS};

const QUICK: RetryBackoff = RetryBackoff {
    initial: Duration::from_millis(1),
    factor: 1.0,
    jitter: 0.0,
    attempts: 2,
};

fn bearer(token: &str) -> Parts {
    head(&[("authorization", &format!("Bearer {token}"))])
}

fn alice() -> serde_json::Value {
    json!({
        "username": "alice",
        "uid": "a1b2",
        "groups": ["retail-admins", "system:authenticated"],
        "extra": {
            "authentication.kubernetes.io/credential-id": ["JTI=1234"],
            "scopes": ["view", "edit"],
        },
    })
}

async fn setup() -> (TestApiserver, TokenReviewAuthenticator) {
    let server = TestApiserver::start().await;
    server.require_bearer("hub-token");
    server.accept_token("alice-token", alice());
    let authenticator =
        TokenReviewAuthenticator::new(server.client("hub-token").await).retry_backoff(QUICK);
    (server, authenticator)
}

#[tokio::test]
async fn an_accepted_token_is_the_user_the_cluster_names() {
    let (server, authn) = setup().await;
    let user = authn
        .authenticate(&bearer("alice-token"), &[])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        user,
        UserInfo::new("alice")
            .with_uid("a1b2")
            .with_groups(["retail-admins", "system:authenticated"])
            .with_extra("authentication.kubernetes.io/credential-id", ["JTI=1234"])
            .with_extra("scopes", ["view", "edit"])
    );

    let received = server.received(TOKEN_REVIEWS);
    assert_eq!(received.len(), 1);
    // The hub authenticates as itself; the user's token travels only in the review.
    assert_eq!(
        received[0].authorization.as_deref(),
        Some("Bearer hub-token")
    );
    assert_eq!(received[0].body["apiVersion"], "authentication.k8s.io/v1");
    assert_eq!(received[0].body["kind"], "TokenReview");
    assert_eq!(received[0].body["spec"], json!({"token": "alice-token"}));
}

#[tokio::test]
async fn a_rejected_token_is_an_error_with_the_clusters_reason() {
    let (server, authn) = setup().await;
    let err = authn
        .authenticate(&bearer("stolen-token"), &[])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, AuthnError::TokenReviewRejected { reason } if reason == "invalid bearer token"),
        "{err:?}"
    );
    assert!(!err.message().contains("stolen-token"));

    // Authenticated but nameless, or not authenticated without a reason: still rejected.
    server.on_token_review(|_| Answer::Status(json!({"authenticated": true, "user": {}})));
    let err = authn.authenticate(&bearer("t2"), &[]).await.unwrap_err();
    assert!(matches!(err, AuthnError::TokenReviewRejected { .. }));
    server.on_token_review(|_| Answer::Status(json!({})));
    let err = authn.authenticate(&bearer("t3"), &[]).await.unwrap_err();
    assert!(matches!(err, AuthnError::TokenReviewRejected { .. }));
}

#[tokio::test]
async fn requests_without_a_bearer_token_are_not_reviewed() {
    let (server, authn) = setup().await;
    assert_eq!(authn.authenticate(&head(&[]), &[]).await.unwrap(), None);
    let basic = head(&[("authorization", "Basic YTpi")]);
    assert_eq!(authn.authenticate(&basic, &[]).await.unwrap(), None);
    assert_eq!(server.count(TOKEN_REVIEWS), 0);
}

#[tokio::test]
async fn a_failed_review_is_an_error_and_is_not_cached() {
    let (server, authn) = setup().await;
    server.on_token_review(|_| Answer::Fail(403, "Forbidden"));
    let err = authn
        .authenticate(&bearer("alice-token"), &[])
        .await
        .unwrap_err();
    assert!(
        matches!(err, AuthnError::TokenReviewFailed { .. }),
        "{err:?}"
    );
    assert!(err.message().contains("403"), "{}", err.message());

    server.accept_token("alice-token", alice());
    let user = authn
        .authenticate(&bearer("alice-token"), &[])
        .await
        .unwrap();
    assert_eq!(user.unwrap().name, "alice");
    assert_eq!(server.count(TOKEN_REVIEWS), 2);
}

#[tokio::test]
async fn answers_are_reused_within_the_ttl_and_asked_again_after() {
    let (server, authn) = setup().await;
    let authn = authn.cache_ttl(Duration::from_secs(10));
    for _ in 0..3 {
        authn
            .authenticate(&bearer("alice-token"), &[])
            .await
            .unwrap();
        authn
            .authenticate(&bearer("bad-token"), &[])
            .await
            .unwrap_err();
    }
    assert_eq!(
        server.count(TOKEN_REVIEWS),
        2,
        "one review per token, accepted or rejected"
    );

    // Jump past the TTL without waiting: pause, advance, and let real time run on from there.
    tokio::time::pause();
    tokio::time::advance(Duration::from_secs(10)).await;
    tokio::time::resume();
    authn
        .authenticate(&bearer("alice-token"), &[])
        .await
        .unwrap();
    authn
        .authenticate(&bearer("bad-token"), &[])
        .await
        .unwrap_err();
    assert_eq!(server.count(TOKEN_REVIEWS), 4);

    // A zero TTL turns the cache off.
    let uncached =
        TokenReviewAuthenticator::new(server.client("hub-token").await).cache_ttl(Duration::ZERO);
    for _ in 0..2 {
        uncached
            .authenticate(&bearer("alice-token"), &[])
            .await
            .unwrap();
    }
    assert_eq!(server.count(TOKEN_REVIEWS), 6);
}

#[tokio::test]
async fn concurrent_requests_with_one_token_share_one_review() {
    let (server, authn) = setup().await;
    let heads: Vec<Parts> = (0..8).map(|_| bearer("alice-token")).collect();
    // join_all polls every request once before the review can be answered (this runtime has
    // one thread), so all eight are waiting together.
    let users = futures::future::join_all(heads.iter().map(|h| authn.authenticate(h, &[]))).await;
    assert!(users
        .iter()
        .all(|u| u.as_ref().unwrap().as_ref().unwrap().name == "alice"));
    assert_eq!(server.count(TOKEN_REVIEWS), 1);

    let heads = [bearer("alice-token-2"), bearer("alice-token-3")];
    futures::future::join_all(heads.iter().map(|h| authn.authenticate(h, &[]))).await;
    assert_eq!(
        server.count(TOKEN_REVIEWS),
        3,
        "different tokens are reviewed each"
    );
}

#[tokio::test]
async fn audiences_are_asked_for_and_checked() {
    let (server, authn) = setup().await;
    let authn = authn.audiences(vec!["edgefleet".into(), "hub".into()]);
    let granted = Arc::new(Mutex::new(None::<serde_json::Value>));
    let answer = granted.clone();
    server.on_token_review(move |_| {
        let mut status = json!({"authenticated": true, "user": {"username": "alice"}});
        if let Some(audiences) = answer.lock().unwrap().clone() {
            status["audiences"] = audiences;
        }
        Answer::Status(status)
    });

    // The server names none: it accepted ours.
    authn.authenticate(&bearer("t1"), &[]).await.unwrap();
    assert_eq!(
        server.received(TOKEN_REVIEWS)[0].body["spec"],
        json!({"token": "t1", "audiences": ["edgefleet", "hub"]})
    );
    *granted.lock().unwrap() = Some(json!(["hub"]));
    authn.authenticate(&bearer("t2"), &[]).await.unwrap();
    *granted.lock().unwrap() = Some(json!(["some-other-api"]));
    let err = authn.authenticate(&bearer("t3"), &[]).await.unwrap_err();
    assert!(
        matches!(err, AuthnError::TokenReviewRejected { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn behind_the_token_file_and_never_falling_back_to_anonymous() {
    let (server, review) = setup().await;
    let file = TokenFile::parse(b"file-token,bob,b1,ops\n", Path::new("tokens.csv")).unwrap();
    let union = UnionAuthenticator::builder()
        .anonymous(true)
        .token(file)
        .token(review)
        .build();

    let bob = union
        .authenticate(&bearer("file-token"), &[])
        .await
        .unwrap();
    assert_eq!(bob.unwrap().name, "bob");
    assert_eq!(server.count(TOKEN_REVIEWS), 0, "the file answered first");

    let alice = union
        .authenticate(&bearer("alice-token"), &[])
        .await
        .unwrap();
    assert_eq!(alice.unwrap().name, "alice");

    // Neither knows the token: 401, not anonymous, though anonymous access is on.
    let err = union
        .authenticate(&bearer("nobody"), &[])
        .await
        .unwrap_err();
    assert!(matches!(err, AuthnError::Union(_)), "{err:?}");
    let anonymous = union.authenticate(&head(&[]), &[]).await.unwrap();
    assert_eq!(anonymous.unwrap().name, crate::auth::ANONYMOUS);
}

/// Collects everything logged while it is the thread's default subscriber.
#[derive(Clone, Default)]
struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn tokens_never_reach_the_logs() {
    let logs = CapturedLogs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    // This runtime has one thread, so the default covers the spawned lookups too.
    let _guard = tracing::subscriber::set_default(subscriber);

    let (server, authn) = setup().await;
    authn
        .authenticate(&bearer("secret-rejected"), &[])
        .await
        .unwrap_err();
    server.on_token_review(|_| Answer::Fail(500, "InternalError"));
    authn
        .authenticate(&bearer("secret-failing"), &[])
        .await
        .unwrap_err();
    server.on_token_review(|_| Answer::Fail(403, "Forbidden"));
    authn
        .authenticate(&bearer("secret-forbidden"), &[])
        .await
        .unwrap_err();

    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("TokenReview failed"),
        "the failures were logged"
    );
    for secret in [
        "secret-rejected",
        "secret-failing",
        "secret-forbidden",
        "hub-token",
    ] {
        assert!(!logs.contains(secret), "{secret} was logged:\n{logs}");
    }
}
