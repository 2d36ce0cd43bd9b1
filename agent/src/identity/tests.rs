use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;

use super::secret::{identity_of, with_identity, Update, IDENTITY_KEY, PART_OF_LABEL};
use super::sync::retry_delay;
use super::*;
use crate::timeouts::{IDENTITY_SECRET_RETRY_BASE, IDENTITY_SECRET_RETRY_CAP};

fn secret_ref() -> SecretRef {
    "edgefleet-system/edgefleet-agent-identity".parse().unwrap()
}

#[test]
fn a_secret_is_namespace_slash_name() {
    let secret = secret_ref();
    assert_eq!(secret.namespace, "edgefleet-system");
    assert_eq!(secret.name, "edgefleet-agent-identity");
    assert_eq!(
        secret.to_string(),
        "edgefleet-system/edgefleet-agent-identity"
    );
    assert!("ns/a.b-c.d".parse::<SecretRef>().is_ok());

    for (bad, why) in [
        ("edgefleet-agent-identity", "<namespace>/<name>"),
        ("/name", "namespace"),
        ("ns/", "name"),
        ("Edgefleet/name", "namespace"),
        ("ns/a/b", "name"),
        ("ns/Name", "name"),
        ("ns/-name", "name"),
        ("ns/a..b", "name"),
        ("-ns/name", "namespace"),
    ] {
        let message = bad.parse::<SecretRef>().unwrap_err().to_string();
        assert!(message.contains(bad), "{bad}: {message}");
        assert!(message.contains(why), "{bad}: {message}");
    }
    let long = format!("{}/name", "n".repeat(64));
    assert!(long.parse::<SecretRef>().is_err());
}

#[test]
fn a_missing_secret_is_created_labelled_and_opaque() {
    let Update::Create(created) = with_identity(None, &secret_ref(), b"pem") else {
        panic!("expected a create");
    };
    assert_eq!(
        created.metadata.name.as_deref(),
        Some("edgefleet-agent-identity")
    );
    assert_eq!(
        created.metadata.namespace.as_deref(),
        Some("edgefleet-system")
    );
    assert_eq!(created.metadata.resource_version, None);
    assert_eq!(
        created.metadata.labels.as_ref().unwrap()[PART_OF_LABEL.0],
        PART_OF_LABEL.1
    );
    assert_eq!(created.type_.as_deref(), Some("Opaque"));
    assert_eq!(identity_of(&created), Some(&b"pem"[..]));
    assert_eq!(created.data.as_ref().unwrap().len(), 1);
}

#[test]
fn an_existing_secret_changes_only_in_its_identity_and_label() {
    let existing = Secret {
        metadata: ObjectMeta {
            name: Some("edgefleet-agent-identity".into()),
            namespace: Some("edgefleet-system".into()),
            resource_version: Some("42".into()),
            labels: Some(BTreeMap::from([("team".to_owned(), "edge".to_owned())])),
            annotations: Some(BTreeMap::from([(
                "backup".to_owned(),
                "nightly".to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([
            (IDENTITY_KEY.to_owned(), ByteString(b"old".to_vec())),
            ("other".to_owned(), ByteString(b"kept".to_vec())),
        ])),
        ..Secret::default()
    };

    let Update::Replace(updated) = with_identity(Some(existing.clone()), &secret_ref(), b"new")
    else {
        panic!("expected an update");
    };
    // The precondition of the update: the version just read.
    assert_eq!(updated.metadata.resource_version.as_deref(), Some("42"));
    assert_eq!(identity_of(&updated), Some(&b"new"[..]));
    assert_eq!(updated.data.as_ref().unwrap()["other"].0, b"kept");
    let labels = updated.metadata.labels.as_ref().unwrap();
    assert_eq!(labels["team"], "edge");
    assert_eq!(labels[PART_OF_LABEL.0], PART_OF_LABEL.1);
    assert_eq!(updated.metadata.annotations, existing.metadata.annotations);

    // Holding the bytes already: nothing to write.
    assert_eq!(
        with_identity(Some(existing), &secret_ref(), b"old"),
        Update::Unchanged
    );
}

#[test]
fn a_secret_without_data_gains_the_identity() {
    let existing = Secret {
        metadata: ObjectMeta {
            name: Some("edgefleet-agent-identity".into()),
            resource_version: Some("7".into()),
            ..ObjectMeta::default()
        },
        ..Secret::default()
    };
    assert_eq!(identity_of(&existing), None);
    let Update::Replace(updated) = with_identity(Some(existing), &secret_ref(), b"pem") else {
        panic!("expected an update");
    };
    assert_eq!(identity_of(&updated), Some(&b"pem"[..]));
}

#[test]
fn failed_saves_back_off_exponentially_up_to_the_cap() {
    assert_eq!(retry_delay(0), IDENTITY_SECRET_RETRY_BASE);
    assert_eq!(retry_delay(2), IDENTITY_SECRET_RETRY_BASE * 4);
    assert_eq!(retry_delay(40), IDENTITY_SECRET_RETRY_CAP);
}

#[test]
fn a_restored_identity_is_private_and_replaced_whole() {
    let dir = tempfile::tempdir().unwrap();
    write_private(dir.path(), b"first").unwrap();
    write_private(dir.path(), b"second").unwrap();
    let file = dir.path().join(IDENTITY_FILE);
    assert_eq!(std::fs::read(&file).unwrap(), b"second");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // No temporary file is left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, [IDENTITY_FILE]);
}

#[test]
fn a_working_directory_is_created_or_made_private() {
    let dir = tempfile::tempdir().unwrap();
    let given = dir.path().join("a/b");
    let (path, temp) = work_dir(Some(&given)).unwrap();
    assert_eq!(path, given);
    assert!(given.is_dir());
    assert!(temp.is_none());

    let (path, temp) = work_dir(None).unwrap();
    assert!(path.is_dir());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }
    drop(temp);
    assert!(!path.exists(), "the temporary directory outlived the agent");
}
