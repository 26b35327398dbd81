//! The power process's own small persistent state: how long the last shutdown took.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
struct Stored {
    last_shutdown_ms: Option<u64>,
}

/// `<state_dir>/power-state.json`, written atomically.
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    pub fn new(state_dir: &Path) -> Self {
        StateFile {
            path: state_dir.join("power-state.json"),
        }
    }

    /// The shutdown time measured last time, if any (a missing or unreadable file is "none":
    /// the policy then assumes the configured expectation).
    pub fn measured_shutdown(&self) -> Option<Duration> {
        let text = std::fs::read_to_string(&self.path).ok()?;
        let s: Stored = serde_json::from_str(&text).ok()?;
        s.last_shutdown_ms.map(Duration::from_millis)
    }

    /// Store a measured shutdown time (temp file, fsync, rename).
    pub fn record_shutdown(&self, took: Duration) -> std::io::Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let stored = Stored {
            last_shutdown_ms: Some(u64::try_from(took.as_millis()).unwrap_or(u64::MAX)),
        };
        let json = serde_json::to_vec(&stored).map_err(std::io::Error::other)?;
        let tmp = self.path.with_extension("json.tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&json)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_missing_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = StateFile::new(&dir.path().join("sub"));
        assert_eq!(s.measured_shutdown(), None);
        s.record_shutdown(Duration::from_millis(4321))
            .expect("write");
        assert_eq!(s.measured_shutdown(), Some(Duration::from_millis(4321)));
        std::fs::write(dir.path().join("sub/power-state.json"), b"garbage").expect("write");
        assert_eq!(s.measured_shutdown(), None);
    }
}
