//! Whether one `PolicyRule` covers a request: kube's `RuleAllows` and its matchers, exactly.
//!
//! A resource request matches when every list matches:
//!
//! - `verbs` contains the verb or `*`;
//! - `apiGroups` contains the group or `*`;
//! - `resources` contains `*`, the resource (`clusters`), the resource with its subresource
//!   (`clusters/proxy`), or `*/<subresource>`; a plain `clusters` does not cover `clusters/proxy`;
//! - `resourceNames` is empty or contains the request's name. A request without a name (list,
//!   watch, create, deletecollection) therefore never matches a rule that lists names.
//!
//! A non-resource request matches `verbs` and `nonResourceURLs`: `*`, the exact path, or a prefix
//! ending in `*` (`/apis/*` covers `/apis/edgefleet.io`, and not `/apis` itself).

use k8s_openapi::api::rbac::v1::PolicyRule;

use crate::auth::Attributes;

const ALL: &str = "*";

fn list(field: &Option<Vec<String>>) -> &[String] {
    field.as_deref().unwrap_or_default()
}

/// kube's `RuleAllows`.
pub fn rule_allows(a: &Attributes, rule: &PolicyRule) -> bool {
    if a.resource_request {
        let combined;
        let resource = if a.subresource.is_empty() {
            a.resource.as_str()
        } else {
            combined = format!("{}/{}", a.resource, a.subresource);
            combined.as_str()
        };
        verb_matches(rule, &a.verb)
            && api_group_matches(rule, &a.api_group)
            && resource_matches(rule, resource, &a.subresource)
            && resource_name_matches(rule, &a.name)
    } else {
        verb_matches(rule, &a.verb) && non_resource_url_matches(rule, &a.path)
    }
}

fn verb_matches(rule: &PolicyRule, verb: &str) -> bool {
    rule.verbs.iter().any(|v| v == ALL || v == verb)
}

fn api_group_matches(rule: &PolicyRule, group: &str) -> bool {
    list(&rule.api_groups)
        .iter()
        .any(|g| g == ALL || g == group)
}

/// `combined` is `resource` or `resource/subresource`.
fn resource_matches(rule: &PolicyRule, combined: &str, subresource: &str) -> bool {
    list(&rule.resources).iter().any(|r| {
        r == ALL
            || r == combined
            || (!subresource.is_empty()
                && r.strip_prefix("*/").is_some_and(|sub| sub == subresource))
    })
}

fn resource_name_matches(rule: &PolicyRule, name: &str) -> bool {
    let names = list(&rule.resource_names);
    names.is_empty() || names.iter().any(|n| n == name)
}

fn non_resource_url_matches(rule: &PolicyRule, path: &str) -> bool {
    list(&rule.non_resource_urls).iter().any(|url| {
        url == ALL
            || url == path
            // kube trims every trailing `*`, so `/apis**` is the same prefix as `/apis*`.
            || (url.ends_with('*') && path.starts_with(url.trim_end_matches('*')))
    })
}

/// Builds `PolicyRule`s the way kube's `rbacv1helpers.NewRule` does, for built-in policy and
/// tests: `rule(["get"]).groups(["edgefleet.io"]).resources(["clusters"]).build()`.
#[derive(Clone, Debug)]
pub struct RuleBuilder(PolicyRule);

/// A rule granting `verbs`; add groups and resources, or URLs.
pub fn rule<I, S>(verbs: I) -> RuleBuilder
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    RuleBuilder(PolicyRule {
        verbs: strings(verbs),
        ..PolicyRule::default()
    })
}

fn strings<I, S>(items: I) -> Vec<String>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    items.into_iter().map(Into::into).collect()
}

impl RuleBuilder {
    pub fn groups<I: IntoIterator<Item = S>, S: Into<String>>(mut self, groups: I) -> Self {
        self.0.api_groups = Some(strings(groups));
        self
    }

    pub fn resources<I: IntoIterator<Item = S>, S: Into<String>>(mut self, resources: I) -> Self {
        self.0.resources = Some(strings(resources));
        self
    }

    pub fn names<I: IntoIterator<Item = S>, S: Into<String>>(mut self, names: I) -> Self {
        self.0.resource_names = Some(strings(names));
        self
    }

    pub fn urls<I: IntoIterator<Item = S>, S: Into<String>>(mut self, urls: I) -> Self {
        self.0.non_resource_urls = Some(strings(urls));
        self
    }

    pub fn build(self) -> PolicyRule {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::UserInfo;

    fn req(verb: &str, group: &str, resource: &str) -> Attributes {
        Attributes::resource(UserInfo::new("u"), verb, group, resource)
    }

    fn path(verb: &str, path: &str) -> Attributes {
        Attributes::non_resource(UserInfo::new("u"), verb, path)
    }

    #[test]
    fn resource_rules() {
        let clusters = rule(["get"])
            .groups(["edgefleet.io"])
            .resources(["clusters"])
            .build();
        assert!(rule_allows(
            &req("get", "edgefleet.io", "clusters"),
            &clusters
        ));
        assert!(!rule_allows(
            &req("list", "edgefleet.io", "clusters"),
            &clusters
        ));
        assert!(!rule_allows(&req("get", "", "clusters"), &clusters));
        assert!(!rule_allows(
            &req("get", "edgefleet.io", "fleets"),
            &clusters
        ));
        // The plain resource does not cover its subresources.
        assert!(!rule_allows(
            &req("get", "edgefleet.io", "clusters").with_subresource("proxy"),
            &clusters
        ));

        let everything = rule(["*"]).groups(["*"]).resources(["*"]).build();
        assert!(rule_allows(
            &req("deletecollection", "x.io", "y")
                .with_subresource("z")
                .with_name("n"),
            &everything
        ));
        // A resource rule never covers a path.
        assert!(!rule_allows(&path("get", "/healthz"), &everything));
    }

    #[test]
    fn subresource_rules() {
        let proxy = rule(["get"])
            .groups(["edgefleet.io"])
            .resources(["clusters/proxy"])
            .build();
        let a = req("get", "edgefleet.io", "clusters")
            .with_namespace("retail")
            .with_name("edge-1");
        assert!(rule_allows(&a.clone().with_subresource("proxy"), &proxy));
        assert!(!rule_allows(&a.clone().with_subresource("status"), &proxy));
        assert!(!rule_allows(&a, &proxy));

        let any_status = rule(["get"]).groups(["*"]).resources(["*/status"]).build();
        assert!(rule_allows(
            &req("get", "g", "fleets").with_subresource("status"),
            &any_status
        ));
        assert!(!rule_allows(&req("get", "g", "fleets"), &any_status));
        assert!(!rule_allows(
            &req("get", "g", "fleets").with_subresource("xstatus"),
            &any_status
        ));
        assert!(!rule_allows(
            &req("get", "g", "fleets").with_subresource("stat"),
            &any_status
        ));
    }

    #[test]
    fn resource_names_match_only_named_requests() {
        let named = rule(["*"])
            .groups(["edgefleet.io"])
            .resources(["clusters"])
            .names(["edge-1"])
            .build();
        let base = req("get", "edgefleet.io", "clusters");
        assert!(rule_allows(&base.clone().with_name("edge-1"), &named));
        assert!(!rule_allows(&base.clone().with_name("edge-2"), &named));
        for verb in ["list", "watch", "create", "deletecollection"] {
            let mut a = base.clone();
            a.verb = verb.to_string();
            assert!(!rule_allows(&a, &named), "{verb} without a name");
        }
    }

    #[test]
    fn non_resource_urls() {
        let r = rule(["get"])
            .urls(["/healthz", "/apis/*", "/version/"])
            .build();
        assert!(rule_allows(&path("get", "/healthz"), &r));
        assert!(!rule_allows(&path("get", "/healthz/ping"), &r));
        assert!(!rule_allows(&path("post", "/healthz"), &r));
        assert!(rule_allows(&path("get", "/apis/edgefleet.io/v1alpha1"), &r));
        assert!(rule_allows(&path("get", "/apis/"), &r));
        assert!(!rule_allows(&path("get", "/apis"), &r));
        assert!(rule_allows(&path("get", "/version/"), &r));
        assert!(!rule_allows(&path("get", "/version"), &r));

        let all = rule(["*"]).urls(["*"]).build();
        assert!(rule_allows(&path("delete", "/anything"), &all));
        // A URL rule never covers a resource.
        assert!(!rule_allows(&req("get", "", "pods"), &all));

        let stars = rule(["get"]).urls(["/metrics**"]).build();
        assert!(rule_allows(&path("get", "/metrics/x"), &stars));
    }
}
