//! User impersonation (`Impersonate-User`, `-Group`, `-Uid`, `-Extra-<key>`), as kube-apiserver's
//! `WithImpersonation` filter does it.
//!
//! After authentication, each requested piece of identity is one authorization check of verb
//! `impersonate` for the caller:
//!
//! - `Impersonate-User: alice`: `users` named `alice`, group `""`; a service account name
//!   (`system:serviceaccount:ns:sa`) is checked as `serviceaccounts` named `sa` in namespace `ns`;
//! - each `Impersonate-Group: g`: `groups` named `g`, group `""`;
//! - `Impersonate-Uid: 42`: `uids` named `42`, group `authentication.k8s.io`;
//! - each value `v` of `Impersonate-Extra-Scopes`: `userextras/scopes` named `v`, group
//!   `authentication.k8s.io` (the key is lowercased and percent-decoded).
//!
//! All must be allowed; the first refusal is a Forbidden in kube's wording. The request then runs
//! as the impersonated user, whose groups are those requested (a service account without
//! requested groups gets its fixed ones), plus `system:authenticated` (or `system:unauthenticated`
//! for `system:anonymous`) unless one of those was requested. Groups, uid or extras without a user
//! are refused with 400 (kube answers 500, which misnames a client error).

use edgefleet_apimachinery::impersonation::{
    decode_extra_key, IMPERSONATE_EXTRA_PREFIX, IMPERSONATE_GROUP, IMPERSONATE_UID,
    IMPERSONATE_USER,
};
use http::header::HeaderName;
use http::{HeaderMap, HeaderValue, StatusCode};

use super::user::{
    service_account_groups, service_account_username, split_service_account_username,
};
use super::{
    Attributes, Authorizer, Forbidden, UserInfo, ALL_AUTHENTICATED, ALL_UNAUTHENTICATED, ANONYMOUS,
};

const VERB: &str = "impersonate";
const AUTHENTICATION_GROUP: &str = "authentication.k8s.io";
const AUTHENTICATION_VERSION: &str = "v1";

/// The outcome of a request that passed the impersonation checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Impersonation {
    /// The user the request now acts as; `None` when it impersonates no one.
    pub user: Option<UserInfo>,
    /// The impersonation headers present on the request, to be removed before anything else
    /// (handlers, the proxy to edge clusters) sees the request.
    pub headers_to_strip: Vec<HeaderName>,
}

#[derive(Debug, thiserror::Error)]
pub enum ImpersonationError {
    #[error("requested {headers} without impersonating a user (no Impersonate-User)")]
    WithoutUser { headers: String },
    #[error("header {header} is not valid UTF-8")]
    InvalidHeaderValue { header: HeaderName },
    #[error(transparent)]
    Forbidden(#[from] Forbidden),
}

impl ImpersonationError {
    /// 400 for malformed requests, 403 for refused impersonation.
    pub fn status_code(&self) -> StatusCode {
        match self {
            ImpersonationError::WithoutUser { .. }
            | ImpersonationError::InvalidHeaderValue { .. } => StatusCode::BAD_REQUEST,
            ImpersonationError::Forbidden(_) => StatusCode::FORBIDDEN,
        }
    }
}

/// One thing to impersonate, checked separately.
enum Request<'a> {
    User(&'a str),
    ServiceAccount { namespace: &'a str, name: &'a str },
    Group(&'a str),
    Extra { key: String, value: &'a str },
    Uid(&'a str),
}

impl Request<'_> {
    fn attributes(&self, requestor: &UserInfo) -> Attributes {
        let user = requestor.clone();
        match self {
            Request::User(name) => Attributes::resource(user, VERB, "", "users").with_name(*name),
            Request::ServiceAccount { namespace, name } => {
                Attributes::resource(user, VERB, "", "serviceaccounts")
                    .with_namespace(*namespace)
                    .with_name(*name)
            }
            Request::Group(name) => Attributes::resource(user, VERB, "", "groups").with_name(*name),
            Request::Extra { key, value } => {
                Attributes::resource(user, VERB, AUTHENTICATION_GROUP, "userextras")
                    .with_api_version(AUTHENTICATION_VERSION)
                    .with_subresource(key.as_str())
                    .with_name(*value)
            }
            Request::Uid(uid) => Attributes::resource(user, VERB, AUTHENTICATION_GROUP, "uids")
                .with_api_version(AUTHENTICATION_VERSION)
                .with_name(*uid),
        }
    }
}

fn text<'a>(header: &HeaderName, value: &'a HeaderValue) -> Result<&'a str, ImpersonationError> {
    std::str::from_utf8(value.as_bytes()).map_err(|_| ImpersonationError::InvalidHeaderValue {
        header: header.clone(),
    })
}

fn first<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Result<&'a str, ImpersonationError> {
    headers.get(name).map_or(Ok(""), |v| text(name, v))
}

/// Checks the impersonation headers of a request made by `requestor` against `authorizer`, and
/// returns who the request acts as from here on.
pub async fn impersonate(
    authorizer: &dyn Authorizer,
    requestor: &UserInfo,
    headers: &HeaderMap,
) -> Result<Impersonation, ImpersonationError> {
    let headers_to_strip: Vec<HeaderName> = headers
        .keys()
        .filter(|name| {
            **name == IMPERSONATE_USER
                || **name == IMPERSONATE_GROUP
                || **name == IMPERSONATE_UID
                || name.as_str().starts_with(IMPERSONATE_EXTRA_PREFIX)
        })
        .cloned()
        .collect();
    if headers_to_strip.is_empty() {
        return Ok(Impersonation {
            user: None,
            headers_to_strip,
        });
    }

    let mut requests = Vec::new();
    let username = first(headers, &IMPERSONATE_USER)?;
    if !username.is_empty() {
        requests.push(match split_service_account_username(username) {
            Some((namespace, name)) => Request::ServiceAccount { namespace, name },
            None => Request::User(username),
        });
    }
    // Every value counts, even an empty one, as in kube.
    let groups_specified = headers.contains_key(&IMPERSONATE_GROUP);
    for value in headers.get_all(&IMPERSONATE_GROUP) {
        requests.push(Request::Group(text(&IMPERSONATE_GROUP, value)?));
    }
    let mut extras_specified = false;
    for (name, value) in headers {
        if let Some(key) = name.as_str().strip_prefix(IMPERSONATE_EXTRA_PREFIX) {
            extras_specified = true;
            requests.push(Request::Extra {
                key: decode_extra_key(key),
                value: text(name, value)?,
            });
        }
    }
    let uid = first(headers, &IMPERSONATE_UID)?;
    if !uid.is_empty() {
        requests.push(Request::Uid(uid));
    }

    if username.is_empty() {
        let without_user: Vec<&str> = [
            (groups_specified, "Impersonate-Group"),
            (extras_specified, "Impersonate-Extra-*"),
            (!uid.is_empty(), "Impersonate-Uid"),
        ]
        .into_iter()
        .filter_map(|(present, header)| present.then_some(header))
        .collect();
        if !without_user.is_empty() {
            return Err(ImpersonationError::WithoutUser {
                headers: without_user.join(", "),
            });
        }
    }
    if requests.is_empty() {
        // Only empty `Impersonate-User` / `Impersonate-Uid` values: nothing is impersonated.
        return Ok(Impersonation {
            user: None,
            headers_to_strip,
        });
    }

    let mut user = UserInfo::default();
    for request in &requests {
        let attributes = request.attributes(requestor);
        let decision = authorizer.authorize(&attributes).await;
        if !decision.is_allow() {
            return Err(Forbidden::new(&attributes, decision.reason()).into());
        }
        match request {
            Request::User(name) => user.name = name.to_string(),
            Request::ServiceAccount { namespace, name } => {
                user.name = service_account_username(namespace, name);
                if !groups_specified {
                    user.groups.extend(service_account_groups(namespace));
                }
            }
            Request::Group(group) => user.groups.push(group.to_string()),
            Request::Extra { key, value } => user
                .extra
                .entry(key.clone())
                .or_default()
                .push(value.to_string()),
            Request::Uid(uid) => user.uid = uid.to_string(),
        }
    }

    if user.name == ANONYMOUS {
        if !user.in_group(ALL_UNAUTHENTICATED) {
            user.groups.push(ALL_UNAUTHENTICATED.to_string());
        }
    } else if !user.in_group(ALL_AUTHENTICATED) && !user.in_group(ALL_UNAUTHENTICATED) {
        user.groups.push(ALL_AUTHENTICATED.to_string());
    }

    Ok(Impersonation {
        user: Some(user),
        headers_to_strip,
    })
}

#[cfg(test)]
mod tests;
