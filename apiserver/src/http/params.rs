//! Query parameters of resource requests, parsed and checked.

use std::collections::HashMap;
use std::time::Duration;

use edgefleet_apimachinery::query;
use edgefleet_apimachinery::selectors::{FieldSelectorExpr, LabelSelectorExpr};
use edgefleet_apimachinery::table::IncludeObject;

use crate::errors::ApiError;
use crate::registry::object::SELECTABLE_FIELDS;
use crate::registry::{FieldValidation, Filter, ResourceVersionMatch};

/// The decoded query string. The first value of a repeated key is the one read (kube's parameter
/// codec, [`query`]), except `dryRun`, whose values are all read.
#[derive(Debug, Default)]
pub struct Query {
    values: HashMap<String, String>,
    dry_run: Vec<String>,
}

impl Query {
    pub fn parse(query: Option<&str>) -> Self {
        let mut q = Query::default();
        for (k, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            if k == "dryRun" {
                q.dry_run.push(v.to_string());
            }
            q.values
                .entry(k.into_owned())
                .or_insert_with(|| v.into_owned());
        }
        q
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    /// A boolean parameter, as kube's parameter codec reads it ([`query::bool_value`]): absent,
    /// `0` and `false` (any case) are false, anything else is true. kube rejects no boolean
    /// value (`Convert_Slice_string_To_bool` has no error case), so neither do we: a boolean
    /// is never a 400.
    pub fn flag(&self, key: &str) -> bool {
        query::bool_value(self.get(key))
    }

    pub fn filter(&self) -> Result<Filter, ApiError> {
        let labels = LabelSelectorExpr::parse(self.get("labelSelector").unwrap_or_default())
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        let fields = FieldSelectorExpr::parse(
            self.get("fieldSelector").unwrap_or_default(),
            SELECTABLE_FIELDS,
        )
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        Ok(Filter { labels, fields })
    }

    pub fn limit(&self) -> Result<usize, ApiError> {
        match self.get("limit") {
            None | Some("") => Ok(0),
            Some(v) => v
                .parse::<i64>()
                .map(|n| n.max(0) as usize)
                .map_err(|_| ApiError::BadRequest(format!("invalid value for limit: {v:?}"))),
        }
    }

    pub fn resource_version_match(&self) -> Result<Option<ResourceVersionMatch>, ApiError> {
        match self.get("resourceVersionMatch") {
            None | Some("") => Ok(None),
            Some("NotOlderThan") => Ok(Some(ResourceVersionMatch::NotOlderThan)),
            Some("Exact") => Ok(Some(ResourceVersionMatch::Exact)),
            Some(other) => Err(ApiError::BadRequest(format!(
                "resourceVersionMatch: Unsupported value: {other:?}: supported values: \"Exact\", \"NotOlderThan\""
            ))),
        }
    }

    /// `dryRun=All` (any other value is refused, as kube does).
    pub fn dry_run(&self) -> Result<bool, ApiError> {
        match self.dry_run.as_slice() {
            [] => Ok(false),
            values if values.iter().all(|v| v == "All") => Ok(true),
            values => Err(ApiError::BadRequest(format!(
                "dryRun: Unsupported value: {values:?}: supported values: \"All\""
            ))),
        }
    }

    pub fn field_validation(&self) -> Result<FieldValidation, ApiError> {
        match self.get("fieldValidation") {
            None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some(other) => Err(ApiError::BadRequest(format!(
                "fieldValidation: Unsupported value: {other:?}: supported values: \"Ignore\", \"Strict\", \"Warn\""
            ))),
        }
    }

    pub fn include_object(&self) -> Result<IncludeObject, ApiError> {
        IncludeObject::from_query(self.get("includeObject"))
            .map_err(|e| ApiError::BadRequest(e.to_string()))
    }

    /// `timeoutSeconds` of a watch.
    pub fn timeout(&self) -> Result<Option<Duration>, ApiError> {
        match self.get("timeoutSeconds") {
            None | Some("") => Ok(None),
            Some(v) => v
                .parse::<u64>()
                .map(|s| Some(Duration::from_secs(s)))
                .map_err(|_| {
                    ApiError::BadRequest(format!("invalid value for timeoutSeconds: {v:?}"))
                }),
        }
    }

    /// The field manager: `fieldManager`, else the user agent's product (as kube derives it).
    pub fn field_manager(&self, user_agent: Option<&str>) -> Result<String, ApiError> {
        if let Some(m) = self.get("fieldManager").filter(|m| !m.is_empty()) {
            if m.len() > 128 || m.chars().any(|c| c.is_control()) {
                return Err(ApiError::BadRequest(
                    "fieldManager: Invalid value: must be at most 128 printable characters".into(),
                ));
            }
            return Ok(m.to_string());
        }
        let product = user_agent
            .unwrap_or("unknown")
            .split('/')
            .next()
            .unwrap_or("unknown");
        Ok(product.chars().take(128).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kubectl_queries() {
        let q = Query::parse(Some("labelSelector=gpu%3Da100%2Cregion+in+%28eu%29&limit=2&fieldValidation=Strict&dryRun=All"));
        assert_eq!(q.limit().unwrap(), 2);
        assert!(q.dry_run().unwrap());
        assert_eq!(q.field_validation().unwrap(), FieldValidation::Strict);
        let f = q.filter().unwrap();
        let labels = [
            ("gpu".to_string(), "a100".to_string()),
            ("region".to_string(), "eu".to_string()),
        ]
        .into();
        assert!(f.labels.matches(&labels));
    }

    #[test]
    fn rejects_bad_values() {
        for q in [
            "limit=x",
            "fieldValidation=Loose",
            "dryRun=Some",
            "labelSelector=a+in+b",
            "fieldSelector=spec.x%3D1",
            "includeObject=object",
        ] {
            let query = Query::parse(Some(q));
            let failed = query.limit().is_err()
                || query.field_validation().is_err()
                || query.dry_run().is_err()
                || query.filter().is_err()
                || query.include_object().is_err();
            assert!(failed, "{q} should be refused");
        }
    }

    #[test]
    fn booleans_follow_kube_s_parameter_codec_and_are_never_refused() {
        for (q, want) in [
            ("watch=maybe", true),
            ("watch=yes", true),
            ("watch=1", true),
            ("watch=", true),
            ("watch", true),
            ("watch=false", false),
            ("watch=FALSE", false),
            ("watch=0", false),
            ("", false),
            // The first value of a repeated key is the one read, for every parameter.
            ("watch=true&watch=false", true),
        ] {
            assert_eq!(Query::parse(Some(q)).flag("watch"), want, "{q}");
        }
        assert_eq!(Query::parse(Some("limit=2&limit=3")).limit().unwrap(), 2);
    }

    #[test]
    fn field_manager_defaults_to_the_user_agent_product() {
        let q = Query::parse(None);
        assert_eq!(
            q.field_manager(Some("kubectl/v1.32.4 (linux/amd64) kubernetes/abc"))
                .unwrap(),
            "kubectl"
        );
        let q = Query::parse(Some("fieldManager=ops"));
        assert_eq!(q.field_manager(Some("kubectl/v1.32.4")).unwrap(), "ops");
    }
}
