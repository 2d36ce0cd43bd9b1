//! Validation of `metadata`, shared by every kind.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::names::{is_dns1123_label, is_dns1123_subdomain, is_label_value, is_qualified_name};
use super::{ErrorList, FieldError, Path};

/// kube-apiserver's cap on the total size of all annotations of one object.
const ANNOTATIONS_MAX_BYTES: usize = 256 * 1024;

/// How a kind's metadata is checked.
#[derive(Clone, Copy, Debug)]
pub struct MetaRules {
    pub namespaced: bool,
    /// Names that end up in DNS names, certificate subjects or namespaces must be labels.
    pub name_is_label: bool,
}

/// Checks name, namespace, labels, annotations and finalizers.
pub fn validate_object_meta(meta: &ObjectMeta, rules: MetaRules) -> ErrorList {
    let path = Path::new("metadata");
    let mut errs = ErrorList::default();

    match meta.name.as_deref() {
        None | Some("") => errs.push(FieldError::required(
            &path.child("name"),
            "name or generateName is required",
        )),
        Some(name) => {
            let problems = if rules.name_is_label {
                is_dns1123_label(name)
            } else {
                is_dns1123_subdomain(name)
            };
            for p in problems {
                errs.push(FieldError::invalid(&path.child("name"), name, p));
            }
        }
    }

    match (rules.namespaced, meta.namespace.as_deref()) {
        (true, None | Some("")) => {
            errs.push(FieldError::required(&path.child("namespace"), ""));
        }
        (true, Some(ns)) => {
            for p in is_dns1123_label(ns) {
                errs.push(FieldError::invalid(&path.child("namespace"), ns, p));
            }
        }
        (false, Some(ns)) if !ns.is_empty() => {
            errs.push(FieldError::forbidden(
                &path.child("namespace"),
                "not allowed on this type",
            ));
        }
        (false, _) => {}
    }

    if let Some(labels) = &meta.labels {
        errs.extend(validate_labels(labels, &path.child("labels")));
    }
    if let Some(annotations) = &meta.annotations {
        let annotations_path = path.child("annotations");
        let mut total = 0;
        for (k, v) in annotations {
            total += k.len() + v.len();
            for p in is_qualified_name(&k.to_lowercase()) {
                errs.push(FieldError::invalid(&annotations_path, k.as_str(), p));
            }
        }
        if total > ANNOTATIONS_MAX_BYTES {
            errs.push(FieldError::too_long(
                &annotations_path,
                ANNOTATIONS_MAX_BYTES,
            ));
        }
    }
    if let Some(finalizers) = &meta.finalizers {
        let finalizers_path = path.child("finalizers");
        for (i, f) in finalizers.iter().enumerate() {
            for p in is_qualified_name(f) {
                errs.push(FieldError::invalid(
                    &finalizers_path.index(i),
                    f.as_str(),
                    p,
                ));
            }
        }
    }
    errs
}

/// Label keys are qualified names, values label values.
pub fn validate_labels(labels: &BTreeMap<String, String>, path: &Path) -> ErrorList {
    let mut errs = ErrorList::default();
    for (k, v) in labels {
        for p in is_qualified_name(k) {
            errs.push(FieldError::invalid(path, k.as_str(), p));
        }
        for p in is_label_value(v) {
            errs.push(FieldError::invalid(&path.key(k), v.as_str(), p));
        }
    }
    errs
}
