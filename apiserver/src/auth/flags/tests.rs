use clap::Parser;

use super::*;
use crate::auth::authn::testing::{head, Ca};
use crate::auth::authn::Authenticator;
use crate::auth::{Attributes, UserInfo};

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
}

#[test]
fn kube_flag_spellings_parse() {
    assert!(!parse(&["--anonymous-auth=false"]).authn.anonymous_auth);
    assert!(parse(&["--anonymous-auth"]).authn.anonymous_auth);
    let cli = parse(&[
        "--requestheader-allowed-names=front-proxy-client,aggregator",
        "--requestheader-username-headers",
        "X-Proxy-User,X-Remote-User",
        "--authorization-mode=AlwaysAllow,RBAC",
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
        [AuthorizationMode::AlwaysAllow, AuthorizationMode::Rbac]
    );
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

    let authn = cli.authn.build().unwrap();
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

    let authz = cli.authz.build().unwrap();
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
async fn authorization_modes() {
    let alice = Attributes::resource(
        UserInfo::new("alice"),
        "delete",
        "edgefleet.io",
        "environments",
    );

    let allow_all = parse(&["--authorization-mode=AlwaysAllow"])
        .authz
        .build()
        .unwrap();
    assert!(allow_all.authorizer.authorize(&alice).await.is_allow());
    assert!(allow_all.rbac.is_none());

    let deny_all = parse(&["--authorization-mode=AlwaysDeny"])
        .authz
        .build()
        .unwrap();
    let decision = deny_all.authorizer.authorize(&alice).await;
    assert_eq!(decision.reason(), "Everything is forbidden.");

    let rbac = parse(&[]).authz.build().unwrap();
    assert!(!rbac.authorizer.authorize(&alice).await.is_allow());

    let err = parse(&[
        "--authorization-mode=AlwaysAllow",
        "--authorization-rbac-file=/x.yaml",
    ])
    .authz
    .build()
    .err()
    .unwrap();
    assert!(matches!(err, AuthConfigError::RbacFileWithoutRbac));
}

#[test]
fn unusable_files_name_their_flag() {
    let err = parse(&["--client-ca-file=/nonexistent/ca.crt"])
        .authn
        .build()
        .unwrap_err();
    assert_eq!(err.to_string(), "--client-ca-file");
    assert!(std::error::Error::source(&err)
        .unwrap()
        .to_string()
        .contains("/nonexistent/ca.crt"));

    let err = parse(&["--token-auth-file=/nonexistent/t.csv"])
        .authn
        .build()
        .unwrap_err();
    assert!(matches!(err, AuthConfigError::TokenFile(_)));

    let err = parse(&["--authorization-rbac-file=/nonexistent/rbac.yaml"])
        .authz
        .build()
        .err()
        .unwrap();
    assert!(matches!(
        err,
        AuthConfigError::Policy(PolicyError::Read { .. })
    ));
}
