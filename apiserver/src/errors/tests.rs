use edgefleet_api::validation::{ErrorList, FieldError, Path};
use serde_json::json;

use super::*;

fn clusters() -> GroupResource {
    GroupResource::new("edgefleet.io", "clusters")
}

#[test]
fn not_found_reads_like_kube() {
    let err = ApiError::NotFound {
        resource: clusters(),
        name: "edge-1".into(),
    };
    let status = serde_json::to_value(err.status()).unwrap();
    assert_eq!(
        status,
        json!({
            "apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
            "message": "clusters.edgefleet.io \"edge-1\" not found", "reason": "NotFound",
            "details": {"name": "edge-1", "group": "edgefleet.io", "kind": "clusters"}, "code": 404
        })
    );
}

#[test]
fn invalid_carries_one_cause_per_field() {
    let errors: ErrorList = [
        FieldError::invalid(
            &Path::new("spec").child("kubernetesVersion"),
            "1.31",
            "must be a version",
        ),
        FieldError::required(&Path::new("spec").child("addons"), ""),
    ]
    .into_iter()
    .collect();
    let err = ApiError::Invalid {
        kind: "Cluster",
        group: "edgefleet.io",
        name: "edge-1".into(),
        errors,
    };
    assert_eq!(err.code(), StatusCode::UNPROCESSABLE_ENTITY);
    let status = err.status();
    assert_eq!(
        status.message.as_deref(),
        Some(
            "Cluster.edgefleet.io \"edge-1\" is invalid: [spec.kubernetesVersion: Invalid value: \"1.31\": \
             must be a version, spec.addons: Required value]"
        )
    );
    let causes = status.details.unwrap().causes.unwrap();
    assert_eq!(causes[0].reason.as_deref(), Some("FieldValueInvalid"));
    assert_eq!(causes[0].field.as_deref(), Some("spec.kubernetesVersion"));
    assert_eq!(
        causes[0].message.as_deref(),
        Some("Invalid value: \"1.31\": must be a version")
    );
    assert_eq!(causes[1].reason.as_deref(), Some("FieldValueRequired"));
}

#[test]
fn storage_errors_map_to_kube_reasons() {
    let gone: ApiError = StorageError::Compacted {
        requested: 3,
        compacted: 10,
    }
    .into();
    assert_eq!((gone.code(), gone.reason()), (StatusCode::GONE, "Expired"));
    assert_eq!(gone.to_string(), "too old resource version: 3 (10)");

    let future: ApiError = StorageError::FutureRevision {
        requested: 99,
        current: 5,
    }
    .into();
    assert_eq!(future.code(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(
        future.status().details.unwrap().retry_after_seconds,
        Some(1)
    );

    let conflict = ApiError::from_storage(
        StorageError::Conflict {
            key: "k".into(),
            expected: 1,
            current: Box::new(crate::storage::KeyValue {
                key: "k".into(),
                value: Default::default(),
                create_revision: 1,
                mod_revision: 2,
            }),
        },
        &clusters(),
        "edge-1",
    );
    assert_eq!(conflict.code(), StatusCode::CONFLICT);
    assert_eq!(
        conflict.to_string(),
        "Operation cannot be fulfilled on clusters.edgefleet.io \"edge-1\": the object has been \
         modified; please apply your changes to the latest version and try again"
    );
}

#[test]
fn a_storage_failure_converted_with_question_mark_keeps_its_kube_code_and_names_the_object() {
    let key = "edgefleet.io/clusters/retail/edge-1".to_string();
    let not_found: ApiError = StorageError::NotFound { key: key.clone() }.into();
    assert_eq!(
        (not_found.code(), not_found.reason()),
        (StatusCode::NOT_FOUND, "NotFound")
    );
    assert_eq!(
        not_found.to_string(),
        "clusters.edgefleet.io \"edge-1\" not found"
    );
    let details = not_found.status().details.unwrap();
    assert_eq!(details.name.as_deref(), Some("edge-1"));
    assert_eq!(details.kind.as_deref(), Some("clusters"));

    let exists: ApiError = StorageError::AlreadyExists {
        key: "edgefleet.io/environments/retail".into(),
    }
    .into();
    assert_eq!(
        (exists.code(), exists.reason()),
        (StatusCode::CONFLICT, "AlreadyExists")
    );
    assert_eq!(
        exists.to_string(),
        "environments.edgefleet.io \"retail\" already exists"
    );

    let conflict: ApiError = StorageError::Conflict {
        key: key.clone(),
        expected: 1,
        current: Box::new(crate::storage::KeyValue {
            key,
            value: Default::default(),
            create_revision: 1,
            mod_revision: 2,
        }),
    }
    .into();
    assert_eq!(
        (conflict.code(), conflict.reason()),
        (StatusCode::CONFLICT, "Conflict")
    );

    // A key outside the registry's layout is named whole, with no resource (kube's message
    // for an empty GroupResource starts with its empty name, hence the space).
    let other: ApiError = StorageError::NotFound {
        key: "k/fresh".into(),
    }
    .into();
    assert_eq!(other.code(), StatusCode::NOT_FOUND);
    assert_eq!(other.to_string(), " \"k/fresh\" not found");
}
