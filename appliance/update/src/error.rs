use std::path::PathBuf;

/// Why an update was refused or could not be read. Every refusal leaves the trusted metadata
/// as it was.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error("reading or writing {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The repository's metadata did not verify (signatures, thresholds, hashes, versions that
    /// went back, a snapshot from another publication).
    #[error("the repository's metadata does not verify: {0}")]
    Untrusted(#[source] Box<tough::error::Error>),
    /// A role expired before the time this box can vouch for.
    #[error("the {role} metadata expired at {expired} (the box's time: {now})")]
    Expired {
        role: &'static str,
        expired: jiff::Timestamp,
        now: jiff::Timestamp,
    },
    #[error("the target {name} does not verify: {source}")]
    Target {
        name: String,
        #[source]
        source: Box<tough::error::Error>,
    },
    #[error("the repository lists no target named {0}")]
    NoSuchTarget(String),
    #[error("target {name}: {reason}")]
    BadRelease { name: String, reason: String },
    /// The release's file is not a bundle this release can install from.
    #[error("the bundle: {0}")]
    BadBundle(String),
    /// A chunk index or a chunk that does not add up (`chunks`).
    #[error("the chunks: {0}")]
    BadChunks(String),
    /// The running slot no longer holds what its index says (a chunk read from it does not
    /// match), and the chunk was not staged either.
    #[error("the running slot: {0}")]
    SeedChanged(String),
    /// Writing or checking a slot or its boot entry.
    #[error("installing: {0}")]
    Install(String),
    #[error("{0} is not a repository location")]
    BadLocation(String),
    #[error("publishing: {0}")]
    Publish(String),
}

impl UpdateError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> UpdateError {
        let path = path.into();
        move |source| UpdateError::Io { path, source }
    }
}
