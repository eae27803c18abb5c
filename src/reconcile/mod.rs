//! Reconcile of both kinds: typed errors and how they map to conditions and requeues, and
//! small helpers for conditions. The shared context lives in [`crate::context`].

mod access;
pub mod conditions;
pub mod credential;
pub mod database;
mod error;
pub mod plan;
pub mod reason;
pub mod request;
pub mod status_write;

/// Tests that read the source tree (every reason documented, no string-literal reasons).
#[cfg(test)]
pub(crate) fn rust_sources_under(dirs: &[&str]) -> Vec<(std::path::PathBuf, String)> {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut dirs: Vec<_> = dirs
        .iter()
        .map(|d| std::path::PathBuf::from(format!("{root}/{d}")))
        .collect();
    let mut files = Vec::new();
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                files.push((path, text));
            }
        }
    }
    files
}

pub use error::Error;
pub use reason::Reason;

/// Finalizer both kinds carry while they own something outside Kubernetes.
pub const FINALIZER: &str = "rdscred.io/cleanup";
