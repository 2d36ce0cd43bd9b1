use clap::Parser;
use serde_json::json;

use super::*;
use crate::auth::authn::testing::{configmap, head, Ca};
use crate::auth::authn::Authenticator;
use crate::auth::test_apiserver::{
    unreachable_url, Answer, TestApiserver, AUTHENTICATION_CONFIGMAP, SUBJECT_ACCESS_REVIEWS,
    TOKEN_REVIEWS,
};
use crate::auth::{Attributes, Decision, UserInfo};

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    authn: AuthenticationFlags,
    #[command(flatten)]
    authz: AuthorizationFlags,
}

fn parse(args: &[&str]) -> Cli {
    Cli::try_parse_from(std::iter::once("edgefleet-apiserver").chain(args.iter().copied()))
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// Outside any cluster, with no kubeconfig: the standalone hub.
fn standalone() -> InClusterEnvironment {
    InClusterEnvironment::default()
}

fn quick() -> Tuning {
    Tuning {
        refresh_interval: Duration::from_millis(20),
        retry: RetryBackoff {
            initial: Duration::from_millis(1),
            factor: 1.0,
            jitter: 0.0,
            attempts: 2,
        },
    }
}

async fn authn(flags: &AuthenticationFlags) -> Result<Authentication, AuthConfigError> {
    flags.build_in(&standalone(), &quick()).await
}

async fn authz(flags: &AuthorizationFlags) -> Result<Authorization, AuthConfigError> {
    flags.build_in(&standalone(), &quick()).await
}

#[test]
fn defaults_are_kubes() {
    let cli = parse(&[]);
    assert!(cli.authn.anonymous_auth);
    assert_eq!(cli.authn.requestheader_username_headers, ["X-Remote-User"]);
    assert_eq!(cli.authn.requestheader_uid_headers, ["X-Remote-Uid"]);
    assert_eq!(cli.authn.requestheader_group_headers, ["X-Remote-Group"]);
    assert_eq!(
        cli.authn.requestheader_extra_headers_prefix,
        ["X-Remote-Extra-"]
    );
    assert!(cli.authn.requestheader_allowed_names.is_empty());
    assert_eq!(cli.authz.authorization_mode, [AuthorizationMode::Rbac]);
    assert!(cli.authn.request_header_config().unwrap().is_none());
    assert_eq!(
        cli.authn.authentication_token_webhook_cache_ttl,
        Duration::from_secs(10)
    );
    assert!(!cli.authn.authentication_skip_lookup);
    assert!(!cli.authn.authentication_tolerate_lookup_failure);
    assert_eq!(
        cli.authz.authorization_webhook_cache_authorized_ttl,
        Duration::from_secs(10)
    );
    assert_eq!(
        cli.authz.authorization_webhook_cache_unauthorized_ttl,
        Duration::from_secs(10)
    );
    assert_eq!(
        cli.authz.authorization_always_allow_paths,
        ["/healthz", "/readyz", "/livez"]
    );

    // The Default impls are the flags' defaults.
    let default_authn = AuthenticationFlags::default();
    assert_eq!(format!("{:?}", cli.authn), format!("{default_authn:?}"));
    let default_authz = AuthorizationFlags::default();
    assert_eq!(format!("{:?}", cli.authz), format!("{default_authz:?}"));
}

#[test]
fn kube_flag_spellings_parse() {
    assert!(!parse(&["--anonymous-auth=false"]).authn.anonymous_auth);
    assert!(parse(&["--anonymous-auth"]).authn.anonymous_auth);
    let cli = parse(&[
        "--requestheader-allowed-names=front-proxy-client,aggregator",
        "--requestheader-username-headers",
        "X-Proxy-User,X-Remote-User",
        "--authorization-mode=AlwaysAllow,RBAC,Webhook",
        "--authentication-kubeconfig=/etc/hub/authn.kubeconfig",
        "--authentication-token-webhook-cache-ttl=1m30s",
        "--authentication-skip-lookup",
        "--authentication-tolerate-lookup-failure=true",
        "--api-audiences=edgefleet,hub",
        "--authorization-kubeconfig=/etc/hub/authz.kubeconfig",
        "--authorization-webhook-cache-authorized-ttl=5m",
        "--authorization-webhook-cache-unauthorized-ttl=0",
        "--authorization-always-allow-paths=/healthz,/metrics/*",
    ]);
    assert_eq!(
        cli.authn.requestheader_allowed_names,
        ["front-proxy-client", "aggregator"]
    );
    assert_eq!(
        cli.authn.requestheader_username_headers,
        ["X-Proxy-User", "X-Remote-User"]
    );
    assert_eq!(
        cli.authz.authorization_mode,
        [
            AuthorizationMode::AlwaysAllow,
            AuthorizationMode::Rbac,
            AuthorizationMode::Webhook
        ]
    );
    assert_eq!(
        cli.authn.authentication_kubeconfig.as_deref(),
        Some(std::path::Path::new("/etc/hub/authn.kubeconfig"))
    );
    assert_eq!(
        cli.authn.authentication_token_webhook_cache_ttl,
        Duration::from_secs(90)
    );
    assert!(cli.authn.authentication_skip_lookup);
    assert!(cli.authn.authentication_tolerate_lookup_failure);
    assert_eq!(cli.authn.api_audiences, ["edgefleet", "hub"]);
    assert_eq!(
        cli.authz.authorization_webhook_cache_authorized_ttl,
        Duration::from_secs(300)
    );
    assert_eq!(
        cli.authz.authorization_webhook_cache_unauthorized_ttl,
        Duration::ZERO
    );
    assert_eq!(
        cli.authz.authorization_always_allow_paths,
        ["/healthz", "/metrics/*"]
    );

    for bad in ["-1s", "10", "soon"] {
        let arg = format!("--authorization-webhook-cache-authorized-ttl={bad}");
        let args = ["edgefleet-apiserver", arg.as_str()];
        assert!(Cli::try_parse_from(args).is_err(), "{bad}");
    }
}

#[tokio::test]
async fn builds_from_files() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, content: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        path.display().to_string()
    };
    let client_ca = Ca::new("client-ca");
    let proxy_ca = Ca::new("front-proxy-ca");
    let client_ca_file = write("client-ca.crt", &client_ca.pem);
    let proxy_ca_file = write("front-proxy-ca.crt", &proxy_ca.pem);
    let tokens = write("tokens.csv", "t0k3n,carol,uid-c,ops\n");
    let rbac = write(
        "rbac.yaml",
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: ops}\n\
         roleRef: {kind: ClusterRole, name: edgefleet-viewer}\nsubjects: [{kind: Group, name: ops}]\n",
    );
    let cli = parse(&[
        "--client-ca-file",
        &client_ca_file,
        "--token-auth-file",
        &tokens,
        "--requestheader-client-ca-file",
        &proxy_ca_file,
        "--requestheader-allowed-names=front-proxy-client",
        "--anonymous-auth=false",
        "--authorization-rbac-file",
        &rbac,
    ]);

    let built = authn(&cli.authn).await.unwrap();
    assert!(!built.token_review && !built.cluster_lookup, "standalone");
    // TLS trusts both files, client CA first.
    assert_eq!(
        built.client_cas_at_startup(),
        vec![proxy_ca.cert.clone(), client_ca.cert.clone()]
    );
    let authn = built.authenticator;
    let carol = authn
        .authenticate(&head(&[("authorization", "Bearer t0k3n")]), &[])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(carol.name, "carol");
    let bob = authn
        .authenticate(&head(&[]), &[client_ca.client("bob").issue()])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(bob.name, "bob");
    let proxied = authn
        .authenticate(
            &head(&[("x-remote-user", "alice")]),
            &[proxy_ca.client("front-proxy-client").issue()],
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(proxied.name, "alice");
    assert_eq!(authn.authenticate(&head(&[]), &[]).await.unwrap(), None);

    let authz = authz(&cli.authz).await.unwrap();
    let list =
        Attributes::resource(carol, "list", "edgefleet.io", "clusters").with_namespace("retail");
    assert!(authz.authorizer.authorize(&list).await.is_allow());
    let root = UserInfo::new("root").with_groups(["system:masters"]);
    let delete =
        Attributes::resource(root, "delete", "edgefleet.io", "environments").with_name("retail");
    assert!(authz.authorizer.authorize(&delete).await.is_allow());
    assert!(authz.rbac.is_some());
}

#[tokio::test]
async fn without_client_cas_no_certificate_is_asked_for() {
    let built = authn(&AuthenticationFlags::default()).await.unwrap();
    assert!(built.client_certificates.is_none());
    assert!(built.client_cas_at_startup().is_empty());
}

#[tokio::test]
async fn authorization_modes() {
    let alice = Attributes::resource(
        UserInfo::new("alice"),
        "delete",
        "edgefleet.io",
        "environments",
    );

    let allow_all = authz(&parse(&["--authorization-mode=AlwaysAllow"]).authz)
        .await
        .unwrap();
    assert!(allow_all.authorizer.authorize(&alice).await.is_allow());
    assert!(allow_all.rbac.is_none());

    let deny_all = authz(&parse(&["--authorization-mode=AlwaysDeny"]).authz)
        .await
        .unwrap();
    let decision = deny_all.authorizer.authorize(&alice).await;
    assert_eq!(decision.reason(), "Everything is forbidden.");

    let rbac = authz(&parse(&[]).authz).await.unwrap();
    assert!(!rbac.authorizer.authorize(&alice).await.is_allow());

    let err = authz(
        &parse(&[
            "--authorization-mode=AlwaysAllow",
            "--authorization-rbac-file=/x.yaml",
        ])
        .authz,
    )
    .await
    .err()
    .unwrap();
    assert!(matches!(err, AuthConfigError::RbacFileWithoutRbac));

    let err = authz(&parse(&["--authorization-kubeconfig=/x"]).authz)
        .await
        .err()
        .unwrap();
    assert!(matches!(err, AuthConfigError::KubeconfigWithoutWebhook));

    // Webhook needs somewhere to send reviews.
    let err = authz(&parse(&["--authorization-mode=Webhook"]).authz)
        .await
        .err()
        .unwrap();
    assert!(
        matches!(
            &err,
            AuthConfigError::AuthorizationClient(ClientConfigError::NotInCluster)
        ),
        "{err:?}"
    );

    let err = authz(&parse(&["--authorization-always-allow-paths=/a*b"]).authz)
        .await
        .err()
        .unwrap();
    assert!(matches!(err, AuthConfigError::AlwaysAllowPaths(_)));
}

#[test]
fn unusable_files_name_their_flag() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let err = runtime
        .block_on(authn(
            &parse(&["--client-ca-file=/nonexistent/ca.crt"]).authn,
        ))
        .unwrap_err();
    assert_eq!(err.to_string(), "--client-ca-file");
    assert!(std::error::Error::source(&err)
        .unwrap()
        .to_string()
        .contains("/nonexistent/ca.crt"));

    let err = runtime
        .block_on(authn(
            &parse(&["--token-auth-file=/nonexistent/t.csv"]).authn,
        ))
        .unwrap_err();
    assert!(matches!(err, AuthConfigError::TokenFile(_)));

    let err = runtime
        .block_on(authn(
            &parse(&["--authentication-kubeconfig=/nonexistent/kubeconfig"]).authn,
        ))
        .unwrap_err();
    assert!(matches!(err, AuthConfigError::AuthenticationClient(_)));

    let err = runtime
        .block_on(authz(
            &parse(&["--authorization-rbac-file=/nonexistent/rbac.yaml"]).authz,
        ))
        .err()
        .unwrap();
    assert!(matches!(
        err,
        AuthConfigError::Policy(PolicyError::Read { .. })
    ));
}

/// The hub behind kube-apiserver: a kubeconfig for the management cluster (the test double),
/// and the cluster's front proxy and client CA.
struct Delegated {
    server: TestApiserver,
    _dir: tempfile::TempDir,
    kubeconfig: String,
    proxy_ca: Ca,
    client_ca: Ca,
}

impl Delegated {
    async fn new() -> Delegated {
        let server = TestApiserver::start().await;
        server.require_bearer("hub-token");
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = server
            .write_kubeconfig(dir.path(), "hub-token")
            .display()
            .to_string();
        let (proxy_ca, client_ca) = (Ca::new("front-proxy-ca"), Ca::new("kubernetes"));
        server.set_configmap(Some(configmap(
            Some(&proxy_ca),
            Some(&client_ca),
            "X-Remote-User",
        )));
        Delegated {
            server,
            _dir: dir,
            kubeconfig,
            proxy_ca,
            client_ca,
        }
    }

    fn authn_flags(&self, extra: &[&str]) -> AuthenticationFlags {
        let flag = format!("--authentication-kubeconfig={}", self.kubeconfig);
        let mut args = vec![flag.as_str()];
        args.extend_from_slice(extra);
        parse(&args).authn
    }
}

async fn proxied_user(authn: &UnionAuthenticator, proxy_ca: &Ca, header: &str) -> Option<String> {
    let head = head(&[(header, "alice")]);
    let chain = [proxy_ca.client("front-proxy-client").issue()];
    authn
        .authenticate(&head, &chain)
        .await
        .ok()
        .flatten()
        .map(|u| u.name)
}

#[tokio::test]
async fn behind_kube_apiserver_settings_come_from_the_cluster_and_tokens_are_reviewed() {
    let cluster = Delegated::new().await;
    cluster.server.accept_token(
        "dana-token",
        json!({"username": "dana", "groups": ["devs"]}),
    );
    let built = authn(&cluster.authn_flags(&[])).await.unwrap();
    assert!(built.token_review && built.cluster_lookup);
    assert_eq!(cluster.server.count(AUTHENTICATION_CONFIGMAP), 1);
    assert_eq!(
        built.client_cas_at_startup(),
        vec![
            cluster.proxy_ca.cert.clone(),
            cluster.client_ca.cert.clone()
        ]
    );
    let authn = &built.authenticator;

    assert_eq!(
        proxied_user(authn, &cluster.proxy_ca, "x-remote-user")
            .await
            .as_deref(),
        Some("alice")
    );
    // The ConfigMap allows only front-proxy-client.
    let other_proxy = [cluster.proxy_ca.client("someone-else").issue()];
    assert!(authn
        .authenticate(&head(&[("x-remote-user", "alice")]), &other_proxy)
        .await
        .is_err());
    let bob = authn
        .authenticate(&head(&[]), &[cluster.client_ca.client("bob").issue()])
        .await
        .unwrap();
    assert_eq!(bob.unwrap().name, "bob");
    let dana = authn
        .authenticate(&head(&[("authorization", "Bearer dana-token")]), &[])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(dana.groups, ["devs", "system:authenticated"]);
    assert_eq!(cluster.server.count(TOKEN_REVIEWS), 1);
}

#[tokio::test]
async fn flags_take_precedence_over_the_cluster_and_skip_lookup_skips_it() {
    let cluster = Delegated::new().await;
    let dir = tempfile::tempdir().unwrap();
    let own_proxy_ca = Ca::new("own-front-proxy-ca");
    let path = dir.path().join("proxy-ca.crt");
    std::fs::write(&path, &own_proxy_ca.pem).unwrap();
    let flag = format!("--requestheader-client-ca-file={}", path.display());

    // Front proxy from the flag, client CA still from the cluster.
    let built = authn(&cluster.authn_flags(&[&flag])).await.unwrap();
    assert!(built.cluster_lookup);
    let union = &built.authenticator;
    assert_eq!(
        proxied_user(union, &own_proxy_ca, "x-remote-user")
            .await
            .as_deref(),
        Some("alice")
    );
    assert!(proxied_user(union, &cluster.proxy_ca, "x-remote-user")
        .await
        .is_none());
    let bob = union
        .authenticate(&head(&[]), &[cluster.client_ca.client("bob").issue()])
        .await
        .unwrap();
    assert_eq!(bob.unwrap().name, "bob");

    let reads = cluster.server.count(AUTHENTICATION_CONFIGMAP);
    let built = authn(&cluster.authn_flags(&["--authentication-skip-lookup"]))
        .await
        .unwrap();
    assert!(built.token_review && !built.cluster_lookup);
    assert!(built.client_certificates.is_none());
    assert_eq!(cluster.server.count(AUTHENTICATION_CONFIGMAP), reads);
}

#[tokio::test]
async fn a_failed_lookup_stops_start_up_unless_tolerated_and_then_is_retried() {
    let cluster = Delegated::new().await;
    cluster.server.set_configmap(None);
    let err = authn(&cluster.authn_flags(&[])).await.unwrap_err();
    assert!(matches!(err, AuthConfigError::ClusterLookup(_)), "{err:?}");

    // No front proxy configured in the management cluster is as fatal as no ConfigMap.
    cluster
        .server
        .set_configmap(Some(configmap(None, Some(&cluster.client_ca), "")));
    let err = authn(&cluster.authn_flags(&[])).await.unwrap_err();
    assert!(
        matches!(
            err,
            AuthConfigError::ClusterLookup(ConfigMapError::NoRequestHeaderCa)
        ),
        "{err:?}"
    );

    cluster.server.set_configmap(None);
    let built = authn(&cluster.authn_flags(&["--authentication-tolerate-lookup-failure"]))
        .await
        .unwrap();
    let authn = &built.authenticator;
    assert!(proxied_user(authn, &cluster.proxy_ca, "x-remote-user")
        .await
        .is_none());

    // The ConfigMap appears (with another username header): the refresher installs it.
    cluster.server.set_configmap(Some(configmap(
        Some(&cluster.proxy_ca),
        None,
        "X-Proxy-User",
    )));
    // (Until then the header means nothing and the request is anonymous.)
    edgefleet_testkit::eventually!(
        proxied_user(authn, &cluster.proxy_ca, "x-proxy-user")
            .await
            .as_deref()
            == Some("alice"),
        "the refresher to install the new ConfigMap"
    );
    assert_eq!(
        built.client_cas_at_startup(),
        vec![cluster.proxy_ca.cert.clone()]
    );
}

#[tokio::test]
async fn in_cluster_the_service_account_is_used_and_a_broken_mount_disables_delegation() {
    let cluster = Delegated::new().await;
    cluster.server.require_bearer("sa-token");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "sa-token").unwrap();
    std::fs::write(dir.path().join("ca.crt"), &cluster.server.ca_pem).unwrap();
    let env = InClusterEnvironment {
        service_host: Some(cluster.server.addr.ip().to_string()),
        service_port: Some(cluster.server.addr.port().to_string()),
        service_account_dir: dir.path().to_owned(),
    };

    let built = AuthenticationFlags::default()
        .build_in(&env, &quick())
        .await
        .unwrap();
    assert!(built.token_review && built.cluster_lookup);
    let reads = cluster.server.received(AUTHENTICATION_CONFIGMAP);
    assert_eq!(reads[0].authorization.as_deref(), Some("Bearer sa-token"));

    // Kubelet did not mount the token: delegation stays off rather than failing start-up,
    // as kube treats an optional remote kubeconfig.
    std::fs::remove_file(dir.path().join("token")).unwrap();
    let built = AuthenticationFlags::default()
        .build_in(&env, &quick())
        .await
        .unwrap();
    assert!(!built.token_review && !built.cluster_lookup);
}

#[tokio::test]
async fn webhook_mode_asks_after_system_masters_and_the_health_paths() {
    let cluster = Delegated::new().await;
    cluster.server.on_subject_access_review(|spec| {
        Answer::Status(json!({"allowed": spec["user"] == "alice"}))
    });
    let flag = format!("--authorization-kubeconfig={}", cluster.kubeconfig);
    let built = authz(&parse(&["--authorization-mode=Webhook", &flag]).authz)
        .await
        .unwrap();
    assert!(built.rbac.is_none());
    let authorizer = &built.authorizer;

    let root = UserInfo::new("root").with_groups(["system:masters"]);
    let delete = Attributes::resource(root, "delete", "edgefleet.io", "environments");
    assert!(authorizer.authorize(&delete).await.is_allow());
    let probe = Attributes::non_resource(UserInfo::anonymous(), "get", "/readyz");
    assert!(authorizer.authorize(&probe).await.is_allow());
    assert_eq!(cluster.server.count(SUBJECT_ACCESS_REVIEWS), 0);

    let list = |user| Attributes::resource(UserInfo::new(user), "list", "edgefleet.io", "fleets");
    assert!(authorizer.authorize(&list("alice")).await.is_allow());
    assert_eq!(
        authorizer.authorize(&list("mallory")).await,
        Decision::NoOpinion(String::new())
    );
    assert_eq!(cluster.server.count(SUBJECT_ACCESS_REVIEWS), 2);
}

#[tokio::test]
async fn webhook_mode_with_the_cluster_down_forbids() {
    let cluster = Delegated::new().await;
    let text = std::fs::read_to_string(&cluster.kubeconfig)
        .unwrap()
        .replace(&cluster.server.url(), &unreachable_url().await);
    std::fs::write(&cluster.kubeconfig, text).unwrap();
    let flag = format!("--authorization-kubeconfig={}", cluster.kubeconfig);
    let built = authz(&parse(&["--authorization-mode=Webhook", &flag]).authz)
        .await
        .unwrap();

    let list = Attributes::resource(UserInfo::new("alice"), "list", "edgefleet.io", "fleets");
    let decision = built.authorizer.authorize(&list).await;
    assert!(!decision.is_allow());
    assert_eq!(decision.reason(), crate::auth::sar::UNREACHABLE_REASON);
    let probe = Attributes::non_resource(UserInfo::anonymous(), "get", "/healthz");
    assert!(built.authorizer.authorize(&probe).await.is_allow());
}
