use std::time::Duration;

use edgefleet_testkit::eventually;

use super::*;
use crate::auth::authn::testing::{configmap, head, Ca};
use crate::auth::authn::{Authenticator, AuthnError, UnionAuthenticator};
use crate::auth::test_apiserver::{TestApiserver, AUTHENTICATION_CONFIGMAP};

#[test]
fn the_configmap_becomes_a_request_header_config_and_a_client_ca() {
    let proxy_ca = Ca::new("front-proxy-ca");
    let client_ca = Ca::new("kubernetes");
    let config = parse_configmap(&configmap(
        Some(&proxy_ca),
        Some(&client_ca),
        "X-Remote-User",
    ))
    .unwrap();
    assert_eq!(
        config,
        ClusterAuthenticationConfig {
            client_ca: Some(vec![client_ca.cert.clone()]),
            request_header: Some(RequestHeaderConfig {
                client_ca: vec![proxy_ca.cert.clone()],
                allowed_names: vec!["front-proxy-client".into()],
                username_headers: vec!["X-Remote-User".into()],
                uid_headers: vec!["X-Remote-Uid".into()],
                group_headers: vec!["X-Remote-Group".into()],
                extra_headers_prefixes: vec!["X-Remote-Extra-".into()],
            }),
        }
    );
}

#[test]
fn missing_keys_are_empty_and_bad_values_name_their_key() {
    assert_eq!(
        parse_configmap(&BTreeMap::new()).unwrap(),
        ClusterAuthenticationConfig::default()
    );

    let proxy_ca = Ca::new("front-proxy-ca");
    let mut data = BTreeMap::from([(
        REQUESTHEADER_CLIENT_CA_KEY.to_string(),
        proxy_ca.pem.clone(),
    )]);
    // Older clusters have no uid headers key; "null" is what Go writes for a nil slice.
    data.insert(REQUESTHEADER_ALLOWED_NAMES_KEY.into(), "null".into());
    let config = parse_configmap(&data).unwrap().request_header.unwrap();
    assert!(config.allowed_names.is_empty() && config.uid_headers.is_empty());

    data.insert(
        REQUESTHEADER_GROUP_HEADERS_KEY.into(),
        "X-Remote-Group".into(),
    );
    let err = parse_configmap(&data).unwrap_err();
    assert!(
        matches!(
            err,
            ConfigMapError::StringList {
                key: REQUESTHEADER_GROUP_HEADERS_KEY,
                ..
            }
        ),
        "{err:?}"
    );

    let data = BTreeMap::from([(CLIENT_CA_KEY.to_string(), "not PEM".to_string())]);
    let err = parse_configmap(&data).unwrap_err();
    assert!(
        matches!(
            err,
            ConfigMapError::CaBundle {
                key: CLIENT_CA_KEY,
                ..
            }
        ),
        "{err:?}"
    );
}

/// A proxied request for alice under `username_header`, through `proxy_ca`'s proxy certificate.
async fn proxied(
    union: &UnionAuthenticator,
    proxy_ca: &Ca,
    username_header: &str,
) -> Result<Option<String>, AuthnError> {
    let head = head(&[(username_header, "alice"), ("x-remote-group", "ops")]);
    let chain = [proxy_ca.client("front-proxy-client").issue()];
    union
        .authenticate(&head, &chain)
        .await
        .map(|user| user.map(|u| u.name))
}

fn cluster_settings(request_header: bool, x509: bool) -> ClusterSettings {
    ClusterSettings {
        request_header: request_header.then(|| Swap::new(RequestHeaderAuthenticator::disabled())),
        x509: x509.then(|| Swap::new(None)),
        tls: Arc::new(ClientCertificateAuthorities::new(Vec::new()).unwrap()),
    }
}

fn union_of(settings: &ClusterSettings) -> UnionAuthenticator {
    let mut builder = UnionAuthenticator::builder().anonymous(false);
    if let Some(slot) = &settings.request_header {
        builder = builder.dynamic_request_header(slot.clone());
    }
    if let Some(slot) = &settings.x509 {
        builder = builder.dynamic_x509(slot.clone());
    }
    builder.build()
}

#[tokio::test]
async fn applying_a_config_swaps_authenticators_and_the_tls_set_together() {
    let proxy_ca = Ca::new("front-proxy-ca");
    let client_ca = Ca::new("kubernetes");
    let settings = cluster_settings(true, true);
    let union = union_of(&settings);
    assert!(proxied(&union, &proxy_ca, "x-remote-user").await.is_err());

    let config = parse_configmap(&configmap(
        Some(&proxy_ca),
        Some(&client_ca),
        "X-Remote-User",
    ))
    .unwrap();
    settings.apply(&config).unwrap();
    assert_eq!(
        proxied(&union, &proxy_ca, "x-remote-user")
            .await
            .unwrap()
            .as_deref(),
        Some("alice")
    );
    let bob = union
        .authenticate(&head(&[]), &[client_ca.client("bob").issue()])
        .await
        .unwrap();
    assert_eq!(bob.unwrap().name, "bob");
    assert_eq!(
        settings.tls.certificates(),
        vec![proxy_ca.cert.clone(), client_ca.cert.clone()]
    );

    // Without a front-proxy CA the ConfigMap is unusable for a hub that needs one: nothing
    // changes.
    let err = settings
        .apply(&parse_configmap(&configmap(None, None, "")).unwrap())
        .unwrap_err();
    assert!(matches!(err, ConfigMapError::NoRequestHeaderCa));
    assert!(proxied(&union, &proxy_ca, "x-remote-user").await.is_ok());
    assert_eq!(settings.tls.certificates().len(), 2);

    // A slot configured by flags is left alone.
    let flags_only = cluster_settings(false, false);
    flags_only.apply(&config).unwrap();
    assert!(flags_only.tls.certificates().is_empty());
}

#[tokio::test]
async fn the_refresher_follows_changes_keeps_the_last_good_settings_and_stops_when_unused() {
    let server = TestApiserver::start().await;
    let client = server.client("hub").await;
    let old_ca = Ca::new("front-proxy-ca");
    let new_ca = Ca::new("front-proxy-ca-2");
    server.set_configmap(Some(configmap(Some(&old_ca), None, "X-Remote-User")));
    let settings = cluster_settings(true, true);
    let union = union_of(&settings);
    let first = fetch(&client, RetryBackoff::default()).await.unwrap();
    settings.apply(&first).unwrap();
    let refresher = spawn_refresher(
        client,
        &settings,
        Some(first),
        Duration::from_millis(20),
        RetryBackoff::default(),
    );

    // The cluster rotates its front-proxy CA and renames the user header.
    server.set_configmap(Some(configmap(Some(&new_ca), None, "X-Proxy-User")));
    eventually!(
        proxied(&union, &new_ca, "x-proxy-user").await,
        "the new settings to arrive"
    );
    assert!(proxied(&union, &old_ca, "x-proxy-user").await.is_err());
    assert_eq!(settings.tls.certificates(), vec![new_ca.cert.clone()]);

    // A broken ConfigMap (two more reads to be sure it was seen) changes nothing.
    server.set_configmap(Some(BTreeMap::from([(
        REQUESTHEADER_CLIENT_CA_KEY.to_string(),
        "garbage".to_string(),
    )])));
    let seen = server.count(AUTHENTICATION_CONFIGMAP);
    eventually!(
        server.count(AUTHENTICATION_CONFIGMAP) >= seen + 2,
        "the refresher to read the broken ConfigMap twice"
    );
    assert!(proxied(&union, &new_ca, "x-proxy-user").await.is_ok());

    drop((union, settings));
    tokio::time::timeout(Duration::from_secs(10), refresher)
        .await
        .expect("the refresher ends once nothing uses its settings")
        .unwrap();
}
