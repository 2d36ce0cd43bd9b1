//! kubeconfig files with embedded credentials, as kubectl and client libraries read them.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::Serialize;

/// How the user authenticates.
pub enum Credentials<'a> {
    ClientCertificate { cert_pem: &'a str, key_pem: &'a str },
    Token(&'a str),
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct Kubeconfig<'a> {
    api_version: &'a str,
    kind: &'a str,
    clusters: Vec<Named<ClusterEntry>>,
    users: Vec<Named<UserEntry>>,
    contexts: Vec<Named<ContextEntry>>,
    current_context: &'a str,
}

#[derive(Serialize)]
struct Named<T> {
    name: String,
    #[serde(flatten)]
    entry: T,
}

#[derive(Serialize)]
struct ClusterEntry {
    cluster: ClusterFields,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct ClusterFields {
    server: String,
    certificate_authority_data: String,
}

#[derive(Serialize)]
struct UserEntry {
    user: UserFields,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "kebab-case")]
struct UserFields {
    #[serde(skip_serializing_if = "Option::is_none")]
    client_certificate_data: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_key_data: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
}

#[derive(Serialize)]
struct ContextEntry {
    context: ContextFields,
}

#[derive(Serialize)]
struct ContextFields {
    cluster: String,
    user: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<String>,
}

/// Renders a single-context kubeconfig.
pub fn render(
    name: &str,
    server: &str,
    ca_pem: &str,
    user: &str,
    credentials: Credentials<'_>,
    namespace: Option<&str>,
) -> String {
    let user_fields = match credentials {
        Credentials::ClientCertificate { cert_pem, key_pem } => UserFields {
            client_certificate_data: Some(STANDARD.encode(cert_pem)),
            client_key_data: Some(STANDARD.encode(key_pem)),
            ..Default::default()
        },
        Credentials::Token(token) => UserFields {
            token: Some(token.to_string()),
            ..Default::default()
        },
    };
    let config = Kubeconfig {
        api_version: "v1",
        kind: "Config",
        clusters: vec![Named {
            name: name.into(),
            entry: ClusterEntry {
                cluster: ClusterFields {
                    server: server.into(),
                    certificate_authority_data: STANDARD.encode(ca_pem),
                },
            },
        }],
        users: vec![Named {
            name: user.into(),
            entry: UserEntry { user: user_fields },
        }],
        contexts: vec![Named {
            name: name.into(),
            entry: ContextEntry {
                context: ContextFields {
                    cluster: name.into(),
                    user: user.into(),
                    namespace: namespace.map(String::from),
                },
            },
        }],
        current_context: name,
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
    let config: serde_json::Value =
        serde_yaml_ng::from_str(config).map_err(|e| format!("not a kubeconfig: {e}"))?;
    let current = config["current-context"]
        .as_str()
        .ok_or("the kubeconfig has no current-context")?;
    let named = |list: &str, name: &str| {
        config[list]
            .as_array()
            .and_then(|items| items.iter().find(|i| i["name"] == name))
            .cloned()
            .ok_or_else(|| format!("the kubeconfig has no {list} entry {name:?}"))
    };
    let context = named("contexts", current)?;
    let cluster_name = context["context"]["cluster"]
        .as_str()
        .ok_or("the current context names no cluster")?;
    let user_name = context["context"]["user"].as_str().unwrap_or_default();
    let mut hub = named("clusters", cluster_name)?;
    let server = hub["cluster"]["server"]
        .as_str()
        .ok_or("the cluster has no server")?
        .trim_end_matches('/')
        .to_string();
    let new_name = format!("{environment}-{cluster}");
    hub["name"] = new_name.clone().into();
    hub["cluster"]["server"] =
        format!("{server}{}", cluster_proxy_path(environment, cluster)).into();
    let mut users = Vec::new();
    if !user_name.is_empty() {
        users.push(named("users", user_name)?);
    }
    let out = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [hub],
        "users": users,
        "contexts": [{"name": new_name, "context": {"cluster": new_name, "user": user_name}}],
        "current-context": new_name,
    });
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
