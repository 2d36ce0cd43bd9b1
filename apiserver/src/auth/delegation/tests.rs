use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use serde_json::json;

use super::*;
use crate::auth::test_apiserver::{unreachable_url, Answer, TestApiserver, TOKEN_REVIEWS};

/// Retries without waiting long (the backoff itself is not what these tests check).
const QUICK: RetryBackoff = RetryBackoff {
    initial: Duration::from_millis(1),
    factor: 1.0,
    jitter: 0.0,
    attempts: 3,
};

fn review(token: &str) -> TokenReview {
    TokenReview {
        spec: TokenReviewSpec {
            token: Some(token.into()),
            audiences: None,
        },
        ..TokenReview::default()
    }
}

async fn post_review(client: &kube::Client) -> Result<TokenReview, RequestError> {
    post(
        client,
        TOKEN_REVIEWS,
        &review("user-token"),
        QUICK,
        TOKEN_REVIEW_TIMEOUT,
    )
    .await
}

#[tokio::test]
async fn a_kubeconfig_client_talks_to_its_server_with_its_own_credential() {
    let server = TestApiserver::start().await;
    server.require_bearer("hub-token");
    let dir = tempfile::tempdir().unwrap();
    // The kubeconfig names its CA by a path relative to itself, as operators write them.
    let kubeconfig = server.write_kubeconfig(dir.path(), "hub-token");
    let client = client_from_kubeconfig(&kubeconfig).await.unwrap();

    let answer = post_review(&client).await.unwrap();
    assert_eq!(answer.status.unwrap().authenticated, Some(false));
    let received = server.received(TOKEN_REVIEWS);
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].method, http::Method::POST);
    assert_eq!(
        received[0].authorization.as_deref(),
        Some("Bearer hub-token")
    );
    assert_eq!(
        received[0].content_type.as_deref(),
        Some("application/json")
    );
    assert_eq!(
        received[0].body,
        json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "metadata": {},
            "spec": {"token": "user-token"},
        })
    );

    // A client with another credential is refused, so the check above means something.
    let other = server.client("someone-else").await;
    let err = post_review(&other).await.unwrap_err();
    assert!(
        matches!(err, RequestError::Status { code: 401, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn a_missing_kubeconfig_names_the_file() {
    let Err(err) = client_from_kubeconfig(Path::new("/nonexistent/kubeconfig")).await else {
        panic!("no kubeconfig, no client");
    };
    assert!(matches!(err, ClientConfigError::Kubeconfig { .. }));
    assert!(err.to_string().contains("/nonexistent/kubeconfig"));
}

/// A fake service account mount for `server`, and the environment kubelet would set.
fn fake_pod(server: &TestApiserver, dir: &Path, token: &str) -> InClusterEnvironment {
    std::fs::write(dir.join("token"), token).unwrap();
    std::fs::write(dir.join("ca.crt"), &server.ca_pem).unwrap();
    std::fs::write(dir.join("namespace"), "edgefleet-system").unwrap();
    InClusterEnvironment {
        service_host: Some(server.addr.ip().to_string()),
        service_port: Some(server.addr.port().to_string()),
        service_account_dir: dir.to_owned(),
    }
}

#[tokio::test]
async fn the_in_cluster_client_uses_the_service_account_token_and_ca() {
    let server = TestApiserver::start().await;
    server.require_bearer("service-account-token");
    let dir = tempfile::tempdir().unwrap();
    let env = fake_pod(&server, dir.path(), "service-account-token");
    assert!(env.is_in_cluster());

    let client = client(None, &env).await.unwrap();
    assert_eq!(client.default_namespace(), "edgefleet-system");
    post_review(&client).await.unwrap();
    assert_eq!(
        server.received(TOKEN_REVIEWS)[0].authorization.as_deref(),
        Some("Bearer service-account-token")
    );
}

#[tokio::test]
async fn outside_a_cluster_or_without_the_mount_there_is_no_in_cluster_client() {
    let outside = InClusterEnvironment::default();
    assert!(!outside.is_in_cluster());
    assert!(matches!(
        client_in_cluster(&outside).err(),
        Some(ClientConfigError::NotInCluster)
    ));

    let dir = tempfile::tempdir().unwrap();
    let mut env = InClusterEnvironment {
        service_host: Some("10.96.0.1".into()),
        service_port: Some("443".into()),
        service_account_dir: dir.path().to_owned(),
    };
    assert!(matches!(
        client_in_cluster(&env).err(),
        Some(ClientConfigError::ServiceAccountToken { .. })
    ));
    std::fs::write(dir.path().join("token"), "t").unwrap();
    assert!(matches!(
        client_in_cluster(&env).err(),
        Some(ClientConfigError::ServiceAccountCa { .. })
    ));

    env.service_port = Some("not a port".into());
    assert!(matches!(
        env.cluster_url(),
        Err(ClientConfigError::InClusterUrl { .. })
    ));
}

#[test]
fn in_cluster_urls_bracket_ipv6_hosts() {
    let env = |host: &str| InClusterEnvironment {
        service_host: Some(host.into()),
        service_port: Some("6443".into()),
        service_account_dir: PathBuf::new(),
    };
    assert_eq!(
        env("fd00::1").cluster_url().unwrap(),
        "https://[fd00::1]:6443/"
    );
    assert_eq!(
        env("10.96.0.1").cluster_url().unwrap(),
        "https://10.96.0.1:6443/"
    );
    assert_eq!(
        env("kubernetes.default.svc").cluster_url().unwrap(),
        "https://kubernetes.default.svc:6443/"
    );
}

#[tokio::test]
async fn transient_failures_are_retried_and_others_are_not() {
    let server = TestApiserver::start().await;
    let client = server.client("hub").await;

    // Two 500s, then an answer: three requests, success.
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    server.on_token_review(move |_| match counter.fetch_add(1, Ordering::SeqCst) {
        0 | 1 => Answer::Fail(500, "InternalError"),
        _ => Answer::Status(json!({"authenticated": true, "user": {"username": "a"}})),
    });
    post_review(&client).await.unwrap();
    assert_eq!(server.count(TOKEN_REVIEWS), 3);

    // Overload that outlasts the backoff: the last error is returned.
    server.on_token_review(|_| Answer::Fail(429, "TooManyRequests"));
    let err = post_review(&client).await.unwrap_err();
    assert!(
        matches!(err, RequestError::Status { code: 429, .. }),
        "{err}"
    );
    assert_eq!(server.count(TOKEN_REVIEWS), 3 + QUICK.attempts as usize);

    // Forbidden is an answer, not an outage: asked once.
    server.on_token_review(|_| Answer::Fail(403, "Forbidden"));
    let err = post_review(&client).await.unwrap_err();
    assert!(matches!(
        &err,
        RequestError::Status { code: 403, reason, .. } if reason == "Forbidden"
    ));
    assert!(err
        .to_string()
        .contains("the test double was told to fail with 403"));
    assert_eq!(server.count(TOKEN_REVIEWS), 4 + QUICK.attempts as usize);
}

#[tokio::test]
async fn an_unreachable_server_fails_at_once() {
    let server = TestApiserver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = server.write_kubeconfig(dir.path(), "hub");
    let down = unreachable_url().await;
    let text = std::fs::read_to_string(&kubeconfig)
        .unwrap()
        .replace(&server.url(), &down);
    std::fs::write(&kubeconfig, text).unwrap();
    let client = client_from_kubeconfig(&kubeconfig).await.unwrap();

    let err = post_review(&client).await.unwrap_err();
    assert!(matches!(err, RequestError::Transport(_)), "{err}");
    assert!(!err.is_transient(), "a refused connection is not retried");
}

#[test]
fn kube_webhook_errors_that_are_retried() {
    let status = |code, retry_after| RequestError::Status {
        code,
        reason: String::new(),
        message: String::new(),
        retry_after,
    };
    for code in [429, 500, 504] {
        assert!(status(code, false).is_transient(), "{code}");
    }
    for code in [400, 401, 403, 404, 409, 503] {
        assert!(!status(code, false).is_transient(), "{code}");
    }
    assert!(
        status(503, true).is_transient(),
        "Retry-After asks for a retry"
    );
    assert!(!RequestError::Timeout(Duration::from_secs(1)).is_transient());
}

#[test]
fn the_backoff_grows_by_its_factor_within_its_jitter() {
    let backoff = RetryBackoff::default();
    for (attempt, base_ms) in [(0, 500.0), (1, 750.0), (2, 1125.0)] {
        let delay = backoff.delay(attempt).as_secs_f64() * 1000.0;
        assert!(
            (base_ms..base_ms * 1.2).contains(&delay),
            "attempt {attempt}: {delay}ms"
        );
    }
    assert_eq!(QUICK.delay(2), Duration::from_millis(1));
}
