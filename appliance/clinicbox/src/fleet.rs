//! The box's side of the fleet (`clinicbox_control::fleet`): its check-in as `serve` sees it,
//! and remote configuration checked, applied, remembered across restarts and audited.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use clinicbox_control::fleet::{
    Backup, CheckIn, ConfigEcho, Disk, MAX_STALE_LISTED, MAX_TEXT_CHARS, Power, RemoteConfig,
    RemoteSettings, Rollback, StaleTablet,
};
use clinicbox_statuspage::StatusState;
use clinicbox_store::{Collection, Store, StoreError};
use clinicbox_web::audit::{self, AuditEntry};
use serde_json::Value;

const ECHO: (Collection, &str) = (Collection::named("system"), "fleetConfig");

/// The settings remote admins set, as they stand now (shared with what they change).
#[derive(Clone, Default)]
pub struct RemoteNow(Arc<RwLock<RemoteSettings>>);

impl RemoteNow {
    /// What the store remembers of the last remote configuration applied.
    pub fn load(store: &Store) -> Result<RemoteNow, StoreError> {
        Ok(RemoteNow(Arc::new(RwLock::new(
            echo(store)?.unwrap_or_default().settings,
        ))))
    }

    pub fn get(&self) -> RemoteSettings {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set(&self, s: RemoteSettings) {
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = s;
    }
}

fn echo(store: &Store) -> Result<Option<ConfigEcho>, StoreError> {
    Ok(store
        .read()?
        .get(ECHO.0, ECHO.1)?
        .and_then(|r| r.json().ok()))
}

/// What `serve` answers on the uplink socket's fleet paths.
#[derive(Clone)]
pub struct Fleet {
    store: Store,
    status: StatusState,
    data_dir: PathBuf,
    remote: RemoteNow,
}

impl Fleet {
    pub fn new(store: Store, status: StatusState, data_dir: PathBuf, remote: RemoteNow) -> Fleet {
        Fleet {
            store,
            status,
            data_dir,
            remote,
        }
    }

    /// The box as the status page sees it, in figures only.
    pub fn check_in(&self) -> CheckIn {
        let s = self.status.snapshot();
        let stale_all = s.stale_tablets();
        let tablets_stale = stale_all.len() as u64;
        let stale: Vec<StaleTablet> = stale_all
            .into_iter()
            .take(MAX_STALE_LISTED)
            .map(|t| StaleTablet {
                device: clip(&t.device),
                last_seen_ms: t.last_seen_ms,
            })
            .collect();
        let uplink = s.uplink.unwrap_or_default();
        let (booted_at_ms, uptime_secs) = machine_uptime(s.now_ms).unwrap_or((None, s.uptime_secs));
        CheckIn {
            box_id: s.info.box_id,
            clinic_name: s.info.clinic_name,
            version: s.info.version,
            slot: s.info.slot,
            booted_at_ms,
            uptime_secs,
            disk: disk(&self.data_dir),
            power: s.power.map(|p| Power {
                state: p.state,
                detail: p.detail,
            }),
            clock_offset_secs: uplink.clock_skew_secs,
            update: uplink.update.as_deref().map(clip),
            last_rollback: s.rollback.map(|r| Rollback {
                version: clip(&r.version),
                slot: clip(&r.slot),
                at_ms: r.at_ms,
                reason: r.reason.as_deref().map(clip),
            }),
            last_sync_ms: uplink.last_success_ms,
            pending: uplink.pending_total(),
            parked: u64::try_from(uplink.parked_count).unwrap_or(u64::MAX),
            certificate_expires_ms: s.certificate.as_ref().map(|c| c.not_after * 1000),
            certificate_problem: s.certificate.and_then(|c| c.problem),
            tablets_seen: s.tablets.len() as u64,
            tablets_stale,
            stale_tablets: stale,
            last_backup: s.backup.flatten().map(|b| Backup {
                at_ms: b.at_ms,
                bytes: b.bytes,
            }),
            remote_config: echo(&self.store).ok().flatten(),
            checked_in_at_ms: s.now_ms,
        }
    }

    /// Applies a remote configuration national holds for this box, once per revision, only if
    /// every part of it is valid; says what the box did. Read, decided and written in one
    /// transaction, so two rounds at once apply and audit a revision once.
    pub async fn apply(&self, raw: Value) -> Result<ConfigEcho, StoreError> {
        let stored = self
            .store
            .write(move |ctx| {
                let mut now: ConfigEcho = ctx
                    .get(ECHO.0, ECHO.1)?
                    .and_then(|r| r.json().ok())
                    .unwrap_or_default();
                let revision = raw.get("revision").and_then(Value::as_u64).unwrap_or(0);
                if revision <= now.applied_revision || now.refused_revision == Some(revision) {
                    return Ok(now); // already applied, older, or already refused
                }
                let verdict = judge(raw);
                let entry = record(&verdict, revision, &mut now);
                if verdict.is_ok() {
                    now.applied_at_ms = Some(ctx.now_ms());
                }
                ctx.put_json(ECHO.0, ECHO.1, &now)?;
                audit::append(ctx, entry)?;
                Ok::<_, StoreError>(now)
            })
            .await
            .map_err(|e| e.flatten())?;
        self.remote.set(stored.value.settings.clone());
        Ok(stored.value)
    }
}

/// A remote configuration the box can apply, or why not.
fn judge(raw: Value) -> Result<RemoteConfig, String> {
    let c = serde_json::from_value::<RemoteConfig>(raw)
        .map_err(|e| format!("not a configuration this box understands: {e}"))?;
    match c.settings.problem() {
        Some(why) => Err(why),
        None => Ok(c),
    }
}

/// Writes the verdict on `revision` into `now` (what the box will echo); the audit entry.
fn record(
    verdict: &Result<RemoteConfig, String>,
    revision: u64,
    now: &mut ConfigEcho,
) -> AuditEntry {
    match verdict {
        Ok(c) => {
            let by = c.by.as_deref().map(clip).unwrap_or_default();
            now.applied_revision = c.revision;
            now.applied_by = Some(by.clone());
            now.settings = c.settings.clone();
            now.refused_revision = None;
            now.refused_because = None;
            AuditEntry::new(
                &format!("fleet configuration by {by}"),
                &format!("remote configuration {} applied", c.revision),
                &described(&c.settings),
            )
        }
        Err(why) => {
            now.refused_revision = Some(revision);
            now.refused_because = Some(clip(why));
            AuditEntry::new(
                "fleet configuration",
                &format!("remote configuration {revision} refused"),
                why,
            )
        }
    }
}

fn clip(s: &str) -> String {
    s.chars().take(MAX_TEXT_CHARS).collect()
}

fn described(s: &RemoteSettings) -> String {
    let parts: Vec<String> = s
        .described()
        .into_iter()
        .map(|(k, v)| format!("{k} = {v}"))
        .collect();
    if parts.is_empty() {
        "every setting back to the box's own configuration".into()
    } else {
        parts.join(", ")
    }
}

/// The root slot named on the kernel command line (`clinicbox.slot=a`), on an A/B image.
pub fn booted_slot() -> Option<String> {
    let cmdline = std::fs::read_to_string("/proc/cmdline").ok()?;
    cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("clinicbox.slot="))
        .filter(|s| s.len() <= 8 && s.chars().all(|c| c.is_ascii_alphanumeric()))
        .map(str::to_string)
}

/// When the machine booted and how long ago, from `/proc/uptime`.
fn machine_uptime(now_ms: u64) -> Option<(Option<u64>, u64)> {
    let text = std::fs::read_to_string("/proc/uptime").ok()?;
    let secs: f64 = text.split_whitespace().next()?.parse().ok()?;
    let secs = secs.max(0.0) as u64;
    Some((Some(now_ms.saturating_sub(secs * 1000)), secs))
}

fn disk(dir: &std::path::Path) -> Option<Disk> {
    let st = nix::sys::statvfs::statvfs(dir).ok()?;
    let frag = st.fragment_size();
    Some(Disk {
        free_bytes: st.blocks_available().saturating_mul(frag),
        total_bytes: st.blocks().saturating_mul(frag),
    })
}
