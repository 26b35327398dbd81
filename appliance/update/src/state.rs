//! What the installer remembers on `/data` across boots and slots (`state.json`, readable by
//! `serve` for the status page and the check-in): the release waiting for its first boot, why
//! trial boots were not healthy, the last rollback and the releases never to install again.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::UpdateError;
use crate::boot::{Entry, Slot};

const FILE: &str = "state.json";
/// Trial failures kept (the newest).
const MAX_TRIALS: usize = 8;
/// Refused releases kept (the newest).
const MAX_REFUSED: usize = 32;
const MAX_REASON_CHARS: usize = 200;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    /// The last release written into a slot, until that slot booted or came back.
    #[serde(default)]
    pub installed: Option<Record>,
    /// Why the newest trial boots were not healthy, oldest first.
    #[serde(default)]
    pub trials: Vec<Record>,
    /// The last time the box came back to its old slot by itself.
    #[serde(default)]
    pub last_rollback: Option<Record>,
    /// Releases that rolled back on this box: never installed again (a newer one is).
    #[serde(default)]
    pub refused: Vec<String>,
}

/// A release in a slot, at a time, and why (for a failure).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub version: String,
    pub slot: String,
    #[serde(default)]
    pub reason: Option<String>,
    pub at_ms: i64,
}

impl Record {
    pub fn new(version: &str, slot: Slot, reason: Option<&str>, at_ms: i64) -> Record {
        Record {
            version: version.to_owned(),
            slot: slot.letter().to_string(),
            reason: reason.map(|r| r.chars().take(MAX_REASON_CHARS).collect()),
            at_ms,
        }
    }
}

pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

impl State {
    /// The state in `dir`; nothing yet (or a file no release wrote) is an empty state.
    pub fn load(dir: &Path) -> State {
        std::fs::read(path(dir))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Replaces the state whole (readable by every service: it holds no patient data).
    pub fn save(&self, dir: &Path) -> Result<(), UpdateError> {
        std::fs::create_dir_all(dir).map_err(UpdateError::io(dir))?;
        let bytes = serde_json::to_vec_pretty(self)
            .map_err(|e| UpdateError::Install(format!("state: {e}")))?;
        let file = path(dir);
        clinicbox_process::write_atomic(&file, &bytes, 0o644).map_err(UpdateError::io(file))
    }

    pub fn is_refused(&self, version: &str) -> bool {
        self.refused.iter().any(|v| v == version)
    }

    /// A trial boot of `version` in `slot` was not healthy, for `reason`.
    pub fn trial_failed(&mut self, version: &str, slot: Slot, reason: &str, at_ms: i64) {
        self.trials
            .push(Record::new(version, slot, Some(reason), at_ms));
        let extra = self.trials.len().saturating_sub(MAX_TRIALS);
        self.trials.drain(..extra);
    }

    /// After a healthy boot of `running_version` in `running`, with `other` the other slot's
    /// entries: a newer release there that used up its tries came back to this slot by
    /// itself. Records that rollback once, with the reason its trials gave, and refuses that
    /// release from now on. True when something changed.
    pub fn after_healthy_boot(
        &mut self,
        running: Slot,
        running_version: &str,
        other: &[Entry],
        at_ms: i64,
    ) -> bool {
        let before = self.clone();
        let failed = other.iter().filter(|e| e.is_bad()).find_map(|e| {
            let v = e.version.as_deref()?;
            newer(v, running_version).then(|| v.to_owned())
        });
        if let Some(version) = failed {
            let slot = running.other();
            let already = self
                .last_rollback
                .as_ref()
                .is_some_and(|r| r.version == version && r.slot == slot.letter().to_string());
            if !already {
                let reason = self
                    .trials
                    .iter()
                    .rev()
                    .find(|t| t.version == version)
                    .and_then(|t| t.reason.clone())
                    .unwrap_or_else(|| {
                        "it never reported a health check (it did not start)".to_owned()
                    });
                self.last_rollback = Some(Record::new(&version, slot, Some(&reason), at_ms));
            }
            if !self.is_refused(&version) {
                self.refused.push(version);
                let extra = self.refused.len().saturating_sub(MAX_REFUSED);
                self.refused.drain(..extra);
            }
        }
        let settled = |r: &Record| r.version == running_version || self.is_refused(&r.version);
        if self.installed.as_ref().is_some_and(settled) {
            self.installed = None;
        }
        *self != before
    }
}

fn newer(a: &str, b: &str) -> bool {
    match (semver::Version::parse(a), semver::Version::parse(b)) {
        (Ok(a), Ok(b)) => a > b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(version: &str, tries_left: Option<u32>) -> Entry {
        Entry {
            file: PathBuf::from("clinicbox-b+0-3.conf"),
            version: Some(version.into()),
            tries_left,
        }
    }

    #[test]
    fn a_newer_slot_out_of_tries_is_a_rollback_with_its_trial_reason() {
        let mut s = State {
            installed: Some(Record::new("0.3.0", Slot::B, None, 1)),
            ..State::default()
        };
        s.trial_failed("0.3.0", Slot::B, "clinicbox.service is not active", 2);
        assert!(s.after_healthy_boot(Slot::A, "0.2.0", &[entry("0.3.0", Some(0))], 3));
        let r = s.last_rollback.clone().expect("rollback");
        assert_eq!((r.version.as_str(), r.slot.as_str()), ("0.3.0", "b"));
        assert_eq!(r.reason.as_deref(), Some("clinicbox.service is not active"));
        assert!(s.is_refused("0.3.0"));
        assert_eq!(s.installed, None);
        // The next healthy boot changes nothing.
        assert!(!s.after_healthy_boot(Slot::A, "0.2.0", &[entry("0.3.0", Some(0))], 4));
    }

    #[test]
    fn an_older_or_untried_slot_is_not_a_rollback() {
        let mut s = State::default();
        assert!(!s.after_healthy_boot(Slot::B, "0.3.0", &[entry("0.2.0", Some(0))], 1));
        assert!(!s.after_healthy_boot(Slot::A, "0.2.0", &[entry("0.3.0", Some(2))], 1));
        assert_eq!(s, State::default());
    }
}
