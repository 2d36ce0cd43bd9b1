//! The authenticated caller (kube's `user.Info`) and the well-known names around it.

use std::collections::BTreeMap;

use edgefleet_api::validation::{is_dns1123_label, is_dns1123_subdomain};

/// The user every unauthenticated request runs as when anonymous access is on.
pub const ANONYMOUS: &str = "system:anonymous";
/// Added to every authenticated user (never to [`ANONYMOUS`]).
pub const ALL_AUTHENTICATED: &str = "system:authenticated";
/// The group of [`ANONYMOUS`].
pub const ALL_UNAUTHENTICATED: &str = "system:unauthenticated";
/// Members are allowed everything, before RBAC is consulted.
pub const SYSTEM_PRIVILEGED_GROUP: &str = "system:masters";
/// Service account users are `system:serviceaccount:<namespace>:<name>`.
pub const SERVICE_ACCOUNT_USERNAME_PREFIX: &str = "system:serviceaccount:";
/// Every service account is in this group, and in `system:serviceaccounts:<namespace>`.
pub const ALL_SERVICE_ACCOUNTS_GROUP: &str = "system:serviceaccounts";
/// The `extra` key kube uses to identify the credential a request was authenticated with (for
/// audit), e.g. `X509SHA256=<hex>` for a client certificate.
pub const CREDENTIAL_ID_KEY: &str = "authentication.kubernetes.io/credential-id";

/// The authenticated caller (k8s `user.Info`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    /// A user with a name and nothing else.
    pub fn new(name: impl Into<String>) -> Self {
        UserInfo {
            name: name.into(),
            ..UserInfo::default()
        }
    }

    /// What an unauthenticated request runs as when anonymous access is enabled.
    pub fn anonymous() -> Self {
        UserInfo::new(ANONYMOUS).with_groups([ALL_UNAUTHENTICATED])
    }

    pub fn with_uid(mut self, uid: impl Into<String>) -> Self {
        self.uid = uid.into();
        self
    }

    pub fn with_groups<I, S>(mut self, groups: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.groups.extend(groups.into_iter().map(Into::into));
        self
    }

    pub fn with_extra<I, S>(mut self, key: impl Into<String>, values: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.extra
            .entry(key.into())
            .or_default()
            .extend(values.into_iter().map(Into::into));
        self
    }

    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }

    /// Adds `system:authenticated`, as kube's `AuthenticatedGroupAdder` does: not to the anonymous
    /// user, and not when the user already claims `system:authenticated` or
    /// `system:unauthenticated`.
    pub(crate) fn add_authenticated_group(&mut self) {
        if self.name == ANONYMOUS
            || self.in_group(ALL_AUTHENTICATED)
            || self.in_group(ALL_UNAUTHENTICATED)
        {
            return;
        }
        self.groups.push(ALL_AUTHENTICATED.to_string());
    }
}

/// `system:serviceaccount:<namespace>:<name>`.
pub(crate) fn service_account_username(namespace: &str, name: &str) -> String {
    format!("{SERVICE_ACCOUNT_USERNAME_PREFIX}{namespace}:{name}")
}

/// Whether `username` is the service account `namespace/name`, without allocating (this runs for
/// every ServiceAccount subject of every binding on every request).
pub(crate) fn is_service_account(username: &str, namespace: &str, name: &str) -> bool {
    username
        .strip_prefix(SERVICE_ACCOUNT_USERNAME_PREFIX)
        .and_then(|rest| rest.strip_prefix(namespace))
        .and_then(|rest| rest.strip_prefix(':'))
        == Some(name)
}

/// Splits a service account username into namespace and name, validating both as kube's
/// `serviceaccount.SplitUsername` does; `None` when `username` is not a service account.
pub(crate) fn split_service_account_username(username: &str) -> Option<(&str, &str)> {
    let rest = username.strip_prefix(SERVICE_ACCOUNT_USERNAME_PREFIX)?;
    let (namespace, name) = rest.split_once(':')?;
    if name.contains(':')
        || !is_dns1123_label(namespace).is_empty()
        || !is_dns1123_subdomain(name).is_empty()
    {
        return None;
    }
    Some((namespace, name))
}

/// The groups kube gives a service account of `namespace`.
pub(crate) fn service_account_groups(namespace: &str) -> Vec<String> {
    vec![
        ALL_SERVICE_ACCOUNTS_GROUP.to_string(),
        format!("{ALL_SERVICE_ACCOUNTS_GROUP}:{namespace}"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authenticated_group_is_added_once_and_never_to_anonymous() {
        let mut alice = UserInfo::new("alice").with_groups(["dev"]);
        alice.add_authenticated_group();
        alice.add_authenticated_group();
        assert_eq!(alice.groups, ["dev", ALL_AUTHENTICATED]);

        let mut anonymous = UserInfo::anonymous();
        anonymous.add_authenticated_group();
        assert_eq!(anonymous.groups, [ALL_UNAUTHENTICATED]);

        // A user that already claims to be unauthenticated stays so (kube's rule).
        let mut odd = UserInfo::new("bob").with_groups([ALL_UNAUTHENTICATED]);
        odd.add_authenticated_group();
        assert_eq!(odd.groups, [ALL_UNAUTHENTICATED]);
    }

    #[test]
    fn service_account_usernames() {
        let name = service_account_username("retail", "deployer");
        assert_eq!(name, "system:serviceaccount:retail:deployer");
        assert!(is_service_account(&name, "retail", "deployer"));
        assert!(!is_service_account(&name, "retail", "deploy"));
        assert!(!is_service_account(&name, "retai", "l:deployer"));
        assert!(!is_service_account("deployer", "retail", "deployer"));

        assert_eq!(
            split_service_account_username(&name),
            Some(("retail", "deployer"))
        );
        assert_eq!(
            split_service_account_username("system:serviceaccount:a:b:c"),
            None
        );
        assert_eq!(
            split_service_account_username("system:serviceaccount:Bad:x"),
            None
        );
        assert_eq!(
            split_service_account_username("system:serviceaccount::x"),
            None
        );
        assert_eq!(split_service_account_username("alice"), None);
    }
}
