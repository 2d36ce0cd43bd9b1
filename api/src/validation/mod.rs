//! Field errors with paths, as Kubernetes reports them (`k8s.io/apimachinery/pkg/util/validation/field`).
//!
//! A validator walks an object and appends [`FieldError`]s to an [`ErrorList`]; each error names
//! the field by its path (`spec.strategy.maxUnavailable`, `spec.nodePools[1].name`,
//! `metadata.labels[gpu]`). The apiserver turns a non-empty list into a `422 Invalid` Status whose
//! `details.causes` carry one entry per error.

mod meta;
mod names;
mod path;
mod selector;
mod values;

#[cfg(test)]
mod tests;

pub use meta::{validate_labels, validate_object_meta, MetaRules};
pub use names::{is_dns1123_label, is_dns1123_subdomain, is_label_value, is_qualified_name};
pub use path::Path;
pub use selector::validate_label_selector;
pub use values::{
    validate_int_or_percent, validate_kubernetes_version, validate_non_negative,
    validate_unique_names, IntOrPercentRules,
};

use std::fmt;

use serde_json::Value;

/// What is wrong with a field; the `reason` of a `metav1.StatusCause`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorType {
    Required,
    Invalid,
    NotSupported,
    Duplicate,
    Forbidden,
    TooLong,
    TooMany,
}

impl ErrorType {
    /// The `StatusCause.reason` Kubernetes uses for this type.
    pub fn reason(self) -> &'static str {
        match self {
            ErrorType::Required => "FieldValueRequired",
            ErrorType::Invalid => "FieldValueInvalid",
            ErrorType::NotSupported => "FieldValueNotSupported",
            ErrorType::Duplicate => "FieldValueDuplicate",
            ErrorType::Forbidden => "FieldValueForbidden",
            ErrorType::TooLong => "FieldValueTooLong",
            ErrorType::TooMany => "FieldValueTooMany",
        }
    }
}

/// One invalid field.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldError {
    pub kind: ErrorType,
    /// `spec.nodePools[0].replicas`
    pub field: String,
    /// The offending value, when showing it helps.
    pub value: Option<Value>,
    pub detail: String,
}

impl FieldError {
    pub fn required(path: &Path, detail: impl Into<String>) -> Self {
        Self::new(ErrorType::Required, path, None, detail)
    }

    pub fn invalid(path: &Path, value: impl Into<Value>, detail: impl Into<String>) -> Self {
        Self::new(ErrorType::Invalid, path, Some(value.into()), detail)
    }

    pub fn not_supported(path: &Path, value: impl Into<Value>, supported: &[&str]) -> Self {
        let list = supported
            .iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        Self::new(
            ErrorType::NotSupported,
            path,
            Some(value.into()),
            format!("supported values: {list}"),
        )
    }

    pub fn duplicate(path: &Path, value: impl Into<Value>) -> Self {
        Self::new(ErrorType::Duplicate, path, Some(value.into()), "")
    }

    pub fn forbidden(path: &Path, detail: impl Into<String>) -> Self {
        Self::new(ErrorType::Forbidden, path, None, detail)
    }

    pub fn too_long(path: &Path, max: usize) -> Self {
        Self::new(
            ErrorType::TooLong,
            path,
            None,
            format!("may not be more than {max} bytes"),
        )
    }

    pub fn too_many(path: &Path, actual: usize, max: usize) -> Self {
        Self::new(
            ErrorType::TooMany,
            path,
            Some(Value::from(actual)),
            format!("must have at most {max} items"),
        )
    }

    fn new(kind: ErrorType, path: &Path, value: Option<Value>, detail: impl Into<String>) -> Self {
        Self {
            kind,
            field: path.to_string(),
            value,
            detail: detail.into(),
        }
    }

    /// The message without the field name, as `field.Error.ErrorBody` renders it.
    pub fn body(&self) -> String {
        let with_detail = |head: String| {
            if self.detail.is_empty() {
                head
            } else {
                format!("{head}: {}", self.detail)
            }
        };
        let shown = self.value.as_ref().map(render_value).unwrap_or_default();
        match self.kind {
            ErrorType::Required => with_detail("Required value".into()),
            ErrorType::Forbidden => with_detail("Forbidden".into()),
            ErrorType::TooLong => with_detail("Too long".into()),
            ErrorType::Invalid => with_detail(format!("Invalid value: {shown}")),
            ErrorType::NotSupported => with_detail(format!("Unsupported value: {shown}")),
            ErrorType::Duplicate => with_detail(format!("Duplicate value: {shown}")),
            ErrorType::TooMany => with_detail(format!("Too many: {shown}")),
        }
    }
}

/// Renders a value the way Go's `%#v` does for the common JSON shapes.
fn render_value(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        Value::Null => "null".into(),
        other => other.to_string(),
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.body())
    }
}

/// The errors found in one object, in the order found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ErrorList(pub Vec<FieldError>);

impl ErrorList {
    pub fn push(&mut self, error: FieldError) {
        self.0.push(error);
    }

    pub fn extend(&mut self, other: ErrorList) {
        self.0.extend(other.0);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &FieldError> {
        self.0.iter()
    }
}

impl fmt::Display for ErrorList {
    /// `[a: ..., b: ...]` for several errors, the bare error for one (as aggregate errors print).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_slice() {
            [] => Ok(()),
            [one] => write!(f, "{one}"),
            many => {
                let parts: Vec<String> = many.iter().map(ToString::to_string).collect();
                write!(f, "[{}]", parts.join(", "))
            }
        }
    }
}

impl FromIterator<FieldError> for ErrorList {
    fn from_iter<I: IntoIterator<Item = FieldError>>(iter: I) -> Self {
        ErrorList(iter.into_iter().collect())
    }
}
