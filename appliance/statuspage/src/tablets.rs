//! Tablets seen: which user on which app last synced when, from successful `/api` calls.
//!
//! Only the Basic-auth username, the User-Agent and the client address are kept, never a
//! password or a body. Kept in memory and saved to `tablets-seen.json` in the data dir at most
//! once a minute (and at shutdown), so the list survives restarts without an SD-card write
//! per request.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use tracing::warn;

/// Entries beyond this are dropped oldest-first: a clinic has a handful of tablets, and a
/// bounded list keeps a misbehaving client from growing memory.
const MAX_TABLETS: usize = 256;
const MAX_FIELD: usize = 120;

/// One user on one app build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TabletSeen {
    pub username: String,
    /// Readable device/app description from the User-Agent.
    pub device: String,
    pub address: Option<IpAddr>,
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
    pub requests: u64,
}

/// The shared list. Cheap to clone.
#[derive(Clone, Default)]
pub struct Tablets {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    seen: BTreeMap<(String, String), TabletSeen>,
    dirty: bool,
    file: Option<PathBuf>,
}

impl Tablets {
    /// A list saved in `file`, loaded from it if present.
    pub fn persistent(file: PathBuf) -> Self {
        let seen = std::fs::read(&file)
            .ok()
            .and_then(|b| serde_json::from_slice::<Vec<TabletSeen>>(&b).ok())
            .unwrap_or_default()
            .into_iter()
            .map(|t| ((t.username.clone(), t.device.clone()), t))
            .collect();
        Self {
            inner: Arc::new(Mutex::new(Inner {
                seen,
                dirty: false,
                file: Some(file),
            })),
        }
    }

    /// Notes one successful authenticated API call.
    pub fn record(
        &self,
        username: &str,
        user_agent: Option<&str>,
        address: Option<IpAddr>,
        now_ms: u64,
    ) {
        let username = clean(username);
        let device = describe_device(user_agent);
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = inner
            .seen
            .entry((username.clone(), device.clone()))
            .or_insert_with(|| TabletSeen {
                username,
                device,
                address,
                first_seen_ms: now_ms,
                last_seen_ms: now_ms,
                requests: 0,
            });
        entry.last_seen_ms = entry.last_seen_ms.max(now_ms);
        entry.address = address.or(entry.address);
        entry.requests += 1;
        inner.dirty = true;
        if inner.seen.len() > MAX_TABLETS {
            let oldest = inner
                .seen
                .iter()
                .min_by_key(|(_, t)| t.last_seen_ms)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                inner.seen.remove(&k);
            }
        }
    }

    /// Most recent first.
    pub fn list(&self) -> Vec<TabletSeen> {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let mut v: Vec<_> = inner.seen.values().cloned().collect();
        v.sort_by_key(|t| std::cmp::Reverse(t.last_seen_ms));
        v
    }

    /// Removes one entry (admin action). Returns whether it existed.
    pub fn forget(&self, username: &str, device: &str) -> bool {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let removed = inner
            .seen
            .remove(&(username.to_owned(), device.to_owned()))
            .is_some();
        inner.dirty |= removed;
        removed
    }

    /// Saves the list if it changed since the last save.
    pub fn flush(&self) {
        let (file, data) = {
            let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(file) = inner.file.clone() else {
                return;
            };
            if !inner.dirty {
                return;
            }
            inner.dirty = false;
            let list: Vec<_> = inner.seen.values().cloned().collect();
            (file, serde_json::to_vec_pretty(&list).unwrap_or_default())
        };
        if let Err(e) = clinicbox_process::write_atomic(&file, &data, 0o640) {
            warn!("status: saving {}: {e}", file.display());
        }
    }
}

/// `com.dhis2/1.14.0/3.4.1/Android_34` → `DHIS2 Capture 3.4.1 · Android 14`; anything else is
/// kept as sent, shortened.
pub fn describe_device(user_agent: Option<&str>) -> String {
    let Some(ua) = user_agent.map(str::trim).filter(|u| !u.is_empty()) else {
        return "unknown".to_owned();
    };
    let parts: Vec<&str> = ua.split('/').collect();
    if parts.len() == 4 && parts[0] == "com.dhis2" {
        let api = parts[3]
            .strip_prefix("Android_")
            .and_then(|n| n.parse::<u32>().ok());
        let android = match api {
            Some(api) => format!("Android {} (API {api})", android_release(api)),
            None => clean(parts[3]),
        };
        return format!("DHIS2 Capture {} · {android}", clean(parts[2]));
    }
    clean(ua)
}

fn android_release(api: u32) -> String {
    match api {
        36 => "16".into(),
        35 => "15".into(),
        34 => "14".into(),
        33 => "13".into(),
        31 | 32 => "12".into(),
        30 => "11".into(),
        29 => "10".into(),
        28 => "9".into(),
        26 | 27 => "8".into(),
        24 | 25 => "7".into(),
        21..=23 => "5-6".into(),
        _ => "?".into(),
    }
}

/// Printable, bounded text.
fn clean(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .take(MAX_FIELD)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_user_agent_is_readable() {
        assert_eq!(
            describe_device(Some("com.dhis2/1.14.0/3.4.1/Android_34")),
            "DHIS2 Capture 3.4.1 · Android 14 (API 34)"
        );
        assert_eq!(describe_device(Some("curl/8.0")), "curl/8.0");
        assert_eq!(describe_device(None), "unknown");
        assert_eq!(describe_device(Some(&"x".repeat(500))).len(), MAX_FIELD);
    }

    #[test]
    fn records_merge_and_persist() {
        let dir = std::env::temp_dir().join(format!("cb-tablets-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("tablets-seen.json");
        let t = Tablets::persistent(file.clone());
        let ua = Some("com.dhis2/1.14.0/3.4.1/Android_34");
        t.record("nurse1", ua, None, 1000);
        t.record("nurse1", ua, None, 5000);
        t.record("nurse2", ua, None, 3000);
        let l = t.list();
        assert_eq!(l.len(), 2);
        assert_eq!(
            (l[0].username.as_str(), l[0].last_seen_ms, l[0].requests),
            ("nurse1", 5000, 2)
        );
        t.flush();
        let again = Tablets::persistent(file);
        assert_eq!(again.list(), l);
        assert!(again.forget("nurse2", &l[1].device));
        assert_eq!(again.list().len(), 1);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn bounded() {
        let t = Tablets::default();
        for i in 0..(MAX_TABLETS as u64 + 10) {
            t.record(&format!("u{i}"), None, None, i);
        }
        assert_eq!(t.list().len(), MAX_TABLETS);
        assert!(t.list().iter().all(|e| e.last_seen_ms >= 10));
    }
}
