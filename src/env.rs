//! Every environment variable olm reads, documented once.

/// Disables colour on stderr when set to a non-empty value (<https://no-color.org>).
pub const NO_COLOR: &str = "NO_COLOR";

/// `RUST_LOG`-style filter for olm's own tracing output (with `--verbose`).
pub const OLM_LOG: &str = "OLM_LOG";

/// Default for `--threads` (CPU threads for generation).
pub const OLM_THREADS: &str = "OLM_THREADS";
