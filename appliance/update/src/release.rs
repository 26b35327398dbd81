//! Which target to install: a release names its board and version in its signed custom
//! fields, so neither a file name nor a mirror can make a Pi take a NUC's image or an older
//! release.

use semver::Version;
use serde_json::Value;

use crate::{UpdateError, Verified};

/// One release a repository offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// The target's name in the repository.
    pub name: String,
    pub board: String,
    pub version: Version,
    /// Bytes to download, as signed.
    pub length: u64,
}

/// The signed custom field that marks a release's chunk index (`"kind": "chunks"`); a target
/// without it is a bundle.
const KIND: &str = "kind";
const CHUNKS: &str = "chunks";

fn is_chunk_index(target: &tough::schema::Target) -> bool {
    matches!(target.custom.get(KIND), Some(Value::String(k)) if k == CHUNKS)
}

impl Release {
    fn from_target(name: &str, target: &tough::schema::Target) -> Result<Release, UpdateError> {
        let field = |key: &str| match target.custom.get(key) {
            Some(Value::String(s)) => Ok(s.clone()),
            _ => Err(UpdateError::BadRelease {
                name: name.to_owned(),
                reason: format!("no \"{key}\" in its signed custom fields"),
            }),
        };
        let version = field("version")?;
        let version = Version::parse(&version).map_err(|e| UpdateError::BadRelease {
            name: name.to_owned(),
            reason: format!("version {version:?}: {e}"),
        })?;
        Ok(Release {
            name: name.to_owned(),
            board: field("board")?,
            version,
            length: target.length,
        })
    }
}

/// Every release offered to `board`, the oldest first.
fn offered(repo: &Verified, board: &str) -> Vec<Release> {
    let mut offered: Vec<Release> = repo
        .targets()
        .filter(|(_, t)| !is_chunk_index(t))
        .filter_map(|(name, t)| Release::from_target(name.raw(), t).ok())
        .filter(|r| r.board == board)
        .collect();
    offered.sort_by(|a, b| a.version.cmp(&b.version));
    offered
}

/// The chunk index published with `release` (same board and version, `"kind": "chunks"`), if
/// the repository has one: what a box with a seed downloads instead of the bundle.
pub fn chunk_index(repo: &Verified, release: &Release) -> Option<Release> {
    repo.targets()
        .filter(|(_, t)| is_chunk_index(t))
        .filter_map(|(name, t)| Release::from_target(name.raw(), t).ok())
        .find(|r| r.board == release.board && r.version == release.version)
}

/// The signed custom fields of a release's chunk index.
pub(crate) fn chunk_index_fields(board: &str, version: &Version) -> [(&'static str, String); 3] {
    [
        ("board", board.to_owned()),
        ("version", version.to_string()),
        (KIND, CHUNKS.to_owned()),
    ]
}

/// Every release offered to `board` newer than `running`, the newest first.
pub fn newer(repo: &Verified, board: &str, running: &Version) -> Vec<Release> {
    let mut newer = offered(repo, board);
    newer.retain(|r| &r.version > running);
    newer.reverse();
    newer
}

/// The release to install on `board`, running `running`: the one `wanted` (a remote admin's
/// pin), or else the newest. `None` when nothing newer is offered or the wanted one runs
/// already; an error when the wanted one is older (a downgrade is never installed) or not
/// offered.
pub fn choose(
    repo: &Verified,
    board: &str,
    running: &Version,
    wanted: Option<&Version>,
) -> Result<Option<Release>, UpdateError> {
    let mut offered = offered(repo, board);
    let pick = match wanted {
        Some(v) if v == running => None,
        Some(v) => Some(
            offered
                .into_iter()
                .find(|r| &r.version == v)
                .ok_or_else(|| UpdateError::NoSuchTarget(format!("{board} {v}")))?,
        ),
        None => offered.pop(),
    };
    match pick {
        Some(r) if &r.version > running => Ok(Some(r)),
        Some(r) if wanted.is_some() => Err(UpdateError::BadRelease {
            name: r.name,
            reason: format!("{} is older than the running {running}", r.version),
        }),
        _ => Ok(None),
    }
}
