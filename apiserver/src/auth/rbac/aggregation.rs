//! ClusterRole aggregation, done once when a policy is loaded.
//!
//! In kube a controller keeps every ClusterRole with an `aggregationRule` equal to the rules of
//! all other ClusterRoles matched by its label selectors (selector by selector, roles by name,
//! duplicates dropped); the role's own `rules` are overwritten. Chains settle over successive
//! runs: `view` carries `aggregate-to-edit`, `edit` carries `aggregate-to-admin`, so a role
//! labelled `aggregate-to-view` reaches all three. We compute the same fixed point directly:
//! aggregated roles start empty and are recomputed until nothing changes. Starting empty makes
//! every pass only add rules, so it ends even with selector cycles.

use std::collections::BTreeMap;

use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// The effective rules of every ClusterRole, by name.
pub(super) fn aggregate(
    cluster_roles: &BTreeMap<String, ClusterRole>,
) -> BTreeMap<String, Vec<PolicyRule>> {
    let mut effective: BTreeMap<String, Vec<PolicyRule>> = cluster_roles
        .iter()
        .map(|(name, role)| {
            let rules = if role.aggregation_rule.is_some() {
                Vec::new()
            } else {
                role.rules.clone().unwrap_or_default()
            };
            (name.clone(), rules)
        })
        .collect();

    // Each pass that changes something adds at least one rule; the bound only guards the loop.
    for _ in 0..=cluster_roles.len() {
        let mut changed = false;
        for (name, role) in cluster_roles {
            let Some(aggregation) = &role.aggregation_rule else {
                continue;
            };
            let mut rules: Vec<PolicyRule> = Vec::new();
            for selector in aggregation.cluster_role_selectors.iter().flatten() {
                let matching = cluster_roles.iter().filter(|(other, candidate)| {
                    *other != name
                        && selector_matches(
                            selector,
                            candidate
                                .metadata
                                .labels
                                .as_ref()
                                .unwrap_or(&BTreeMap::new()),
                        )
                });
                for (other, _) in matching {
                    for rule in &effective[other] {
                        if !rules.iter().any(|r| same_rule(r, rule)) {
                            rules.push(rule.clone());
                        }
                    }
                }
            }
            if effective[name] != rules {
                effective.insert(name.clone(), rules);
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    effective
}

/// kube compares rules with `equality.Semantic`, where an absent list equals an empty one.
fn same_rule(a: &PolicyRule, b: &PolicyRule) -> bool {
    fn list(l: &Option<Vec<String>>) -> &[String] {
        l.as_deref().unwrap_or_default()
    }
    a.verbs == b.verbs
        && list(&a.api_groups) == list(&b.api_groups)
        && list(&a.resources) == list(&b.resources)
        && list(&a.resource_names) == list(&b.resource_names)
        && list(&a.non_resource_urls) == list(&b.non_resource_urls)
}

/// kube's `LabelSelectorAsSelector(...).Matches`: every `matchLabels` pair and every expression
/// must hold; an empty selector matches everything. Operators were validated on insert.
pub(super) fn selector_matches(
    selector: &LabelSelector,
    labels: &BTreeMap<String, String>,
) -> bool {
    let match_labels = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(key, value)| labels.get(key) == Some(value));
    match_labels
        && selector
            .match_expressions
            .iter()
            .flatten()
            .all(|requirement| {
                let values = requirement.values.as_deref().unwrap_or_default();
                let value = labels.get(&requirement.key);
                match requirement.operator.as_str() {
                    "In" => value.is_some_and(|v| values.contains(v)),
                    "NotIn" => value.is_none_or(|v| !values.contains(v)),
                    "Exists" => value.is_some(),
                    "DoesNotExist" => value.is_none(),
                    _ => false,
                }
            })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::rbac::rule;
    use k8s_openapi::api::rbac::v1::AggregationRule;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelectorRequirement, ObjectMeta};

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expr(key: &str, operator: &str, values: &[&str]) -> LabelSelector {
        LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: key.into(),
                operator: operator.into(),
                values: Some(values.iter().map(|v| v.to_string()).collect()),
            }]),
            ..LabelSelector::default()
        }
    }

    #[test]
    fn selectors() {
        let l = labels(&[("tier", "gold"), ("region", "eu")]);
        let by_labels = LabelSelector {
            match_labels: Some(labels(&[("tier", "gold")])),
            ..LabelSelector::default()
        };
        assert!(selector_matches(&by_labels, &l));
        assert!(!selector_matches(
            &by_labels,
            &labels(&[("tier", "silver")])
        ));
        assert!(selector_matches(
            &LabelSelector::default(),
            &BTreeMap::new()
        ));
        assert!(selector_matches(&expr("region", "In", &["eu", "us"]), &l));
        assert!(!selector_matches(&expr("region", "In", &["us"]), &l));
        assert!(selector_matches(&expr("region", "NotIn", &["us"]), &l));
        assert!(selector_matches(&expr("absent", "NotIn", &["us"]), &l));
        assert!(selector_matches(&expr("tier", "Exists", &[]), &l));
        assert!(!selector_matches(&expr("tier", "DoesNotExist", &[]), &l));
        assert!(!selector_matches(&expr("tier", "Bogus", &[]), &l));
    }

    fn role(
        name: &str,
        label: &[(&str, &str)],
        rules: Vec<PolicyRule>,
        selects: Option<&str>,
    ) -> (String, ClusterRole) {
        let role = ClusterRole {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(labels(label)),
                ..ObjectMeta::default()
            },
            rules: Some(rules),
            aggregation_rule: selects.map(|key| AggregationRule {
                cluster_role_selectors: Some(vec![LabelSelector {
                    match_labels: Some(labels(&[(key, "true")])),
                    ..LabelSelector::default()
                }]),
            }),
        };
        (name.to_string(), role)
    }

    #[test]
    fn chains_settle_and_duplicates_and_own_rules_drop() {
        let get = rule(["get"]).groups(["g"]).resources(["a"]).build();
        let mut get_without_names = get.clone();
        get_without_names.resource_names = Some(vec![]);
        let put = rule(["update"]).groups(["g"]).resources(["a"]).build();
        let roles: BTreeMap<_, _> = [
            // Named so that name order is the reverse of the chain order.
            role("a-admin", &[], vec![], Some("to-admin")),
            role(
                "b-edit",
                &[("to-admin", "true")],
                vec![put.clone()],
                Some("to-edit"),
            ),
            role("c-view", &[("to-edit", "true")], vec![], Some("to-view")),
            role("d-reader", &[("to-view", "true")], vec![get.clone()], None),
            role(
                "e-reader-again",
                &[("to-view", "true")],
                vec![get_without_names],
                None,
            ),
            role("f-writer", &[("to-edit", "true")], vec![put.clone()], None),
        ]
        .into_iter()
        .collect();
        let effective = aggregate(&roles);
        assert_eq!(effective["c-view"], std::slice::from_ref(&get));
        // b-edit's own rule is replaced, then comes back through f-writer.
        assert_eq!(effective["b-edit"], [get.clone(), put.clone()]);
        assert_eq!(effective["a-admin"], [get.clone(), put.clone()]);
        assert_eq!(effective["d-reader"], [get]);
    }

    #[test]
    fn cycles_terminate() {
        let r1 = rule(["get"]).groups(["g"]).resources(["one"]).build();
        let r2 = rule(["get"]).groups(["g"]).resources(["two"]).build();
        let roles: BTreeMap<_, _> = [
            role("x", &[("to-y", "true")], vec![r1.clone()], Some("to-x")),
            role("y", &[("to-x", "true")], vec![r2.clone()], Some("to-y")),
        ]
        .into_iter()
        .collect();
        let effective = aggregate(&roles);
        assert!(effective["x"].is_empty() && effective["y"].is_empty());
    }
}
