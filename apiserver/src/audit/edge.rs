//! The `objectRef` of an audit event, from a parsed `RequestInfo`. For a proxied request it is the
//! edge object the request is about (`pods/web-1/exec` in `default`), not the hub's
//! `clusters/proxy`: the edge part of the path (`clusters/{name}/proxy/{rest}`) is parsed by the
//! same rules as the hub's own requests ([`edgefleet_apimachinery::request_info`]), so that audit
//! and router agree on a verb.

use edgefleet_apimachinery::RequestInfo;

use super::event::ObjectReference;

/// The `objectRef` of an event about the request `info`; `None` for non-resource requests.
pub fn object_ref(info: &RequestInfo) -> Option<ObjectReference> {
    info.is_resource_request.then(|| ObjectReference {
        resource: info.resource.clone(),
        namespace: info.namespace.clone(),
        name: info.name.clone(),
        api_group: info.api_group.clone(),
        api_version: info.api_version.clone(),
        subresource: info.subresource.clone(),
        ..ObjectReference::default()
    })
}

#[cfg(test)]
mod tests {
    use edgefleet_apimachinery::request_info;
    use http::Method;

    use super::*;
    use crate::auth::UserInfo;
    use crate::http::layers::audit::{hub_attributes, proxied_attributes};

    const HUB: &str = "/apis/edgefleet.io/v1alpha1/namespaces/retail/clusters";
    const PROXY: &str =
        "/apis/edgefleet.io/v1alpha1/namespaces/retail/clusters/edge-1/proxy/api/v1/pods";

    /// What the router serves (the parsed verb) and what the audit records, for a hub path and
    /// for a proxied path, built as the audit layer builds them.
    fn verbs(query: &str) -> (String, String, String) {
        let hub = request_info::parse(&Method::GET, HUB, Some(query));
        let router = hub.verb.clone();
        let audit_hub = hub_attributes(&hub, UserInfo::new("alice"), HUB.into()).verb;
        let proxied = request_info::parse(&Method::GET, PROXY, Some(query));
        let audit_proxied = proxied_attributes(
            &proxied,
            &Method::GET,
            Some(query),
            UserInfo::new("alice"),
            PROXY.into(),
        )
        .verb;
        (router, audit_hub, audit_proxied)
    }

    #[test]
    fn watch_values_classify_alike_in_router_and_audit_on_hub_and_proxied_paths() {
        for (query, verb) in [
            ("watch=yes", "watch"),
            ("watch=1", "watch"),
            ("watch=true", "watch"),
            ("watch=", "watch"),
            ("watch", "watch"),
            ("watch=false", "list"),
            ("watch=0", "list"),
            ("limit=5", "list"),
        ] {
            let want = (verb.to_owned(), verb.to_owned(), verb.to_owned());
            assert_eq!(
                verbs(query),
                want,
                "?{query}: (router, audit of the hub path, audit of the proxied path)"
            );
        }
    }

    #[test]
    fn the_object_ref_names_the_edge_object() {
        let exec = request_info::parse(
            &Method::POST,
            "/api/v1/namespaces/default/pods/web-1/exec",
            Some("command=sh"),
        );
        assert_eq!(
            object_ref(&exec).unwrap(),
            ObjectReference {
                resource: "pods".into(),
                namespace: "default".into(),
                name: "web-1".into(),
                api_version: "v1".into(),
                subresource: "exec".into(),
                ..ObjectReference::default()
            }
        );
        for path in ["/healthz", "/api", "/apis/apps/v1", "/api/v1/watch"] {
            let info = request_info::parse(&Method::GET, path, None);
            assert_eq!(object_ref(&info), None, "{path}");
        }
    }
}
