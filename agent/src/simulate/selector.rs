//! Label and field selectors of list requests, in kube-apiserver's string syntax.
//!
//! Labels: comma-separated requirements, each `k=v`, `k==v`, `k!=v`, `k`, `!k`,
//! `k in (a,b)` or `k notin (a,b)`; all must hold. Fields: `metadata.name` with `=`, `==` or
//! `!=` (the simulated objects have no other selectable field); any other field is refused as
//! kube-apiserver refuses unknown field labels.

use std::collections::BTreeMap;

/// A parsed label selector. The empty selector selects everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector(Vec<Requirement>);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

impl LabelSelector {
    /// Parses `selector`; the error says which requirement is malformed.
    pub fn parse(selector: &str) -> Result<Self, String> {
        split_top_level(selector)
            .into_iter()
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(parse_requirement)
            .collect::<Result<_, _>>()
            .map(Self)
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|requirement| match requirement {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            // As in Kubernetes: a missing label satisfies `!=` and `notin`.
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
        })
    }
}

/// Splits at commas outside parentheses (`a in (x,y),b` → `a in (x,y)`, `b`).
fn split_top_level(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0_i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

fn parse_requirement(part: &str) -> Result<Requirement, String> {
    let invalid = || format!("invalid label selector requirement {part:?}");
    let key = |k: &str| {
        let k = k.trim();
        if k.is_empty() || k.contains(char::is_whitespace) {
            Err(invalid())
        } else {
            Ok(k.to_owned())
        }
    };
    if let Some(open) = part.find('(') {
        let values = part[open + 1..].strip_suffix(')').ok_or_else(invalid)?;
        let values: Vec<String> = values.split(',').map(|v| v.trim().to_owned()).collect();
        let head = part[..open].trim_end();
        return if let Some(k) = head.strip_suffix(" notin") {
            Ok(Requirement::NotIn(key(k)?, values))
        } else if let Some(k) = head.strip_suffix(" in") {
            Ok(Requirement::In(key(k)?, values))
        } else {
            Err(invalid())
        };
    }
    if let Some(k) = part.strip_prefix('!') {
        return Ok(Requirement::DoesNotExist(key(k)?));
    }
    if let Some((k, v)) = part.split_once("!=") {
        return Ok(Requirement::NotEquals(key(k)?, v.trim().to_owned()));
    }
    if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
        return Ok(Requirement::Equals(key(k)?, v.trim().to_owned()));
    }
    Ok(Requirement::Exists(key(part)?))
}

/// A field selector on `metadata.name`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector(Vec<(String, bool)>);

impl FieldSelector {
    /// Parses `selector`; fields other than `metadata.name` are refused.
    pub fn parse(selector: &str) -> Result<Self, String> {
        let mut terms = Vec::new();
        for part in selector.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, value, equal) = if let Some((f, v)) = part.split_once("!=") {
                (f, v, false)
            } else if let Some((f, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                (f, v, true)
            } else {
                return Err(format!("invalid field selector requirement {part:?}"));
            };
            if field.trim() != "metadata.name" {
                return Err(format!("field label not supported: {}", field.trim()));
            }
            terms.push((value.trim().to_owned(), equal));
        }
        Ok(Self(terms))
    }

    /// Whether an object named `name` is selected.
    pub fn matches(&self, name: &str) -> bool {
        self.0
            .iter()
            .all(|(value, equal)| (value == name) == *equal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn equality_inequality_existence_and_sets() {
        let gpu = labels(&[("nvidia.com/gpu.product", "NVIDIA-L4"), ("tier", "edge")]);
        let cpu = labels(&[("tier", "core")]);
        let cases = [
            ("", true, true),
            ("nvidia.com/gpu.product=NVIDIA-L4", true, false),
            ("nvidia.com/gpu.product==NVIDIA-L4", true, false),
            ("nvidia.com/gpu.product!=NVIDIA-L4", false, true),
            ("nvidia.com/gpu.product", true, false),
            ("!nvidia.com/gpu.product", false, true),
            ("tier in (edge, core)", true, true),
            ("tier notin (edge)", false, true),
            ("tier=edge,nvidia.com/gpu.product", true, false),
            ("tier in (edge,core),!nvidia.com/gpu.product", false, true),
        ];
        for (selector, on_gpu, on_cpu) in cases {
            let parsed = LabelSelector::parse(selector).unwrap();
            assert_eq!(parsed.matches(&gpu), on_gpu, "{selector:?} on the GPU node");
            assert_eq!(parsed.matches(&cpu), on_cpu, "{selector:?} on the CPU node");
        }
    }

    #[test]
    fn malformed_label_selectors_are_refused() {
        for bad in [
            "tier in edge)",
            "tier in (edge",
            "a b=c",
            "=x",
            "tier within (a)",
        ] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn field_selectors_know_only_the_name() {
        let one = FieldSelector::parse("metadata.name=edge-1-node-0").unwrap();
        assert!(one.matches("edge-1-node-0"));
        assert!(!one.matches("edge-1-node-1"));
        let not_one = FieldSelector::parse("metadata.name!=edge-1-node-0").unwrap();
        assert!(!not_one.matches("edge-1-node-0"));
        assert!(not_one.matches("edge-1-node-1"));
        let err = FieldSelector::parse("spec.unschedulable=true").unwrap_err();
        assert_eq!(err, "field label not supported: spec.unschedulable");
    }
}
