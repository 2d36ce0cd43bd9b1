//! Manifests under `config/` that are generated from code must match the code.
//! Regenerate with `UPDATE_GENERATED=1 cargo test -p edgefleet-apiserver --test generated_manifests`.

use std::path::PathBuf;

fn check(relative: &str, generated: String) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative);
    let header = "# Generated from apiserver/src/auth/rbac/defaults.rs by\n\
                  # `UPDATE_GENERATED=1 cargo test -p edgefleet-apiserver --test generated_manifests`.\n";
    let want = format!("{header}{generated}");
    if std::env::var_os("UPDATE_GENERATED").is_some() {
        std::fs::write(&path, &want).unwrap();
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "{relative} is out of date: regenerate it (see this file's docs)"
    );
}

#[test]
fn cluster_roles_match_the_built_in_policy() {
    check(
        "config/apiserver/clusterroles.yaml",
        edgefleet_apiserver::auth::rbac::default_cluster_roles_yaml(),
    );
}
