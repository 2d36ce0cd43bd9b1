use std::path::Path;

use super::*;
use crate::auth::authn::testing::{head, Ca};
use crate::auth::authn::{CertificateVerifier, RequestHeaderConfig, TokenFile};
use crate::auth::{ALL_AUTHENTICATED, ALL_UNAUTHENTICATED, ANONYMOUS};

const TOKENS: &str = "\
tok-carol,carol,uid-c,ops
tok-dave,dave,uid-d,\"system:authenticated,dev\"
";

struct Fixture {
    proxy_ca: Ca,
    client_ca: Ca,
}

impl Fixture {
    fn new() -> Self {
        Fixture {
            proxy_ca: Ca::new("front-proxy-ca"),
            client_ca: Ca::new("client-ca"),
        }
    }

    fn builder(&self) -> UnionAuthenticatorBuilder {
        let request_header = RequestHeaderAuthenticator::new(&RequestHeaderConfig::new(vec![self
            .proxy_ca
            .cert
            .clone()]))
        .unwrap();
        let x509 = X509Authenticator::new(
            CertificateVerifier::from_pem(self.client_ca.pem.as_bytes()).unwrap(),
        );
        let tokens = TokenFile::parse(TOKENS.as_bytes(), Path::new("tokens.csv")).unwrap();
        UnionAuthenticator::builder()
            // Deliberately out of order: the builder's slots decide the order, not the calls.
            .token(tokens)
            .x509(x509)
            .request_header(request_header)
    }

    fn union(&self) -> UnionAuthenticator {
        self.builder().build()
    }

    fn client_cert(&self, cn: &str) -> Vec<CertificateDer<'static>> {
        vec![self.client_ca.client(cn).org("team").issue()]
    }

    fn proxy_cert(&self) -> Vec<CertificateDer<'static>> {
        vec![self.proxy_ca.client("front-proxy-client").issue()]
    }
}

async fn auth(
    union: &UnionAuthenticator,
    headers: &[(&str, &str)],
    chain: &[CertificateDer<'static>],
) -> Result<Option<UserInfo>> {
    union.authenticate(&head(headers), chain).await
}

#[tokio::test]
async fn front_proxy_comes_first() {
    let f = Fixture::new();
    let user = auth(
        &f.union(),
        &[
            ("x-remote-user", "alice"),
            ("authorization", "Bearer tok-carol"),
        ],
        &f.proxy_cert(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(user.name, "alice");
    assert_eq!(user.groups, [ALL_AUTHENTICATED]);
}

#[tokio::test]
async fn front_proxy_outranks_a_certificate_that_is_also_a_client_certificate() {
    // One CA for both roles: the front-proxy certificate would authenticate as its own CN too.
    let ca = Ca::new("shared-ca");
    let union = UnionAuthenticator::builder()
        .request_header(
            RequestHeaderAuthenticator::new(&RequestHeaderConfig::new(vec![ca.cert.clone()]))
                .unwrap(),
        )
        .x509(X509Authenticator::new(
            CertificateVerifier::from_pem(ca.pem.as_bytes()).unwrap(),
        ))
        .build();
    let chain = [ca.client("front-proxy-client").issue()];
    let user = auth(&union, &[("x-remote-user", "alice")], &chain)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(user.name, "alice");
    let user = auth(&union, &[], &chain).await.unwrap().unwrap();
    assert_eq!(user.name, "front-proxy-client");
}

#[tokio::test]
async fn client_certificate_comes_before_bearer_token() {
    let f = Fixture::new();
    let user = auth(
        &f.union(),
        &[("authorization", "Bearer tok-carol")],
        &f.client_cert("bob"),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(user.name, "bob");
    assert_eq!(user.groups, ["team", ALL_AUTHENTICATED]);
}

#[tokio::test]
async fn bearer_token_authenticates_despite_a_bad_certificate() {
    // kube's union: one failing credential does not hide a valid one.
    let f = Fixture::new();
    let expired = vec![f.client_ca.client("bob").expired().issue()];
    let user = auth(
        &f.union(),
        &[("authorization", "Bearer tok-carol")],
        &expired,
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        user,
        UserInfo::new("carol")
            .with_uid("uid-c")
            .with_groups(["ops", ALL_AUTHENTICATED])
    );
}

#[tokio::test]
async fn authenticated_group_is_not_duplicated() {
    let f = Fixture::new();
    let user = auth(&f.union(), &[("authorization", "Bearer tok-dave")], &[])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(user.groups, [ALL_AUTHENTICATED, "dev"]);
}

#[tokio::test]
async fn failed_credentials_are_refused_not_anonymous() {
    let f = Fixture::new();
    let union = f.union();

    let err = auth(&union, &[("authorization", "Bearer nope")], &[])
        .await
        .unwrap_err();
    assert!(matches!(err, AuthnError::InvalidBearerToken), "{err:?}");

    let other_ca = Ca::new("other");
    let chain = [other_ca.client("mallory").issue()];
    let err = auth(&union, &[], &chain).await.unwrap_err();
    assert!(
        matches!(err, AuthnError::InvalidClientCertificate { .. }),
        "{err:?}"
    );

    let err = auth(&union, &[("authorization", "Bearer nope")], &chain)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, AuthnError::Union(errors) if errors.len() == 2),
        "{err:?}"
    );
    let message = err.message();
    assert!(
        message.starts_with("[verifying client certificate"),
        "{message}"
    );
    assert!(message.ends_with(", invalid bearer token]"), "{message}");
}

#[tokio::test]
async fn anonymous_when_nothing_is_presented() {
    let f = Fixture::new();
    let user = auth(&f.union(), &[], &[]).await.unwrap().unwrap();
    assert_eq!(user.name, ANONYMOUS);
    assert_eq!(user.groups, [ALL_UNAUTHENTICATED]);

    let closed = f.builder().anonymous(false).build();
    assert_eq!(auth(&closed, &[], &[]).await.unwrap(), None);
}

#[tokio::test]
async fn forged_front_proxy_headers_stop_the_chain() {
    let f = Fixture::new();
    let union = f.union();
    // A valid client certificate and a valid token do not rescue forged identity headers.
    let err = auth(
        &union,
        &[
            ("x-remote-user", "admin"),
            ("authorization", "Bearer tok-carol"),
        ],
        &f.client_cert("bob"),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, AuthnError::RequestHeaderUntrustedCertificate { .. }),
        "{err:?}"
    );

    let err = auth(&union, &[("x-remote-user", "admin")], &[])
        .await
        .unwrap_err();
    assert!(
        matches!(err, AuthnError::RequestHeaderWithoutCertificate { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn front_proxy_headers_are_refused_when_not_configured() {
    let f = Fixture::new();
    let union = UnionAuthenticator::builder()
        .x509(X509Authenticator::new(
            CertificateVerifier::from_pem(f.client_ca.pem.as_bytes()).unwrap(),
        ))
        .build();
    let err = auth(&union, &[("x-remote-user", "admin")], &f.client_cert("bob"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, AuthnError::RequestHeaderNotConfigured { .. }),
        "{err:?}"
    );
    let user = auth(&union, &[], &f.client_cert("bob"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(user.name, "bob");
}
