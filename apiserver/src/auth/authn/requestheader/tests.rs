use super::*;
use crate::auth::authn::testing::{head, Ca};

/// A front-proxy CA, its proxy certificate, and a client CA whose certificates are not proxies.
struct Pki {
    proxy_ca: Ca,
    client_ca: Ca,
}

impl Pki {
    fn new() -> Self {
        Pki {
            proxy_ca: Ca::new("front-proxy-ca"),
            client_ca: Ca::new("client-ca"),
        }
    }

    fn proxy_cert(&self, cn: &str) -> Vec<CertificateDer<'static>> {
        vec![self.proxy_ca.client(cn).issue()]
    }

    fn config(&self) -> RequestHeaderConfig {
        RequestHeaderConfig::new(vec![self.proxy_ca.cert.clone()])
    }

    fn authenticator(&self) -> RequestHeaderAuthenticator {
        RequestHeaderAuthenticator::new(&self.config()).unwrap()
    }
}

fn authenticate(
    authn: &RequestHeaderAuthenticator,
    headers: &[(&str, &str)],
    chain: &[CertificateDer<'static>],
) -> Result<Option<UserInfo>> {
    authn.authenticate_at(&head(headers).headers, chain, UnixTime::now())
}

#[test]
fn trusted_proxy_headers_make_the_user() {
    let pki = Pki::new();
    let user = authenticate(
        &pki.authenticator(),
        &[
            ("x-remote-user", "alice"),
            ("x-remote-uid", "42"),
            ("x-remote-group", "retail-admins"),
            ("x-remote-group", ""),
            ("x-remote-group", "system:authenticated"),
            ("x-remote-extra-scopes", "view"),
            ("x-remote-extra-scopes", "edit"),
            ("X-Remote-Extra-Acme.com%2FTeam", "sre"),
        ],
        &pki.proxy_cert("front-proxy-client"),
    )
    .unwrap()
    .unwrap();
    assert_eq!(
        user,
        UserInfo::new("alice")
            .with_uid("42")
            .with_groups(["retail-admins", "system:authenticated"])
            .with_extra("scopes", ["view", "edit"])
            .with_extra("acme.com/team", ["sre"])
    );
}

#[test]
fn no_front_proxy_headers_is_no_opinion_whatever_the_certificate() {
    let pki = Pki::new();
    let authn = pki.authenticator();
    assert_eq!(
        authenticate(&authn, &[], &pki.proxy_cert("front-proxy-client")).unwrap(),
        None
    );
    assert_eq!(
        authenticate(&authn, &[], &[pki.client_ca.client("alice").issue()]).unwrap(),
        None
    );
    assert_eq!(
        authenticate(&authn, &[("authorization", "Bearer x")], &[]).unwrap(),
        None
    );
}

#[test]
fn username_header_without_certificate_is_refused() {
    let pki = Pki::new();
    let err = authenticate(&pki.authenticator(), &[("x-remote-user", "admin")], &[]).unwrap_err();
    assert!(
        matches!(err, AuthnError::RequestHeaderWithoutCertificate { .. }),
        "{err:?}"
    );
    assert!(err.is_unverified_request_header());
    assert_eq!(
        err.message(),
        "request carries the front-proxy header x-remote-user but the connection presented no \
         front-proxy client certificate"
    );
    assert!(
        !err.message().contains("admin"),
        "header values stay out of messages"
    );
}

#[test]
fn username_header_with_a_non_proxy_certificate_is_refused() {
    // The connection's own certificate is a perfectly good client certificate, but not a proxy's:
    // the request must not become that certificate's user either.
    let pki = Pki::new();
    let chain = [pki.client_ca.client("alice").issue()];
    let err =
        authenticate(&pki.authenticator(), &[("x-remote-user", "admin")], &chain).unwrap_err();
    assert!(
        matches!(err, AuthnError::RequestHeaderUntrustedCertificate { .. }),
        "{err:?}"
    );
    assert!(err.message().contains("CN=alice"), "{}", err.message());
}

#[test]
fn expired_proxy_certificate_is_refused() {
    let pki = Pki::new();
    let chain = [pki.proxy_ca.client("front-proxy-client").expired().issue()];
    let err =
        authenticate(&pki.authenticator(), &[("x-remote-user", "alice")], &chain).unwrap_err();
    assert!(
        matches!(err, AuthnError::RequestHeaderUntrustedCertificate { .. }),
        "{err:?}"
    );
}

#[test]
fn allowed_names_restrict_the_proxy_common_name() {
    let pki = Pki::new();
    let mut config = pki.config();
    config.allowed_names = vec!["front-proxy-client".to_string(), "aggregator".to_string()];
    let authn = RequestHeaderAuthenticator::new(&config).unwrap();
    let headers = [("x-remote-user", "alice")];

    let user = authenticate(&authn, &headers, &pki.proxy_cert("aggregator"))
        .unwrap()
        .unwrap();
    assert_eq!(user.name, "alice");

    let err = authenticate(&authn, &headers, &pki.proxy_cert("some-other-proxy")).unwrap_err();
    match &err {
        AuthnError::RequestHeaderNameNotAllowed { common_name, .. } => {
            assert_eq!(common_name, "some-other-proxy")
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.is_unverified_request_header());

    // Without allowed names, any certificate of the front-proxy CA is a proxy.
    let user = authenticate(&pki.authenticator(), &headers, &pki.proxy_cert("anything")).unwrap();
    assert_eq!(user.unwrap().name, "alice");
}

#[test]
fn groups_or_extras_without_user_are_refused() {
    let pki = Pki::new();
    let authn = pki.authenticator();
    let proxy = pki.proxy_cert("front-proxy-client");

    let err = authenticate(&authn, &[("x-remote-group", "system:masters")], &[]).unwrap_err();
    assert!(
        matches!(err, AuthnError::RequestHeaderWithoutCertificate { .. }),
        "{err:?}"
    );

    let err = authenticate(&authn, &[("x-remote-group", "system:masters")], &proxy).unwrap_err();
    assert!(
        matches!(err, AuthnError::RequestHeaderMissingUser { .. }),
        "{err:?}"
    );

    let err = authenticate(&authn, &[("x-remote-extra-scopes", "x")], &[]).unwrap_err();
    assert!(
        matches!(err, AuthnError::RequestHeaderWithoutCertificate { .. }),
        "{err:?}"
    );

    let err = authenticate(&authn, &[("x-remote-user", "")], &proxy).unwrap_err();
    assert!(
        matches!(err, AuthnError::RequestHeaderMissingUser { .. }),
        "{err:?}"
    );
}

#[test]
fn configured_header_names_and_first_non_empty_user() {
    let pki = Pki::new();
    let mut config = pki.config();
    config.username_headers = vec!["X-Proxy-User".into(), "X-Remote-User".into()];
    config.group_headers = vec!["X-Proxy-Group".into(), "X-Remote-Group".into()];
    config.extra_headers_prefixes = vec!["X-Proxy-Extra-".into(), "X-Remote-Extra-".into()];
    config.uid_headers = vec![];
    let authn = RequestHeaderAuthenticator::new(&config).unwrap();
    let user = authenticate(
        &authn,
        &[
            ("x-proxy-user", ""),
            ("x-remote-user", "bob"),
            ("x-remote-uid", "ignored: not configured"),
            ("x-remote-group", "b"),
            ("x-proxy-group", "a"),
            ("x-remote-extra-k", "2"),
            ("x-proxy-extra-k", "1"),
        ],
        &pki.proxy_cert("p"),
    )
    .unwrap()
    .unwrap();
    assert_eq!(user.name, "bob");
    assert_eq!(user.uid, "");
    // Groups and extra values follow the configured header order.
    assert_eq!(user.groups, ["a", "b"]);
    assert_eq!(user.extra["k"], ["1", "2"]);
}

#[test]
fn disabled_refuses_default_headers() {
    let authn = RequestHeaderAuthenticator::disabled();
    let err = authenticate(&authn, &[("x-remote-user", "alice")], &[]).unwrap_err();
    assert!(
        matches!(err, AuthnError::RequestHeaderNotConfigured { .. }),
        "{err:?}"
    );
    assert!(err.is_unverified_request_header());
    assert_eq!(
        authenticate(&authn, &[("x-other", "alice")], &[]).unwrap(),
        None
    );
}

#[test]
fn non_utf8_values_are_refused() {
    let pki = Pki::new();
    let mut headers = HeaderMap::new();
    headers.insert(
        "x-remote-user",
        http::HeaderValue::from_bytes(b"al\xffce").unwrap(),
    );
    let err = pki
        .authenticator()
        .authenticate_at(&headers, &pki.proxy_cert("p"), UnixTime::now())
        .unwrap_err();
    assert!(
        matches!(err, AuthnError::InvalidHeaderValue { .. }),
        "{err:?}"
    );
}

#[test]
fn extra_keys_are_decoded_like_kube() {
    assert_eq!(decode_extra_key("scopes"), "scopes");
    assert_eq!(decode_extra_key("acme.com%2fteam"), "acme.com/team");
    assert_eq!(decode_extra_key("a%25b"), "a%b");
    assert_eq!(decode_extra_key("caf%c3%a9"), "café");
    // Malformed escapes and invalid UTF-8 keep the key as sent.
    assert_eq!(decode_extra_key("bad%zz"), "bad%zz");
    assert_eq!(decode_extra_key("trailing%2"), "trailing%2");
    assert_eq!(decode_extra_key("bytes%ff"), "bytes%ff");
}

#[test]
fn authentication_headers_lists_what_to_strip() {
    let authn = Pki::new().authenticator();
    let headers = head(&[
        ("x-remote-user", "a"),
        ("x-remote-group", "g"),
        ("x-remote-group", "h"),
        ("x-remote-extra-scopes", "s"),
        ("accept", "application/json"),
    ])
    .headers;
    let names = authn.authentication_headers(&headers);
    assert_eq!(
        names,
        ["x-remote-user", "x-remote-group", "x-remote-extra-scopes"]
    );
}

#[test]
fn config_errors() {
    let pki = Pki::new();
    let mut config = pki.config();
    config.username_headers = vec![];
    assert!(matches!(
        RequestHeaderAuthenticator::new(&config),
        Err(RequestHeaderConfigError::NoUsernameHeaders)
    ));
    let mut config = pki.config();
    config.group_headers = vec!["bad header".into()];
    assert!(matches!(
        RequestHeaderAuthenticator::new(&config),
        Err(RequestHeaderConfigError::InvalidHeaderName(name)) if name == "bad header"
    ));
    assert!(matches!(
        RequestHeaderAuthenticator::new(&RequestHeaderConfig::new(vec![])),
        Err(RequestHeaderConfigError::ClientCa(CaBundleError::Empty))
    ));
}
