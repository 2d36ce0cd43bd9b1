//! Content negotiation: which representation a client asked for in `Accept`, and what a request
//! body is in `Content-Type`.
//!
//! Clients ask for transformed representations with media-type parameters, e.g. kubectl's
//! `application/json;as=Table;v=v1;g=meta.k8s.io, application/json`. The first acceptable entry
//! wins; an `Accept` that lists only things we cannot produce (protobuf) is a 406.

use crate::errors::ApiError;

/// How to serialize a response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Json,
    Yaml,
}

impl Encoding {
    pub fn content_type(self) -> &'static str {
        match self {
            Encoding::Json => "application/json",
            Encoding::Yaml => "application/yaml",
        }
    }
}

/// A transformed representation of objects (`as=` parameter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transform {
    /// The objects themselves.
    None,
    /// `meta.k8s.io/v1` Table (kubectl get).
    Table,
    /// `meta.k8s.io/v1` PartialObjectMetadata(List): metadata only.
    PartialObjectMetadata,
    /// `apidiscovery.k8s.io/v2` APIGroupDiscoveryList (aggregated discovery).
    AggregatedDiscovery,
}

/// The representation chosen for a response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Representation {
    pub encoding: Encoding,
    pub transform: Transform,
}

impl Representation {
    pub const JSON: Representation = Representation {
        encoding: Encoding::Json,
        transform: Transform::None,
    };
}

/// One entry of an `Accept` header.
#[derive(Debug, PartialEq)]
struct MediaRange<'a> {
    type_: &'a str,
    subtype: &'a str,
    params: Vec<(&'a str, &'a str)>,
}

impl<'a> MediaRange<'a> {
    fn parse(s: &'a str) -> Option<Self> {
        let mut pieces = s.split(';').map(str::trim);
        let (type_, subtype) = pieces.next()?.split_once('/')?;
        let params = pieces
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k.trim(), v.trim().trim_matches('"')))
            .collect();
        Some(MediaRange {
            type_: type_.trim(),
            subtype: subtype.trim(),
            params,
        })
    }

    fn param(&self, name: &str) -> Option<&'a str> {
        self.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }

    fn encoding(&self) -> Option<Encoding> {
        match (self.type_, self.subtype) {
            ("*", "*") | ("application", "*") | ("application", "json") => Some(Encoding::Json),
            ("application", "yaml") => Some(Encoding::Yaml),
            _ => None,
        }
    }

    fn quality_is_zero(&self) -> bool {
        self.param("q")
            .and_then(|q| q.parse::<f32>().ok())
            .is_some_and(|q| q <= 0.0)
    }
}

/// Which transforms the endpoint can produce.
#[derive(Clone, Copy, Debug)]
pub struct Offers {
    pub table: bool,
    pub partial_metadata: bool,
    pub aggregated_discovery: bool,
}

impl Offers {
    pub const OBJECTS: Offers = Offers {
        table: true,
        partial_metadata: true,
        aggregated_discovery: false,
    };
    pub const DISCOVERY: Offers = Offers {
        table: false,
        partial_metadata: false,
        aggregated_discovery: true,
    };
    pub const PLAIN: Offers = Offers {
        table: false,
        partial_metadata: false,
        aggregated_discovery: false,
    };
}

/// Chooses a representation from an `Accept` header (absent or empty means JSON).
pub fn negotiate(accept: Option<&str>, offers: Offers) -> Result<Representation, ApiError> {
    let Some(accept) = accept.map(str::trim).filter(|a| !a.is_empty()) else {
        return Ok(Representation::JSON);
    };
    for range in accept.split(',').filter_map(MediaRange::parse) {
        if range.quality_is_zero() {
            continue;
        }
        let Some(encoding) = range.encoding() else {
            continue;
        };
        let transform = match (range.param("as"), range.param("g"), range.param("v")) {
            (None, _, _) => Transform::None,
            (Some("Table"), Some("meta.k8s.io"), Some("v1" | "v1beta1")) if offers.table => {
                Transform::Table
            }
            (
                Some("PartialObjectMetadata" | "PartialObjectMetadataList"),
                Some("meta.k8s.io"),
                Some("v1" | "v1beta1"),
            ) if offers.partial_metadata => Transform::PartialObjectMetadata,
            (Some("APIGroupDiscoveryList"), Some("apidiscovery.k8s.io"), Some("v2"))
                if offers.aggregated_discovery =>
            {
                Transform::AggregatedDiscovery
            }
            // A transform we do not offer here: try the next entry, as kube does.
            _ => continue,
        };
        return Ok(Representation {
            encoding,
            transform,
        });
    }
    Err(ApiError::NotAcceptable(format!(
        "only the following media types are accepted: application/json, application/yaml (asked for {accept:?})"
    )))
}

/// The kinds of body a write may carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyType {
    Json,
    Yaml,
    JsonPatch,
    MergePatch,
    StrategicMergePatch,
    ApplyPatch,
}

pub const PATCH_TYPES: &str =
    "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml";

/// Reads `Content-Type` (parameters such as `charset` are ignored).
pub fn body_type(content_type: Option<&str>) -> Result<BodyType, ApiError> {
    let essence = content_type
        .unwrap_or("application/json")
        .split(';')
        .next()
        .unwrap_or_default()
        .trim();
    Ok(match essence.to_ascii_lowercase().as_str() {
        "application/json" | "" => BodyType::Json,
        "application/yaml" => BodyType::Yaml,
        "application/json-patch+json" => BodyType::JsonPatch,
        "application/merge-patch+json" => BodyType::MergePatch,
        "application/strategic-merge-patch+json" => BodyType::StrategicMergePatch,
        "application/apply-patch+yaml" => BodyType::ApplyPatch,
        other => {
            return Err(ApiError::UnsupportedMediaType(format!(
                "the body of the request was in an unknown format - accepted media types include: \
                 application/json, application/yaml, {PATCH_TYPES} (got {other:?})"
            )))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBECTL_GET: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
    const KUBECTL_DISCOVERY: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";

    #[test]
    fn kubectl_get_gets_a_table() {
        let r = negotiate(Some(KUBECTL_GET), Offers::OBJECTS).unwrap();
        assert_eq!(
            r,
            Representation {
                encoding: Encoding::Json,
                transform: Transform::Table
            }
        );
        // Where tables are not offered the plain JSON fallback is used.
        assert_eq!(
            negotiate(Some(KUBECTL_GET), Offers::PLAIN).unwrap(),
            Representation::JSON
        );
    }

    #[test]
    fn discovery_prefers_aggregated_v2() {
        let r = negotiate(Some(KUBECTL_DISCOVERY), Offers::DISCOVERY).unwrap();
        assert_eq!(r.transform, Transform::AggregatedDiscovery);
        assert_eq!(
            negotiate(Some(KUBECTL_DISCOVERY), Offers::OBJECTS).unwrap(),
            Representation::JSON
        );
    }

    #[test]
    fn protobuf_only_is_not_acceptable() {
        let err =
            negotiate(Some("application/vnd.kubernetes.protobuf"), Offers::OBJECTS).unwrap_err();
        assert_eq!(err.code(), http::StatusCode::NOT_ACCEPTABLE);
        let ok = negotiate(
            Some("application/vnd.kubernetes.protobuf, */*"),
            Offers::OBJECTS,
        )
        .unwrap();
        assert_eq!(ok, Representation::JSON);
        assert_eq!(
            negotiate(Some("application/yaml"), Offers::OBJECTS)
                .unwrap()
                .encoding,
            Encoding::Yaml
        );
        assert!(negotiate(Some("application/json;q=0"), Offers::OBJECTS).is_err());
    }

    #[test]
    fn body_types() {
        assert_eq!(body_type(None).unwrap(), BodyType::Json);
        assert_eq!(
            body_type(Some("application/json; charset=utf-8")).unwrap(),
            BodyType::Json
        );
        assert_eq!(
            body_type(Some("application/apply-patch+yaml")).unwrap(),
            BodyType::ApplyPatch
        );
        let err = body_type(Some("text/plain")).unwrap_err();
        assert_eq!(err.code(), http::StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
}
