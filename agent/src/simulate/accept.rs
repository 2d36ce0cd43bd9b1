//! Content negotiation: which representation of a response the caller asked for in `Accept`.
//!
//! kubectl lists what it can take, best first, e.g.
//! `application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json`
//! for `kubectl get`, and
//! `application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,…,application/json`
//! for discovery. The first range the simulated cluster serves (and the endpoint offers) wins;
//! without a match, plain JSON, which kubectl always accepts.

use http::HeaderMap;

/// A representation the simulated cluster can answer with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Representation {
    /// The object (or list) itself, `application/json`.
    Json,
    /// `meta.k8s.io/v1` Table, for `kubectl get`.
    Table,
    /// `apidiscovery.k8s.io/v2` APIGroupDiscoveryList, for aggregated discovery.
    AggregatedDiscovery,
}

/// `Content-Type` of a Table response.
pub const TABLE_CONTENT_TYPE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io";
/// `Content-Type` of an aggregated discovery response.
pub const AGGREGATED_DISCOVERY_CONTENT_TYPE: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// The first representation in `headers`' `Accept` that is among `offered`; JSON otherwise.
pub fn negotiate(headers: &HeaderMap, offered: &[Representation]) -> Representation {
    headers
        .get_all(http::header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(media_range)
        .find(|r| offered.contains(r))
        .unwrap_or(Representation::Json)
}

/// The representation one media range asks for, if the simulated cluster knows it.
fn media_range(range: &str) -> Option<Representation> {
    let mut parts = range.split(';').map(str::trim);
    let media_type = parts.next()?.to_ascii_lowercase();
    if !matches!(
        media_type.as_str(),
        "application/json" | "application/*" | "*/*"
    ) {
        return None;
    }
    let (mut as_, mut group, mut version) = (None, None, None);
    for param in parts {
        let Some((key, value)) = param.split_once('=') else {
            continue;
        };
        let value = value.trim().trim_matches('"');
        match key.trim().to_ascii_lowercase().as_str() {
            "as" => as_ = Some(value),
            "g" => group = Some(value),
            "v" => version = Some(value),
            _ => {}
        }
    }
    match (as_, group, version) {
        (None, _, _) => Some(Representation::Json),
        (Some("Table"), Some("meta.k8s.io"), Some("v1")) => Some(Representation::Table),
        (Some("APIGroupDiscoveryList"), Some("apidiscovery.k8s.io"), Some("v2")) => {
            Some(Representation::AggregatedDiscovery)
        }
        // Another version of these (v1beta1 Table, v2beta1 discovery) or another kind.
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;
    use Representation::*;

    fn accept(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::ACCEPT, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn kubectl_get_asks_for_a_table_first() {
        let h = accept("application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json");
        assert_eq!(negotiate(&h, &[Json, Table]), Table);
        // An endpoint without tables answers JSON.
        assert_eq!(negotiate(&h, &[Json]), Json);
    }

    #[test]
    fn kubectl_discovery_asks_for_aggregated_v2_first() {
        let h = accept("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json");
        assert_eq!(
            negotiate(&h, &[Json, AggregatedDiscovery]),
            AggregatedDiscovery
        );
        let only_beta = accept("application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json");
        assert_eq!(negotiate(&only_beta, &[Json, AggregatedDiscovery]), Json);
    }

    #[test]
    fn json_first_or_nothing_means_json() {
        assert_eq!(negotiate(&HeaderMap::new(), &[Json, Table]), Json);
        assert_eq!(
            negotiate(
                &accept("application/json, application/json;as=Table;v=v1;g=meta.k8s.io"),
                &[Json, Table]
            ),
            Json
        );
        assert_eq!(negotiate(&accept("*/*"), &[Json, Table]), Json);
        assert_eq!(
            negotiate(
                &accept("application/vnd.kubernetes.protobuf"),
                &[Json, Table]
            ),
            Json
        );
    }
}
