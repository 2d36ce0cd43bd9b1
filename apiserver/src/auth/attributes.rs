//! What a request wants to do (kube's `authorizer.Attributes`).

use super::UserInfo;

/// What a request wants (k8s `authorizer.Attributes`).
///
/// A resource request names a verb on `api_group`/`resource`[/`subresource`], optionally a
/// `namespace` and a `name`. A non-resource request names a lowercased HTTP method as the verb and
/// a `path` (`/healthz`, `/apis`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attributes {
    pub user: UserInfo,
    /// `get list watch create update patch delete deletecollection` (and `impersonate`, …) for
    /// resource requests; the lowercased HTTP method for non-resource requests.
    pub verb: String,
    pub resource_request: bool,
    pub namespace: String,
    pub api_group: String,
    pub api_version: String,
    pub resource: String,
    pub subresource: String,
    pub name: String,
    /// For non-resource requests, e.g. `/healthz`.
    pub path: String,
}

impl Attributes {
    /// A resource request; cluster-scoped and unnamed unless [`Self::with_namespace`] and
    /// [`Self::with_name`] say otherwise.
    pub fn resource(
        user: UserInfo,
        verb: impl Into<String>,
        api_group: impl Into<String>,
        resource: impl Into<String>,
    ) -> Self {
        Attributes {
            user,
            verb: verb.into(),
            resource_request: true,
            api_group: api_group.into(),
            resource: resource.into(),
            ..Attributes::default()
        }
    }

    /// A request for a path outside the resource tree.
    pub fn non_resource(user: UserInfo, verb: impl Into<String>, path: impl Into<String>) -> Self {
        Attributes {
            user,
            verb: verb.into(),
            resource_request: false,
            path: path.into(),
            ..Attributes::default()
        }
    }

    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    pub fn with_subresource(mut self, subresource: impl Into<String>) -> Self {
        self.subresource = subresource.into();
        self
    }

    pub fn with_api_version(mut self, api_version: impl Into<String>) -> Self {
        self.api_version = api_version.into();
        self
    }
}
