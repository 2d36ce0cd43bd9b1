//! The `clusters/{name}/bootstrap` subresource: everything an edge cluster needs to run its
//! agent, as one manifest to `kubectl apply` there.
//!
//! Each GET mints a new single-use bootstrap token (valid for [`TOKEN_TTL`]); earlier tokens
//! stay valid until used or expired. The agent enrolls with the token, then keeps its
//! certificate in the Secret `edgefleet-agent-identity`, so a restarted pod reconnects without
//! a token.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Value};

/// How long a bootstrap token may wait to be used.
pub const TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);
/// Namespace of the agent on the edge cluster.
pub const AGENT_NAMESPACE: &str = "edgefleet-system";

/// What goes into an agent's install manifest.
pub struct InstallParams<'a> {
    pub environment: &'a str,
    pub cluster: &'a str,
    pub token: &'a str,
    /// `host:port` the agent dials.
    pub hub_address: &'a str,
    /// PEM of the CA the hub's tunnel certificate chains to.
    pub hub_ca_pem: &'a str,
    pub image: &'a str,
}

/// The objects to apply on the edge cluster, as a `v1` List.
pub fn install_manifest(p: &InstallParams<'_>) -> Value {
    let labels = json!({"app.kubernetes.io/name": "edgefleet-agent", "app.kubernetes.io/part-of": "edgefleet"});
    let items = vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": AGENT_NAMESPACE, "labels": labels}}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "edgefleet-agent", "namespace": AGENT_NAMESPACE, "labels": labels}}),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "edgefleet-agent", "labels": labels},
            "rules": [
                // Requests from the hub run as their caller, so the edge cluster's RBAC applies.
                {"apiGroups": [""], "resources": ["users", "groups", "serviceaccounts"], "verbs": ["impersonate"]},
                {"apiGroups": ["authentication.k8s.io"], "resources": ["uids", "userextras/*"], "verbs": ["impersonate"]},
                // The facts the agent reports.
                {"apiGroups": [""], "resources": ["nodes", "namespaces"], "verbs": ["get", "list", "watch"]},
                {"nonResourceURLs": ["/version", "/healthz"], "verbs": ["get"]},
            ],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "edgefleet-agent", "labels": labels},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edgefleet-agent"},
            "subjects": [{"kind": "ServiceAccount", "name": "edgefleet-agent", "namespace": AGENT_NAMESPACE}],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "edgefleet-agent-identity", "namespace": AGENT_NAMESPACE, "labels": labels},
            "rules": [{"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["edgefleet-agent-identity"], "verbs": ["get", "update"]},
                      {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]}],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "edgefleet-agent-identity", "namespace": AGENT_NAMESPACE, "labels": labels},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "edgefleet-agent-identity"},
            "subjects": [{"kind": "ServiceAccount", "name": "edgefleet-agent", "namespace": AGENT_NAMESPACE}],
        }),
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "edgefleet-agent-bootstrap", "namespace": AGENT_NAMESPACE, "labels": labels},
            "type": "Opaque",
            "data": {"token": STANDARD.encode(p.token), "hub-ca.crt": STANDARD.encode(p.hub_ca_pem)},
        }),
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "edgefleet-agent", "namespace": AGENT_NAMESPACE, "labels": labels},
            "spec": {
                "replicas": 1,
                "strategy": {"type": "Recreate"},
                "selector": {"matchLabels": {"app.kubernetes.io/name": "edgefleet-agent"}},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": "edgefleet-agent",
                        "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
                        "containers": [{
                            "name": "agent",
                            "image": p.image,
                            "args": [
                                "run",
                                format!("--hub-address={}", p.hub_address),
                                "--hub-ca-file=/etc/edgefleet/bootstrap/hub-ca.crt",
                                format!("--cluster={}/{}", p.environment, p.cluster),
                                "--bootstrap-token-file=/etc/edgefleet/bootstrap/token",
                                format!("--identity-secret={AGENT_NAMESPACE}/edgefleet-agent-identity"),
                                // A working copy of the identity; the Secret is what survives.
                                "--identity-dir=/var/run/edgefleet",
                            ],
                            "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
                            "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "capabilities": {"drop": ["ALL"]}},
                            "volumeMounts": [
                                {"name": "bootstrap", "mountPath": "/etc/edgefleet/bootstrap", "readOnly": true},
                                {"name": "identity", "mountPath": "/var/run/edgefleet"},
                            ],
                        }],
                        "volumes": [
                            {"name": "bootstrap", "secret": {"secretName": "edgefleet-agent-bootstrap"}},
                            // In memory: the agent's private key never touches the node's disk.
                            {"name": "identity", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
                        ],
                    },
                },
            },
        }),
    ];
    json!({"apiVersion": "v1", "kind": "List", "metadata": {}, "items": items})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_carries_token_ca_and_identity() {
        let list = install_manifest(&InstallParams {
            environment: "retail",
            cluster: "store-1",
            token: "abcdef.0123456789abcdef",
            hub_address: "hub.example.com:8132",
            hub_ca_pem: "-----BEGIN CERTIFICATE-----",
            image: "ghcr.io/edgefleet/edgefleet-agent:v0.1.0",
        });
        let items = list["items"].as_array().unwrap();
        let kinds: Vec<&str> = items.iter().map(|i| i["kind"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "Namespace",
                "ServiceAccount",
                "ClusterRole",
                "ClusterRoleBinding",
                "Role",
                "RoleBinding",
                "Secret",
                "Deployment"
            ]
        );
        let secret = &items[6];
        assert_eq!(
            secret["data"]["token"],
            STANDARD.encode("abcdef.0123456789abcdef")
        );
        let args = &items[7]["spec"]["template"]["spec"]["containers"][0]["args"];
        assert!(args
            .as_array()
            .unwrap()
            .contains(&json!("--cluster=retail/store-1")));
        assert!(args
            .as_array()
            .unwrap()
            .contains(&json!("--hub-address=hub.example.com:8132")));
    }
}
