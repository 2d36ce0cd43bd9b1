//! Validators for value syntaxes that recur across kinds.

use std::collections::HashSet;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{ErrorList, FieldError, Path};

/// What an int-or-percent field accepts.
#[derive(Clone, Copy, Debug)]
pub struct IntOrPercentRules {
    /// `0` and `0%` are refused (e.g. `maxUnavailable: 0` would stall every rollout).
    pub positive: bool,
}

/// Parses `"25%"` into 25.
pub fn parse_percent(s: &str) -> Option<i32> {
    let digits = s.strip_suffix('%')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// An integer ≥ 0, or a percentage `"0%"`–`"100%"` (as Deployments' `maxUnavailable`).
pub fn validate_int_or_percent(
    value: &IntOrString,
    path: &Path,
    rules: IntOrPercentRules,
) -> ErrorList {
    let mut errs = ErrorList::default();
    match value {
        IntOrString::Int(n) => {
            if *n < 0 {
                errs.push(FieldError::invalid(
                    path,
                    *n,
                    "must be greater than or equal to 0",
                ));
            } else if rules.positive && *n == 0 {
                errs.push(FieldError::invalid(path, *n, "must be greater than 0"));
            }
        }
        IntOrString::String(s) => match parse_percent(s) {
            None => errs.push(FieldError::invalid(
                path,
                s.as_str(),
                "a valid percent string must be a numeric string followed by an ending '%' (e.g. \
                 '1%',  or '93%')",
            )),
            Some(p) if p > 100 => errs.push(FieldError::invalid(
                path,
                s.as_str(),
                "must not be greater than 100%",
            )),
            Some(0) if rules.positive => errs.push(FieldError::invalid(
                path,
                s.as_str(),
                "must be greater than 0%",
            )),
            Some(_) => {}
        },
    }
    errs
}

/// `v<major>.<minor>.<patch>` with an optional `-pre` and `+build` (`v1.31.4+k3s1`).
pub fn validate_kubernetes_version(version: &str, path: &Path) -> ErrorList {
    let mut errs = ErrorList::default();
    if !is_kubernetes_version(version) {
        errs.push(FieldError::invalid(
            path,
            version,
            "must be a Kubernetes version such as v1.31.4 (optionally with a -pre-release or \
             +build suffix, e.g. v1.31.4+k3s1)",
        ));
    }
    errs
}

fn is_kubernetes_version(v: &str) -> bool {
    let Some(rest) = v.strip_prefix('v') else {
        return false;
    };
    let (core, suffix) = match rest.find(['-', '+']) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, ""),
    };
    let parts: Vec<&str> = core.split('.').collect();
    let numeric = |p: &&str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    if parts.len() != 3 || !parts.iter().all(numeric) {
        return false;
    }
    let suffix_ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+');
    rest.len() == core.len() || (!suffix.is_empty() && suffix.chars().all(suffix_ok))
}

pub fn validate_non_negative(value: i64, path: &Path) -> ErrorList {
    let mut errs = ErrorList::default();
    if value < 0 {
        errs.push(FieldError::invalid(
            path,
            value,
            "must be greater than or equal to 0",
        ));
    }
    errs
}

/// Each name appears once; reports `path[i].<field>` (or `path[i]` when `field` is empty) of
/// every repeated occurrence.
pub fn validate_unique_names<'a>(
    names: impl IntoIterator<Item = &'a str>,
    path: &Path,
    field: &str,
) -> ErrorList {
    let mut seen = HashSet::new();
    let mut errs = ErrorList::default();
    for (i, name) in names.into_iter().enumerate() {
        if !seen.insert(name) {
            let at = if field.is_empty() {
                path.index(i)
            } else {
                path.index(i).child(field)
            };
            errs.push(FieldError::duplicate(&at, name));
        }
    }
    errs
}
