//! Query parameters of resource requests, parsed and checked.

use std::collections::HashMap;
use std::time::Duration;

use edgefleet_apimachinery::query;
use edgefleet_apimachinery::selectors::{FieldSelectorExpr, LabelSelectorExpr};
use edgefleet_apimachinery::table::IncludeObject;

use crate::errors::ApiError;
use crate::registry::object::SELECTABLE_FIELDS;
use edgefleet_api::validation::{ErrorList, FieldError, Path};

use crate::registry::{
    invalid_delete_options, DeleteOptions, FieldValidation, Filter, Preconditions,
    ResourceVersionMatch,
};

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

    /// `timeoutSeconds` of a list or watch (kube's `ListOptions`).
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

    /// `timeout` of a request that is not long-running: a Go duration (`30s`, `1m30s`,
    /// `500ms`; kube's request deadline filter parses it so). A value it cannot read is a `400`
    /// in kube's words. The hub does not cut requests short by it.
    pub fn request_timeout(&self) -> Result<Option<jiff::SignedDuration>, ApiError> {
        match self.get("timeout") {
            None | Some("") => Ok(None),
            Some("0") => Ok(Some(jiff::SignedDuration::ZERO)),
            Some(v) => v.parse().map(Some).map_err(|_| {
                ApiError::BadRequest(format!(
                    "invalid timeout specified in the request URL - time: invalid duration {v:?}"
                ))
            }),
        }
    }

    /// `metav1.DeleteOptions` given as query parameters (kube reads them there when the
    /// request has no body).
    pub fn delete_options(&self) -> Result<DeleteOptions, ApiError> {
        let grace_period_seconds = match self.get("gracePeriodSeconds") {
            None | Some("") => None,
            Some(v) => Some(v.parse::<i64>().map_err(|_| {
                ApiError::BadRequest(format!("invalid value for gracePeriodSeconds: {v:?}"))
            })?),
        };
        let orphan_dependents = match self.get("orphanDependents") {
            None | Some("") => None,
            // Stricter than kube's parameter codec (which reads any other value as true): a
            // delete that orphans or cascades on a typo is worse than a 400 (issue 9, item 7).
            Some("true" | "True" | "1") => Some(true),
            Some("false" | "False" | "0") => Some(false),
            Some(v) => {
                return Err(ApiError::BadRequest(format!(
                    "invalid value for orphanDependents: {v:?}"
                )))
            }
        };
        Ok(DeleteOptions {
            dry_run: self.dry_run()?,
            preconditions: Preconditions::default(),
            propagation_policy: self
                .get("propagationPolicy")
                .filter(|p| !p.is_empty())
                .map(String::from),
            orphan_dependents,
            grace_period_seconds,
        })
    }

    /// The field manager: `fieldManager`, else the user agent's product (as kube derives it).
    pub fn field_manager(&self, user_agent: Option<&str>) -> Result<String, ApiError> {
        let explicit = self.explicit_field_manager()?;
        if !explicit.is_empty() {
            return Ok(explicit);
        }
        let product = user_agent
            .unwrap_or("unknown")
            .split('/')
            .next()
            .unwrap_or("unknown");
        Ok(product.chars().take(128).collect())
    }

    /// `fieldManager` as given (empty when absent), checked: what server-side apply takes.
    pub fn explicit_field_manager(&self) -> Result<String, ApiError> {
        match self.get("fieldManager").filter(|m| !m.is_empty()) {
            Some(m) if m.len() > 128 || m.chars().any(|c| c.is_control()) => {
                Err(ApiError::BadRequest(
                    "fieldManager: Invalid value: must be at most 128 printable characters".into(),
                ))
            }
            Some(m) => Ok(m.to_string()),
            None => Ok(String::new()),
        }
    }
}

/// `metav1.DeleteOptions`, as kube reads them: from the body when there is one, else from the
/// query. A `dryRun` in the query counts either way (a dry run asked for anywhere is never
/// carried out for real). Values of the wrong type are a `400`; values the options do not
/// allow, a `422` (here for `dryRun`, in [`DeleteOptions::validate`] for the rest).
pub fn delete_options(query: &Query, body: &[u8]) -> Result<DeleteOptions, ApiError> {
    let query_dry_run = query.dry_run()?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return query.delete_options();
    }
    let body: k8s_openapi::apimachinery::pkg::apis::meta::v1::DeleteOptions =
        serde_json::from_slice(body).map_err(|e| {
            ApiError::BadRequest(format!(
                "the body of the request could not be decoded as DeleteOptions: {e}"
            ))
        })?;
    let dry_run = body.dry_run.unwrap_or_default();
    if dry_run.iter().any(|v| v != "All") {
        return Err(invalid_delete_options(ErrorList(vec![
            FieldError::not_supported(&Path::new("dryRun"), dry_run, &["All"]),
        ])));
    }
    let preconditions = body.preconditions.unwrap_or_default();
    Ok(DeleteOptions {
        dry_run: query_dry_run || !dry_run.is_empty(),
        preconditions: Preconditions {
            uid: preconditions.uid,
            resource_version: preconditions.resource_version,
        },
        propagation_policy: body.propagation_policy,
        orphan_dependents: body.orphan_dependents,
        grace_period_seconds: body.grace_period_seconds,
    })
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
    fn garbage_timeouts_are_refused_and_go_durations_accepted() {
        for good in ["", "0", "30s", "1m30s", "500ms", "1ns", "-1h"] {
            let q = Query::parse(Some(&format!("timeout={good}")));
            assert!(q.request_timeout().is_ok(), "timeout={good}");
        }
        let err = Query::parse(Some("timeout=abc"))
            .request_timeout()
            .unwrap_err();
        assert_eq!(err.code(), http::StatusCode::BAD_REQUEST);
        assert_eq!(
            err.to_string(),
            "invalid timeout specified in the request URL - time: invalid duration \"abc\""
        );
        for bad in ["abc", "-5", "1.5"] {
            let q = Query::parse(Some(&format!("timeoutSeconds={bad}")));
            assert!(q.timeout().is_err(), "timeoutSeconds={bad}");
        }
        assert_eq!(
            Query::parse(Some("timeoutSeconds=7")).timeout().unwrap(),
            Some(Duration::from_secs(7))
        );
    }

    #[test]
    fn delete_options_come_from_the_body_or_else_the_query() {
        let query = Query::parse(Some(
            "propagationPolicy=Orphan&gracePeriodSeconds=-1&orphanDependents=false",
        ));
        let opts = delete_options(&query, b"").unwrap();
        assert_eq!(opts.propagation_policy.as_deref(), Some("Orphan"));
        assert_eq!(opts.grace_period_seconds, Some(-1));
        assert_eq!(opts.orphan_dependents, Some(false));

        let body = br#"{"kind":"DeleteOptions","apiVersion":"v1","propagationPolicy":"Background","preconditions":{"uid":"u1","resourceVersion":"7"},"dryRun":["All"]}"#;
        let opts = delete_options(&query, body).unwrap();
        assert_eq!(
            opts.propagation_policy.as_deref(),
            Some("Background"),
            "the body wins, as in kube"
        );
        assert_eq!(opts.orphan_dependents, None);
        assert!(opts.dry_run);
        assert_eq!(
            opts.preconditions,
            Preconditions {
                uid: Some("u1".into()),
                resource_version: Some("7".into())
            }
        );
        let dry = delete_options(&Query::parse(Some("dryRun=All")), b"{}").unwrap();
        assert!(dry.dry_run, "a dry run asked for in the query is one");
    }

    #[test]
    fn delete_options_of_the_wrong_type_are_400_and_unsupported_values_422() {
        for q in [
            "gracePeriodSeconds=abc",
            "orphanDependents=maybe",
            "dryRun=Some",
        ] {
            let err = delete_options(&Query::parse(Some(q)), b"").unwrap_err();
            assert_eq!(err.code(), http::StatusCode::BAD_REQUEST, "{q}: {err}");
        }
        let query = Query::parse(None);
        for body in [
            r#"{"gracePeriodSeconds":"abc"}"#,
            r#"{"orphanDependents":"maybe"}"#,
            "not json",
        ] {
            let err = delete_options(&query, body.as_bytes()).unwrap_err();
            assert_eq!(err.code(), http::StatusCode::BAD_REQUEST, "{body}: {err}");
        }
        let err = delete_options(&query, br#"{"dryRun":["Some"]}"#).unwrap_err();
        assert_eq!(err.code(), http::StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            err.to_string(),
            "DeleteOptions.meta.k8s.io \"\" is invalid: dryRun: Unsupported value: [\"Some\"]: supported values: \"All\""
        );
    }

    #[test]
    fn apply_gets_the_field_manager_only_as_given() {
        let q = Query::parse(None);
        assert_eq!(q.explicit_field_manager().unwrap(), "");
        assert_eq!(
            q.field_manager(Some("kubectl/v1.32.4")).unwrap(),
            "kubectl",
            "other writes default it from the user agent"
        );
        let q = Query::parse(Some("fieldManager=ops"));
        assert_eq!(q.explicit_field_manager().unwrap(), "ops");
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
