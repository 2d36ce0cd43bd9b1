//! Kubeconfig files for tests, written through kube's own model (`kube::config::Kubeconfig`):
//! what the agent reads is what kube-rs (and so kubectl's format) defines, not a hand-written
//! copy of it.
//!
//! ```text
//! Kubeconfig::new("https://127.0.0.1:6443", ca_pem)
//!     .tls_server_name("kubernetes.test")     the name the serving certificate carries
//!     .token("agent-token")                   or .client_certificate(cert_pem, key_pem)
//!     .write(&dir.join("kubeconfig"))         one cluster, one user, one current context
//! ```

use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use kube::config::{AuthInfo, Cluster, Context, NamedAuthInfo, NamedCluster, NamedContext};
use secrecy::SecretString;

/// The names of the one cluster, user and context a test kubeconfig holds.
const CLUSTER: &str = "test";
const USER: &str = "test-user";

/// A single-context kubeconfig with everything embedded.
#[derive(Clone, Debug)]
pub struct Kubeconfig {
    cluster: Cluster,
    user: AuthInfo,
    namespace: Option<String>,
}

impl Kubeconfig {
    /// A kubeconfig for `server`, trusting `ca_pem`, with no credentials yet.
    pub fn new(server: &str, ca_pem: &str) -> Self {
        Kubeconfig {
            cluster: Cluster {
                server: Some(server.into()),
                certificate_authority_data: Some(STANDARD.encode(ca_pem)),
                ..Cluster::default()
            },
            user: AuthInfo::default(),
            namespace: None,
        }
    }

    /// The name the server's certificate must carry, when it is not the server URL's host.
    pub fn tls_server_name(mut self, name: &str) -> Self {
        self.cluster.tls_server_name = Some(name.into());
        self
    }

    /// Authenticates with a bearer token.
    pub fn token(mut self, token: &str) -> Self {
        self.user.token = Some(SecretString::from(token));
        self
    }

    /// Authenticates with a client certificate (PEM chain and key).
    pub fn client_certificate(mut self, cert_pem: &str, key_pem: &str) -> Self {
        self.user.client_certificate_data = Some(STANDARD.encode(cert_pem));
        self.user.client_key_data = Some(SecretString::from(STANDARD.encode(key_pem)));
        self
    }

    /// The context's default namespace.
    pub fn namespace(mut self, namespace: &str) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// The file's contents (YAML).
    pub fn yaml(&self) -> String {
        let config = kube::config::Kubeconfig {
            api_version: Some("v1".into()),
            kind: Some("Config".into()),
            clusters: vec![NamedCluster {
                name: CLUSTER.into(),
                cluster: Some(self.cluster.clone()),
                ..NamedCluster::default()
            }],
            auth_infos: vec![NamedAuthInfo {
                name: USER.into(),
                auth_info: Some(self.user.clone()),
                ..NamedAuthInfo::default()
            }],
            contexts: vec![NamedContext {
                name: CLUSTER.into(),
                context: Some(Context {
                    cluster: CLUSTER.into(),
                    user: Some(USER.into()),
                    namespace: self.namespace.clone(),
                    ..Context::default()
                }),
                ..NamedContext::default()
            }],
            current_context: Some(CLUSTER.into()),
            ..kube::config::Kubeconfig::default()
        };
        serde_yaml_ng::to_string(&config).expect("a kubeconfig serializes")
    }

    /// Writes the file to `path`.
    ///
    /// # Panics
    /// When the file cannot be written (a test's temporary directory).
    pub fn write(&self, path: &Path) {
        std::fs::write(path, self.yaml())
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_kubeconfig_reads_back_through_kube_with_its_credentials() {
        let yaml = Kubeconfig::new("https://127.0.0.1:8443", "CA PEM")
            .tls_server_name("kubernetes.test")
            .token("s3cr3t")
            .namespace("retail")
            .yaml();
        let read = kube::config::Kubeconfig::from_yaml(&yaml).unwrap();
        let cluster = read.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(cluster.server.as_deref(), Some("https://127.0.0.1:8443"));
        assert_eq!(cluster.tls_server_name.as_deref(), Some("kubernetes.test"));
        assert_eq!(
            STANDARD
                .decode(cluster.certificate_authority_data.as_ref().unwrap())
                .unwrap(),
            b"CA PEM"
        );
        let user = read.auth_infos[0].auth_info.as_ref().unwrap();
        assert_eq!(
            secrecy::ExposeSecret::expose_secret(user.token.as_ref().unwrap()),
            "s3cr3t"
        );
        let context = read.contexts[0].context.as_ref().unwrap();
        assert_eq!(read.current_context.as_deref(), Some(CLUSTER));
        assert_eq!(context.namespace.as_deref(), Some("retail"));
    }

    #[test]
    fn a_client_certificate_is_embedded_base64() {
        let yaml = Kubeconfig::new("https://hub", "CA")
            .client_certificate("CERT", "KEY")
            .yaml();
        let read = kube::config::Kubeconfig::from_yaml(&yaml).unwrap();
        let user = read.auth_infos[0].auth_info.as_ref().unwrap();
        assert_eq!(user.client_certificate_data.as_deref(), Some("Q0VSVA=="));
        assert_eq!(
            secrecy::ExposeSecret::expose_secret(user.client_key_data.as_ref().unwrap()),
            "S0VZ"
        );
    }
}
