//! The 403 Forbidden error in kube-apiserver's exact wording.
//!
//! kube builds it in two steps, and so do we: `responsewriters.forbiddenMessage` says who cannot do
//! what (`User "alice" cannot create resource "clusters" in API group "edgefleet.io" in the
//! namespace "retail"`), `responsewriters.Forbidden` appends the authorizer's reason (`: <reason>`
//! when non-empty), and `errors.NewForbidden` prefixes the qualified resource and name
//! (`clusters.edgefleet.io "edge-1" is forbidden: …`, or just `forbidden: …` for a path). Clients
//! and scripts match on this text, so it stays byte-for-byte kube's.

use std::fmt;

use super::Attributes;

/// A refused request, ready to become a `metav1.Status` (reason `Forbidden`, code 403, details
/// `{group, kind: resource, name}` as kube fills them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forbidden {
    /// `details.group`: the API group of the request (empty for non-resource requests).
    pub group: String,
    /// `details.kind`: kube puts the resource (not the kind) here.
    pub resource: String,
    /// `details.name`.
    pub name: String,
    /// The complete message.
    pub message: String,
}

impl Forbidden {
    /// The Forbidden error for `attributes`, with the authorizer's `reason` appended when
    /// non-empty.
    pub fn new(attributes: &Attributes, reason: &str) -> Self {
        // Non-resource requests have neither group nor resource, which makes kube print the bare
        // `forbidden: ` prefix.
        let (group, resource) = if attributes.resource_request {
            (attributes.api_group.clone(), attributes.resource.clone())
        } else {
            (String::new(), String::new())
        };
        let name = if attributes.resource_request {
            attributes.name.clone()
        } else {
            String::new()
        };

        let mut err = who_cannot_what(attributes);
        if !reason.is_empty() {
            err.push_str(": ");
            err.push_str(reason);
        }

        let message = if group.is_empty() && resource.is_empty() {
            format!("forbidden: {err}")
        } else {
            let qualified = if group.is_empty() {
                resource.clone()
            } else {
                format!("{resource}.{group}")
            };
            if name.is_empty() {
                format!("{qualified} is forbidden: {err}")
            } else {
                format!("{qualified} {} is forbidden: {err}", go_quote(&name))
            }
        };

        Forbidden {
            group,
            resource,
            name,
            message,
        }
    }
}

impl fmt::Display for Forbidden {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Forbidden {}

/// kube's complete Forbidden message for `attributes` and an authorizer's `reason`.
pub fn forbidden_message(attributes: &Attributes, reason: &str) -> String {
    Forbidden::new(attributes, reason).message
}

/// kube's `forbiddenMessage`.
fn who_cannot_what(a: &Attributes) -> String {
    let user = go_quote(&a.user.name);
    if !a.resource_request {
        return format!("User {user} cannot {} path {}", a.verb, go_quote(&a.path));
    }
    let resource = if a.subresource.is_empty() {
        a.resource.clone()
    } else {
        format!("{}/{}", a.resource, a.subresource)
    };
    let scope = if a.namespace.is_empty() {
        "at the cluster scope".to_string()
    } else {
        format!("in the namespace {}", go_quote(&a.namespace))
    };
    format!(
        "User {user} cannot {} resource {} in API group {} {scope}",
        a.verb,
        go_quote(&resource),
        go_quote(&a.api_group),
    )
}

/// Go's `%q` (`strconv.Quote`): double quotes, backslash escapes for quotes, backslashes and
/// control characters; printable characters, non-ASCII included, stay as they are.
pub(crate) fn go_quote(s: &str) -> String {
    use std::fmt::Write;

    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::UserInfo;

    fn alice() -> UserInfo {
        UserInfo::new("alice")
    }

    #[test]
    fn namespaced_collection() {
        let a = Attributes::resource(alice(), "create", "edgefleet.io", "clusters")
            .with_namespace("retail");
        assert_eq!(
            forbidden_message(&a, ""),
            r#"clusters.edgefleet.io is forbidden: User "alice" cannot create resource "clusters" in API group "edgefleet.io" in the namespace "retail""#
        );
    }

    #[test]
    fn named_object_with_subresource_and_reason() {
        let a = Attributes::resource(alice(), "get", "edgefleet.io", "clusters")
            .with_namespace("retail")
            .with_name("edge-1")
            .with_subresource("proxy");
        let f = Forbidden::new(
            &a,
            r#"RBAC: clusterrole.rbac.authorization.k8s.io "x" not found"#,
        );
        assert_eq!(
            f.message,
            r#"clusters.edgefleet.io "edge-1" is forbidden: User "alice" cannot get resource "clusters/proxy" in API group "edgefleet.io" in the namespace "retail": RBAC: clusterrole.rbac.authorization.k8s.io "x" not found"#
        );
        assert_eq!(
            (f.group.as_str(), f.resource.as_str(), f.name.as_str()),
            ("edgefleet.io", "clusters", "edge-1")
        );
    }

    #[test]
    fn cluster_scope_and_core_group() {
        let a = Attributes::resource(alice(), "list", "edgefleet.io", "environments");
        assert_eq!(
            forbidden_message(&a, ""),
            r#"environments.edgefleet.io is forbidden: User "alice" cannot list resource "environments" in API group "edgefleet.io" at the cluster scope"#
        );
        // The core group has no suffix; impersonation checks look like this.
        let a = Attributes::resource(alice(), "impersonate", "", "users").with_name("bob");
        assert_eq!(
            forbidden_message(&a, ""),
            r#"users "bob" is forbidden: User "alice" cannot impersonate resource "users" in API group "" at the cluster scope"#
        );
    }

    #[test]
    fn non_resource_path() {
        let a = Attributes::non_resource(UserInfo::new("bob"), "get", "/openapi/v3");
        let f = Forbidden::new(&a, "");
        assert_eq!(
            f.message,
            r#"forbidden: User "bob" cannot get path "/openapi/v3""#
        );
        assert_eq!(
            (f.group.as_str(), f.resource.as_str(), f.name.as_str()),
            ("", "", "")
        );
        assert_eq!(
            forbidden_message(&a, "no"),
            r#"forbidden: User "bob" cannot get path "/openapi/v3": no"#
        );
    }

    #[test]
    fn names_are_quoted_like_go() {
        assert_eq!(go_quote(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(go_quote("tab\there\n"), r#""tab\there\n""#);
        assert_eq!(go_quote("\u{1}\u{7f}"), r#""\x01\x7f""#);
        assert_eq!(go_quote("ünïcødé"), "\"ünïcødé\"");
        assert_eq!(go_quote("\u{85}"), r#""\u0085""#);
    }
}
