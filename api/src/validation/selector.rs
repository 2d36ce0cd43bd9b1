//! Validation of `metav1.LabelSelector` fields in specs.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::names::{is_label_value, is_qualified_name};
use super::{validate_labels, ErrorList, FieldError, Path};

const OPERATORS: &[&str] = &["In", "NotIn", "Exists", "DoesNotExist"];

/// Keys and values well-formed; `In`/`NotIn` need values, `Exists`/`DoesNotExist` forbid them.
pub fn validate_label_selector(selector: &LabelSelector, path: &Path) -> ErrorList {
    let mut errs = ErrorList::default();
    if let Some(labels) = &selector.match_labels {
        errs.extend(validate_labels(labels, &path.child("matchLabels")));
    }
    for (i, req) in selector.match_expressions.iter().flatten().enumerate() {
        let req_path = path.child("matchExpressions").index(i);
        for p in is_qualified_name(&req.key) {
            errs.push(FieldError::invalid(
                &req_path.child("key"),
                req.key.as_str(),
                p,
            ));
        }
        let values = req.values.as_deref().unwrap_or_default();
        match req.operator.as_str() {
            "In" | "NotIn" => {
                if values.is_empty() {
                    errs.push(FieldError::required(
                        &req_path.child("values"),
                        "must be specified when `operator` is 'In' or 'NotIn'",
                    ));
                }
            }
            "Exists" | "DoesNotExist" => {
                if !values.is_empty() {
                    errs.push(FieldError::forbidden(
                        &req_path.child("values"),
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    ));
                }
            }
            other => errs.push(FieldError::not_supported(
                &req_path.child("operator"),
                other,
                OPERATORS,
            )),
        }
        for (j, v) in values.iter().enumerate() {
            for p in is_label_value(v) {
                errs.push(FieldError::invalid(
                    &req_path.child("values").index(j),
                    v.as_str(),
                    p,
                ));
            }
        }
    }
    errs
}
