//! Custom resource types (API group `rdscred.io/v1alpha1`) and the generated CRD YAML.

mod common;
mod credential;
mod database;

pub use common::*;
pub use credential::*;
pub use database::*;

use kube::CustomResourceExt;

/// API group of both kinds.
pub const GROUP: &str = "rdscred.io";

/// Both CRDs as multi-document YAML, exactly what `crds/` holds and `rdscred crd` prints.
pub fn crds_yaml() -> String {
    let mut out = String::new();
    for crd in [RdsDatabase::crd(), RdsCredential::crd()] {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd).expect("CRD serializes"));
    }
    out
}

/// File names under `crds/` and their contents.
pub fn crd_files() -> Vec<(&'static str, String)> {
    vec![
        (
            "rdsdatabases.rdscred.io.yaml",
            serde_yaml::to_string(&RdsDatabase::crd()).expect("CRD serializes"),
        ),
        (
            "rdscredentials.rdscred.io.yaml",
            serde_yaml::to_string(&RdsCredential::crd()).expect("CRD serializes"),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `crds/` is what users apply and what the integration tests install: it must be exactly
    /// what the code generates.
    #[test]
    fn checked_in_crds_match_the_code() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
        for (name, yaml) in crd_files() {
            let on_disk = std::fs::read_to_string(dir.join(name)).unwrap_or_default();
            assert!(
                on_disk == yaml,
                "crds/{name} is out of date: run `cargo run -q -- crd --out-dir crds`"
            );
        }
    }
}
