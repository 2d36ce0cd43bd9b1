//! kubeconfig files with embedded credentials, as kubectl and client libraries read them,
//! written and read through kube's own model of the file (`kube::config::Kubeconfig`).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use kube::config::{
    AuthInfo, Cluster, Context, Kubeconfig, NamedAuthInfo, NamedCluster, NamedContext,
};
use secrecy::SecretString;

/// How the user authenticates.
pub enum Credentials<'a> {
    ClientCertificate { cert_pem: &'a str, key_pem: &'a str },
    Token(&'a str),
}

/// Renders a single-context kubeconfig through kube's own model of the file.
pub fn render(
    name: &str,
    server: &str,
    ca_pem: &str,
    user: &str,
    credentials: Credentials<'_>,
    namespace: Option<&str>,
) -> String {
    let auth_info = match credentials {
        Credentials::ClientCertificate { cert_pem, key_pem } => AuthInfo {
            client_certificate_data: Some(STANDARD.encode(cert_pem)),
            client_key_data: Some(SecretString::from(STANDARD.encode(key_pem))),
            ..AuthInfo::default()
        },
        Credentials::Token(token) => AuthInfo {
            token: Some(SecretString::from(token)),
            ..AuthInfo::default()
        },
    };
    let config = Kubeconfig {
        api_version: Some("v1".into()),
        kind: Some("Config".into()),
        clusters: vec![NamedCluster {
            name: name.into(),
            cluster: Some(Cluster {
                server: Some(server.into()),
                certificate_authority_data: Some(STANDARD.encode(ca_pem)),
                ..Cluster::default()
            }),
            ..NamedCluster::default()
        }],
        auth_infos: vec![NamedAuthInfo {
            name: user.into(),
            auth_info: Some(auth_info),
            ..NamedAuthInfo::default()
        }],
        contexts: vec![NamedContext {
            name: name.into(),
            context: Some(Context {
                cluster: name.into(),
                user: Some(user.into()),
                namespace: namespace.map(String::from),
                ..Context::default()
            }),
            ..NamedContext::default()
        }],
        current_context: Some(name.into()),
        ..Kubeconfig::default()
    };
    serde_yaml_ng::to_string(&config).unwrap_or_default()
}

/// Writes `contents` to `path` readable by the owner only, atomically (write, then rename).
pub fn write_private(path: &std::path::Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_what_kubectl_reads() {
        let yaml = render(
            "edgefleet-dev",
            "https://127.0.0.1:6443",
            "CA",
            "admin",
            Credentials::ClientCertificate {
                cert_pem: "CERT",
                key_pem: "KEY",
            },
            None,
        );
        let v: serde_json::Value = serde_yaml_ng::from_str(&yaml).unwrap();
        assert_eq!(v["current-context"], "edgefleet-dev");
        assert_eq!(
            v["clusters"][0]["cluster"]["server"],
            "https://127.0.0.1:6443"
        );
        assert_eq!(
            v["clusters"][0]["cluster"]["certificate-authority-data"],
            STANDARD.encode("CA")
        );
        assert_eq!(
            v["users"][0]["user"]["client-key-data"],
            STANDARD.encode("KEY")
        );
        assert_eq!(v["contexts"][0]["context"]["user"], "admin");
    }
}

/// The proxy path of an edge cluster under a hub's (or management cluster's) server URL.
pub fn cluster_proxy_path(environment: &str, cluster: &str) -> String {
    format!(
        "/apis/{}/namespaces/{environment}/clusters/{cluster}/proxy",
        edgefleet_api::API_VERSION
    )
}

/// A kubeconfig for the edge cluster `environment/cluster`: the current context of `config`
/// (a kubeconfig's YAML) with its server pointed at the cluster's proxy subresource. The user's
/// credentials are kept as they are (certificates, tokens, exec plugins): the hub authenticates
/// and authorizes the same person, then forwards as them.
pub fn for_cluster(config: &str, environment: &str, cluster: &str) -> Result<String, String> {
    let config = Kubeconfig::from_yaml(config).map_err(|e| format!("not a kubeconfig: {e}"))?;
    let current = config
        .current_context
        .as_deref()
        .ok_or("the kubeconfig has no current-context")?;
    let context = config
        .contexts
        .iter()
        .find(|c| c.name == current)
        .and_then(|c| c.context.as_ref())
        .ok_or_else(|| format!("the kubeconfig has no contexts entry {current:?}"))?;
    let mut hub = config
        .clusters
        .iter()
        .find(|c| c.name == context.cluster)
        .cloned()
        .ok_or_else(|| format!("the kubeconfig has no clusters entry {:?}", context.cluster))?;
    let user_name = context.user.clone().unwrap_or_default();
    let users = match user_name.as_str() {
        "" => Vec::new(),
        name => vec![config
            .auth_infos
            .iter()
            .find(|u| u.name == name)
            .cloned()
            .ok_or_else(|| format!("the kubeconfig has no users entry {name:?}"))?],
    };
    let fields = hub.cluster.as_mut().ok_or("the cluster has no server")?;
    let server = fields
        .server
        .as_deref()
        .ok_or("the cluster has no server")?
        .trim_end_matches('/')
        .to_string();
    fields.server = Some(format!(
        "{server}{}",
        cluster_proxy_path(environment, cluster)
    ));
    let new_name = format!("{environment}-{cluster}");
    hub.name = new_name.clone();
    let out = Kubeconfig {
        api_version: Some("v1".into()),
        kind: Some("Config".into()),
        clusters: vec![hub],
        auth_infos: users,
        contexts: vec![NamedContext {
            name: new_name.clone(),
            context: Some(Context {
                cluster: new_name.clone(),
                user: Some(user_name),
                ..Context::default()
            }),
            ..NamedContext::default()
        }],
        current_context: Some(new_name),
        ..Kubeconfig::default()
    };
    serde_yaml_ng::to_string(&out).map_err(|e| e.to_string())
}

#[cfg(test)]
mod cluster_tests {
    use super::*;

    #[test]
    fn points_the_current_context_at_the_cluster_proxy() {
        let hub = render(
            "hub",
            "https://hub:6443/",
            "CA",
            "alice",
            Credentials::Token("t0k3n"),
            None,
        );
        let edge = for_cluster(&hub, "retail", "store-1").unwrap();
        let v: serde_json::Value = serde_yaml_ng::from_str(&edge).unwrap();
        assert_eq!(
            v["clusters"][0]["cluster"]["server"],
            "https://hub:6443/apis/edgefleet.io/v1alpha1/namespaces/retail/clusters/store-1/proxy"
        );
        assert_eq!(
            v["clusters"][0]["cluster"]["certificate-authority-data"],
            STANDARD.encode("CA")
        );
        assert_eq!(v["users"][0]["user"]["token"], "t0k3n");
        assert_eq!(v["current-context"], "retail-store-1");
        assert!(for_cluster("kind: Config", "a", "b").is_err());
    }
}
