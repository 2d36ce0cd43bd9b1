//! Reading a policy from YAML (`--authorization-rbac-file`, our own flag).
//!
//! The file holds any number of YAML documents, each a Role, ClusterRole, RoleBinding or
//! ClusterRoleBinding of `rbac.authorization.k8s.io/v1`, or a `List` (`kubectl get -o yaml`
//! output) or typed list of them: what `kubectl apply -f` would accept for these kinds. Anything
//! else is refused with the document (and list item) named, as is an object defined twice.
//! The objects are added on top of [`Policy::with_defaults`], so a file may override a built-in
//! role by defining one of the same name.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_yaml_ng::Value;

use super::validation::InvalidObject;
use super::{Policy, RbacObject, RBAC_API_VERSION};

/// A policy file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("reading RBAC policy file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `location` is `document 2` or `document 2, items[3]` (documents count from 1).
    #[error("{file}: {location}")]
    Document {
        file: String,
        location: String,
        #[source]
        problem: DocumentProblem,
    },
}

/// What is wrong with one document (or list item).
#[derive(Debug, thiserror::Error)]
pub enum DocumentProblem {
    #[error("invalid YAML")]
    Yaml(#[source] serde_yaml_ng::Error),
    #[error("expected an object with apiVersion and kind")]
    NotAnObject,
    #[error(
        "unsupported kind {kind:?} (apiVersion {api_version:?}): an RBAC policy file holds \
         Role, ClusterRole, RoleBinding and ClusterRoleBinding objects of \
         rbac.authorization.k8s.io/v1, or Lists of them"
    )]
    UnsupportedKind { api_version: String, kind: String },
    #[error("decoding {kind}")]
    Decode {
        kind: &'static str,
        #[source]
        source: serde_yaml_ng::Error,
    },
    #[error(transparent)]
    Invalid(#[from] InvalidObject),
    #[error("{object} is defined twice (first in {first})")]
    Duplicate { object: String, first: String },
}

/// Parses the objects of a policy file, validated, in file order; `file` names it in errors.
pub fn parse_policy_yaml(text: &str, file: &str) -> Result<Vec<RbacObject>, PolicyError> {
    let error = |location: String, problem| PolicyError::Document {
        file: file.to_string(),
        location,
        problem,
    };
    let mut found = Vec::new();
    for (i, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let location = format!("document {}", i + 1);
        let value = Value::deserialize(document)
            .map_err(|e| error(location.clone(), DocumentProblem::Yaml(e)))?;
        // `---` separators with nothing between them.
        if value.is_null() {
            continue;
        }
        collect(value, location, &mut found)
            .map_err(|(location, problem)| error(location, problem))?;
    }

    let mut first_seen: HashMap<(&'static str, (String, String)), String> = HashMap::new();
    let mut objects = Vec::with_capacity(found.len());
    for (location, object) in found {
        object
            .validate()
            .map_err(|e| error(location.clone(), e.into()))?;
        if let Some(first) = first_seen.insert((object.kind(), object.key()), location.clone()) {
            let object = object.describe();
            return Err(error(
                location,
                DocumentProblem::Duplicate { object, first },
            ));
        }
        objects.push(object);
    }
    Ok(objects)
}

type Located<T> = Result<T, (String, DocumentProblem)>;

fn collect(value: Value, location: String, out: &mut Vec<(String, RbacObject)>) -> Located<()> {
    let field = |name: &str| {
        value
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    if !value.is_mapping() {
        return Err((location, DocumentProblem::NotAnObject));
    }
    let (api_version, kind) = (field("apiVersion"), field("kind"));
    let object = match (api_version.as_str(), kind.as_str()) {
        ("v1", "List")
        | (
            RBAC_API_VERSION,
            "RoleList" | "ClusterRoleList" | "RoleBindingList" | "ClusterRoleBindingList",
        ) => {
            let items = match value.get("items") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Sequence(items)) => items.clone(),
                Some(_) => {
                    return Err((format!("{location}, items"), DocumentProblem::NotAnObject))
                }
            };
            for (j, item) in items.into_iter().enumerate() {
                collect(item, format!("{location}, items[{j}]"), out)?;
            }
            return Ok(());
        }
        (RBAC_API_VERSION, "Role") => RbacObject::Role(decode(value, "Role", &location)?),
        (RBAC_API_VERSION, "ClusterRole") => {
            RbacObject::ClusterRole(decode(value, "ClusterRole", &location)?)
        }
        (RBAC_API_VERSION, "RoleBinding") => {
            RbacObject::RoleBinding(decode(value, "RoleBinding", &location)?)
        }
        (RBAC_API_VERSION, "ClusterRoleBinding") => {
            RbacObject::ClusterRoleBinding(decode(value, "ClusterRoleBinding", &location)?)
        }
        _ => {
            return Err((
                location,
                DocumentProblem::UnsupportedKind { api_version, kind },
            ));
        }
    };
    out.push((location, object));
    Ok(())
}

fn decode<T: DeserializeOwned>(value: Value, kind: &'static str, location: &str) -> Located<T> {
    serde_yaml_ng::from_value(value).map_err(|source| {
        (
            location.to_string(),
            DocumentProblem::Decode { kind, source },
        )
    })
}

impl Policy {
    /// The defaults plus the objects of a policy file's text.
    pub fn from_yaml(text: &str, file: &str) -> Result<Policy, PolicyError> {
        let mut policy = Policy::with_defaults();
        for object in parse_policy_yaml(text, file)? {
            policy.insert(object).expect("validated while parsing");
        }
        Ok(policy)
    }

    /// The defaults plus the objects of the policy file at `path`.
    pub fn load_file(path: &Path) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.to_owned(),
            source,
        })?;
        Policy::from_yaml(&text, &path.display().to_string())
    }
}
