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
