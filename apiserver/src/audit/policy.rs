//! Audit policy: which level each request is recorded at, in kube's `audit.k8s.io/v1` `Policy`
//! format and with kube-apiserver's semantics (`k8s.io/apiserver/pkg/audit/policy`).
//!
//! Rules are tried in order; the **first rule that matches decides** the level and the stages to
//! omit. A request no rule matches is not recorded (level `None`). A rule matches when every
//! field it sets matches:
//!
//! - `users`: the (authenticated, not impersonated) user name is listed;
//! - `userGroups`: one of the user's groups is listed;
//! - `verbs`: the request verb (`get list watch create update patch delete deletecollection`,
//!   or the lowercased HTTP method of a non-resource request) is listed;
//! - `resources` / `namespaces` (resource requests only): the namespace is listed (`""` for
//!   cluster-scoped), and one entry names the request's API group with either no resources
//!   (all of the group), or a resource that is `*`, `<resource>`, `<resource>/<subresource>`,
//!   `*/<subresource>` or `<resource>/*` (the resource with or without any subresource), with
//!   `resourceNames` (if any) listing the object's name;
//! - `nonResourceURLs` (non-resource requests only): `*`, the exact path, or a prefix ending in `*`.
//!
//! Policy-level `omitStages` are added to every rule's; a rule's `omitManagedFields` overrides
//! the policy's. Unlike kube we reject unknown fields, so that a misspelt field cannot silently
//! widen or narrow what is recorded.
//!
//! **Proxied requests** (`clusters/{name}/proxy/...`) are judged as the edge request they carry:
//! verb, group, resource, namespace and name of the edge object. A rule also matches a proxied
//! request when it matches the hub's view of it (verb on `edgefleet.io` `clusters/proxy`, in the
//! Environment's namespace, named after the cluster), so a policy can single out proxied traffic
//! or one cluster without new fields.
//!
//! The [default policy](DEFAULT_POLICY_YAML), when no policy file is given, is what a security
//! team would choose: bodies of writes, never of Secret-like data, and metadata of everything
//! else except health probes.

use std::collections::BTreeSet;
use std::path::Path;

use edgefleet_api::validation::is_dns1123_subdomain;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::event::{Level, Stage, API_VERSION};
use crate::auth::Attributes;

/// The policy used when none is configured:
///
/// 1. health probes (`/healthz`, `/livez`, `/readyz` and their sub-paths): not recorded;
/// 2. Secret-like data — core `secrets`, `configmaps`, `serviceaccounts/token`,
///    `authentication.k8s.io` `tokenreviews`, and our `clusters/bootstrap` (its response holds a
///    bootstrap token) — hub or edge: `Metadata`, never bodies;
/// 3. reads (`get list watch`): `Metadata`;
/// 4. writes (`create update patch delete deletecollection`), hub or proxied to an edge
///    cluster: `Request` — what was changed, without echoing objects back;
/// 5. anything else (discovery, `/metrics`, other verbs): `Metadata`.
///
/// All four stages are kept (`RequestReceived` is the write-ahead record that makes a request
/// refusable when it cannot be recorded), and `managedFields` are left out of bodies.
pub const DEFAULT_POLICY_YAML: &str = r#"apiVersion: audit.k8s.io/v1
kind: Policy
omitManagedFields: true
rules:
- level: None
  nonResourceURLs: ["/healthz", "/healthz/*", "/livez", "/livez/*", "/readyz", "/readyz/*"]
- level: Metadata
  resources:
  - group: ""
    resources: ["secrets", "secrets/*", "configmaps", "configmaps/*", "serviceaccounts/token"]
  - group: authentication.k8s.io
    resources: ["tokenreviews"]
  - group: edgefleet.io
    resources: ["clusters/bootstrap"]
- level: Metadata
  verbs: ["get", "list", "watch"]
- level: Request
  verbs: ["create", "update", "patch", "delete", "deletecollection"]
- level: Metadata
"#;

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("reading audit policy {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing audit policy: {0}")]
    Parse(#[source] serde_yaml_ng::Error),
    #[error("invalid audit policy: {}", .0.join("; "))]
    Invalid(Vec<String>),
}

/// `audit.k8s.io/v1` `Policy`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Policy {
    pub api_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    #[serde(default)]
    pub rules: Vec<PolicyRule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub omit_stages: Vec<Stage>,
    #[serde(default)]
    pub omit_managed_fields: bool,
}

/// One rule of a [`Policy`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyRule {
    pub level: Level,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub user_groups: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verbs: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<GroupResources>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    #[serde(
        rename = "nonResourceURLs",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub non_resource_urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub omit_stages: Vec<Stage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub omit_managed_fields: Option<bool>,
}

/// Resources of one API group (`""` is the core group).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GroupResources {
    #[serde(default)]
    pub group: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_names: Vec<String>,
}

/// What a policy decides for one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestAuditConfig {
    pub level: Level,
    pub omit_stages: BTreeSet<Stage>,
    pub omit_managed_fields: bool,
}

impl RequestAuditConfig {
    pub fn records(&self, stage: Stage) -> bool {
        self.level != Level::None && !self.omit_stages.contains(&stage)
    }
}

/// A validated policy, ready to evaluate requests.
#[derive(Clone, Debug)]
pub struct PolicyEvaluator {
    policy: Policy,
}

impl PolicyEvaluator {
    /// Validates `policy` (as kube-apiserver does when loading it) and merges policy-level
    /// `omitStages` into every rule.
    pub fn new(mut policy: Policy) -> Result<Self, PolicyError> {
        validate(&policy)?;
        let policy_stages = policy.omit_stages.clone();
        for rule in &mut policy.rules {
            for stage in &policy_stages {
                if !rule.omit_stages.contains(stage) {
                    rule.omit_stages.push(*stage);
                }
            }
        }
        Ok(PolicyEvaluator { policy })
    }

    /// The [default policy](DEFAULT_POLICY_YAML).
    pub fn default_policy() -> Self {
        Self::from_yaml(DEFAULT_POLICY_YAML).expect("the default audit policy is valid")
    }

    /// A policy from YAML or JSON text.
    pub fn from_yaml(text: &str) -> Result<Self, PolicyError> {
        let policy: Policy = serde_yaml_ng::from_str(text).map_err(PolicyError::Parse)?;
        Self::new(policy)
    }

    /// A policy file (kube-apiserver's `--audit-policy-file`).
    pub fn from_file(path: &Path) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_yaml(&text)
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The level and omitted stages for a request.
    pub fn evaluate(&self, attrs: &Attributes) -> RequestAuditConfig {
        self.evaluate_any(&[attrs])
    }

    /// Like [`evaluate`](Self::evaluate), where a rule matches if it matches any of several
    /// views of one request (a proxied request: the edge request and the hub's `clusters/proxy`).
    pub fn evaluate_any(&self, views: &[&Attributes]) -> RequestAuditConfig {
        for rule in &self.policy.rules {
            if views.iter().any(|attrs| rule_matches(rule, attrs)) {
                return RequestAuditConfig {
                    level: rule.level,
                    omit_stages: rule.omit_stages.iter().copied().collect(),
                    omit_managed_fields: rule
                        .omit_managed_fields
                        .unwrap_or(self.policy.omit_managed_fields),
                };
            }
        }
        RequestAuditConfig {
            level: Level::None,
            omit_stages: self.policy.omit_stages.iter().copied().collect(),
            omit_managed_fields: self.policy.omit_managed_fields,
        }
    }
}

fn rule_matches(rule: &PolicyRule, attrs: &Attributes) -> bool {
    if !rule.users.is_empty() && !rule.users.contains(&attrs.user.name) {
        return false;
    }
    if !rule.user_groups.is_empty()
        && !attrs
            .user
            .groups
            .iter()
            .any(|g| rule.user_groups.contains(g))
    {
        return false;
    }
    if !rule.verbs.is_empty() && !rule.verbs.contains(&attrs.verb) {
        return false;
    }
    if !rule.namespaces.is_empty() || !rule.resources.is_empty() {
        return rule_matches_resource(rule, attrs);
    }
    if !rule.non_resource_urls.is_empty() {
        return !attrs.resource_request
            && rule
                .non_resource_urls
                .iter()
                .any(|spec| path_matches(&attrs.path, spec));
    }
    true
}

fn rule_matches_resource(rule: &PolicyRule, attrs: &Attributes) -> bool {
    if !attrs.resource_request {
        return false;
    }
    if !rule.namespaces.is_empty() && !rule.namespaces.contains(&attrs.namespace) {
        return false;
    }
    if rule.resources.is_empty() {
        return true;
    }
    let combined = if attrs.subresource.is_empty() {
        attrs.resource.clone()
    } else {
        format!("{}/{}", attrs.resource, attrs.subresource)
    };
    rule.resources
        .iter()
        .filter(|gr| gr.group == attrs.api_group)
        .any(|gr| {
            if gr.resources.is_empty() {
                return true;
            }
            if !gr.resource_names.is_empty() && !gr.resource_names.contains(&attrs.name) {
                return false;
            }
            gr.resources.iter().any(|res| {
                res == "*"
                    || *res == combined
                    || (!attrs.subresource.is_empty()
                        && res.strip_prefix("*/") == Some(attrs.subresource.as_str()))
                    || res.strip_suffix("/*") == Some(attrs.resource.as_str())
            })
        })
}

fn path_matches(path: &str, spec: &str) -> bool {
    spec == "*"
        || spec == path
        || spec
            .strip_suffix('*')
            .is_some_and(|prefix| path.starts_with(prefix.trim_end_matches('*')))
}

/// kube-apiserver's `ValidatePolicy`, plus our stricter header checks.
fn validate(policy: &Policy) -> Result<(), PolicyError> {
    let mut errors = Vec::new();
    if policy.api_version != API_VERSION {
        errors.push(format!(
            "apiVersion: Unsupported value {:?}: supported values: {API_VERSION:?}",
            policy.api_version
        ));
    }
    if policy.kind != "Policy" {
        errors.push(format!(
            "kind: Unsupported value {:?}: supported values: \"Policy\"",
            policy.kind
        ));
    }
    if policy.rules.is_empty() {
        errors.push("rules: Required value: a policy needs at least one rule".into());
    }
    for (i, rule) in policy.rules.iter().enumerate() {
        let at = format!("rules[{i}]");
        if !rule.non_resource_urls.is_empty()
            && (!rule.resources.is_empty() || !rule.namespaces.is_empty())
        {
            errors.push(format!(
                "{at}.nonResourceURLs: Invalid value: rules cannot apply to both regular resources and non-resource URLs"
            ));
        }
        for (j, url) in rule.non_resource_urls.iter().enumerate() {
            if url == "*" {
                continue;
            }
            if !url.starts_with('/') {
                errors.push(format!(
                    "{at}.nonResourceURLs[{j}]: Invalid value: {url:?}: non-resource URL rules must begin with a '/' character"
                ));
            }
            if url.len() > 1 && url[..url.len() - 1].contains('*') {
                errors.push(format!(
                    "{at}.nonResourceURLs[{j}]: Invalid value: {url:?}: non-resource URL wildcards '*' must be the final character of the rule"
                ));
            }
        }
        for (j, gr) in rule.resources.iter().enumerate() {
            if !gr.group.is_empty() && !is_dns1123_subdomain(&gr.group).is_empty() {
                errors.push(format!(
                    "{at}.resources[{j}].group: Invalid value: {:?}: must be a lowercase RFC 1123 subdomain",
                    gr.group
                ));
            }
            if !gr.resource_names.is_empty() && gr.resources.is_empty() {
                errors.push(format!(
                    "{at}.resources[{j}].resourceNames: Invalid value: using resourceNames requires at least one resource"
                ));
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(PolicyError::Invalid(errors))
    }
}

#[cfg(test)]
mod tests;
