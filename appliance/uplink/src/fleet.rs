//! The fleet through national's dataStore (`clinicbox_control::fleet`): a round reads what the
//! remote admins want of this box, hands it to `serve` (which checks, applies and audits it),
//! then writes the box's check-in with what `serve` did. And the admin's side: every box's last
//! check-in as a table.

use clinicbox_control::fleet::{
    CHECK_IN_NAMESPACE, CONFIG_NAMESPACE, CheckIn, ConfigEcho, MAX_CONFIG_BYTES,
};

use crate::UplinkError;
use crate::local::LocalBox;
use crate::national::National;

/// The largest check-in `fleet report` reads (a check-in is well under 2 KB).
const MAX_CHECK_IN_BYTES: usize = 64 * 1024;
/// The most boxes one report lists.
const MAX_BOXES: usize = 10_000;

/// One check-in: remote configuration first (so this check-in already echoes it), then the
/// check-in itself with the round's clock offset.
pub async fn check_in(
    local: &LocalBox,
    national: &National,
    clock_offset_secs: Option<i64>,
) -> Result<Option<ConfigEcho>, UplinkError> {
    let mut me: CheckIn = local.fleet_check_in().await?;
    let key = store_key(&me.box_id)?;
    let wanted = national
        .data_store_get(CONFIG_NAMESPACE, &key, MAX_CONFIG_BYTES)
        .await?;
    if let Some(raw) = wanted {
        me.remote_config = Some(local.fleet_config(&raw).await?);
    }
    me.clock_offset_secs = clock_offset_secs;
    let value = serde_json::to_value(&me).map_err(|e| UplinkError::Local(e.to_string()))?;
    national
        .data_store_put(CHECK_IN_NAMESPACE, &key, &value)
        .await?;
    Ok(me.remote_config)
}

/// A box id as a dataStore key: national takes letters, digits, `-`, `_` and `.` safely in a
/// path; anything else would change which key is written.
fn store_key(box_id: &str) -> Result<String, UplinkError> {
    let ok = !box_id.is_empty()
        && box_id.len() <= 100
        && box_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(box_id.to_string())
    } else {
        Err(UplinkError::Config(format!(
            "the box id {box_id:?} cannot name a dataStore key (letters, digits, - _ . only)"
        )))
    }
}

/// Every box's last check-in, as national holds them.
pub async fn check_ins(national: &National) -> Result<Vec<CheckIn>, UplinkError> {
    let mut out = Vec::new();
    for key in national
        .data_store_keys(CHECK_IN_NAMESPACE)
        .await?
        .iter()
        .take(MAX_BOXES)
    {
        let Ok(key) = store_key(key) else {
            continue; // not a key a box writes
        };
        let value = national
            .data_store_get(CHECK_IN_NAMESPACE, &key, MAX_CHECK_IN_BYTES)
            .await?;
        // Gone while we read, or not a check-in: not a box to list.
        if let Some(c) = value.and_then(|v| serde_json::from_value::<CheckIn>(v).ok()) {
            out.push(c);
        }
    }
    Ok(out)
}

/// A box not heard from for this long is a problem (the uplink checks in every few hours).
const SILENT_MS: u64 = 2 * 86_400_000;
/// A certificate expiring within this long is a problem.
const CERT_SOON_MS: i64 = 30 * 86_400_000;
/// A box whose last backup is older than this is a problem.
const BACKUP_OLD_MS: u64 = 8 * 86_400_000;

/// What a remote admin should look at on one box, most urgent first.
pub fn problems(c: &CheckIn, now_ms: u64) -> Vec<String> {
    let mut p = Vec::new();
    let silent = now_ms.saturating_sub(c.checked_in_at_ms);
    if silent > SILENT_MS {
        p.push(format!("silent {} days", silent / 86_400_000));
    }
    if c.parked > 0 {
        p.push(format!("{} refused by national", c.parked));
    }
    if let Some(why) = c
        .remote_config
        .as_ref()
        .and_then(|r| r.refused_because.as_ref())
    {
        p.push(format!("remote configuration refused: {why}"));
    }
    if let Some(why) = &c.certificate_problem {
        p.push(format!("certificate: {why}"));
    } else if let Some(exp) = c.certificate_expires_ms {
        if exp - i64::try_from(now_ms).unwrap_or(i64::MAX) < CERT_SOON_MS {
            p.push("certificate expires within 30 days".into());
        }
    }
    if let Some(d) = c.disk.filter(|d| d.total_bytes > 0) {
        if d.free_bytes.saturating_mul(10) < d.total_bytes {
            p.push(format!(
                "disk {} % free",
                d.free_bytes * 100 / d.total_bytes
            ));
        }
    }
    if let Some(off) = c.clock_offset_secs.filter(|o| o.abs() > 60) {
        p.push(format!("clock off by {off} s"));
    }
    match c.last_backup {
        None => p.push("never backed up".into()),
        Some(b) if now_ms.saturating_sub(b.at_ms) > BACKUP_OLD_MS => {
            p.push(format!(
                "last backup {} days ago",
                now_ms.saturating_sub(b.at_ms) / 86_400_000
            ));
        }
        Some(_) => {}
    }
    if c.tablets_stale > 0 {
        p.push(format!("{} tablet(s) not synced for days", c.tablets_stale));
    }
    if let Some(power) = c.power.as_ref().filter(|p| p.state.contains("battery")) {
        p.push(power.state.clone());
    }
    if let Some(why) = c.update.as_deref().and_then(|u| u.strip_prefix("failed: ")) {
        p.push(format!("update failed: {why}"));
    }
    if let Some(r) = c
        .last_rollback
        .as_ref()
        .filter(|r| now_ms.saturating_sub(u64::try_from(r.at_ms).unwrap_or(0)) < ROLLBACK_RECENT_MS)
    {
        p.push(format!(
            "{} rolled back: {}",
            r.version,
            r.reason.as_deref().unwrap_or("no reason recorded")
        ));
    }
    p
}

/// A rollback stays on the report this long: the admin sees it, then the next release.
const ROLLBACK_RECENT_MS: u64 = 14 * 86_400_000;

/// Every box as one line, the boxes with the most problems first, then the longest silent.
pub fn report_table(mut boxes: Vec<CheckIn>, now_ms: u64) -> String {
    boxes.sort_by_key(|c| {
        (
            std::cmp::Reverse(problems(c, now_ms).len()),
            c.checked_in_at_ms,
        )
    });
    let mut out = format!(
        "{:<24} {:<24} {:<10} {:<5} {:>10} {:>8} {:>6}  {}\n",
        "BOX", "CLINIC", "VERSION", "SLOT", "LAST SEEN", "PENDING", "PARKED", "PROBLEMS"
    );
    for c in &boxes {
        let problems = problems(c, now_ms);
        out.push_str(&format!(
            "{:<24} {:<24} {:<10} {:<5} {:>10} {:>8} {:>6}  {}\n",
            cut(&c.box_id, 24),
            cut(&c.clinic_name, 24),
            cut(&c.version, 10),
            cut(c.slot.as_deref().unwrap_or("-"), 5),
            ago(now_ms.saturating_sub(c.checked_in_at_ms)),
            c.pending,
            c.parked,
            if problems.is_empty() {
                "none".to_string()
            } else {
                cut(&problems.join("; "), 300)
            }
        ));
    }
    out.push_str(&format!("{} box(es)\n", boxes.len()));
    out
}

/// At most `n` characters of what a box wrote, control characters shown as `?`: the table goes
/// to an admin's terminal, and a check-in is only as trustworthy as whoever could write it.
fn cut(s: &str, n: usize) -> String {
    s.chars()
        .take(n)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

fn ago(ms: u64) -> String {
    match ms / 1000 {
        s if s < 3600 => format!("{} min ago", s / 60),
        s if s < 2 * 86_400 => format!("{} h ago", s / 3600),
        s => format!("{} d ago", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clinicbox_control::fleet::{Backup, Disk};

    const DAY: u64 = 86_400_000;
    const NOW: u64 = 100 * DAY;

    fn healthy(id: &str) -> CheckIn {
        CheckIn {
            box_id: id.into(),
            clinic_name: "Clinic".into(),
            version: "0.1.0".into(),
            certificate_expires_ms: Some(i64::try_from(NOW + 300 * DAY).unwrap_or(0)),
            disk: Some(Disk {
                free_bytes: 50,
                total_bytes: 100,
            }),
            last_backup: Some(Backup {
                at_ms: NOW - DAY,
                bytes: 1,
            }),
            checked_in_at_ms: NOW - 3_600_000,
            ..CheckIn::default()
        }
    }

    #[test]
    fn a_healthy_box_has_no_problems() {
        assert!(problems(&healthy("a"), NOW).is_empty());
        let mut staged = healthy("b");
        staged.update = Some("0.2.0 downloaded and verified, ready to install".into());
        assert!(
            problems(&staged, NOW).is_empty(),
            "a staged update is news, not a problem"
        );
    }

    #[test]
    fn a_failing_update_is_a_problem() {
        let mut c = healthy("a");
        c.update = Some("failed: the mirror's metadata expired".into());
        assert_eq!(
            problems(&c, NOW),
            vec!["update failed: the mirror's metadata expired".to_string()]
        );
    }

    #[test]
    fn problems_are_named_and_listed_first() {
        let mut sick = healthy("sick");
        sick.parked = 3;
        sick.checked_in_at_ms = NOW - 5 * DAY;
        sick.disk = Some(Disk {
            free_bytes: 5,
            total_bytes: 100,
        });
        sick.last_backup = None;
        let p = problems(&sick, NOW);
        assert_eq!(
            p,
            vec![
                "silent 5 days".to_string(),
                "3 refused by national".into(),
                "disk 5 % free".into(),
                "never backed up".into()
            ]
        );
        let table = report_table(vec![healthy("fine"), sick], NOW);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[1].starts_with("sick"), "{table}");
        assert!(
            lines[2].starts_with("fine") && lines[2].ends_with("none"),
            "{table}"
        );
        assert_eq!(lines[3], "2 box(es)");
    }

    #[test]
    fn what_a_box_wrote_cannot_drive_the_admin_s_terminal() {
        let mut c = healthy("a");
        c.clinic_name = "Clinic\u{1b}[2J\u{1b}]0;owned\u{7}".into();
        c.certificate_problem = Some("x\u{1b}[31m".repeat(200));
        let table = report_table(vec![c], NOW);
        assert!(
            !table.chars().any(|ch| ch.is_control() && ch != '\n'),
            "{table:?}"
        );
        assert!(table.lines().all(|l| l.chars().count() < 420), "{table}");
    }

    #[test]
    fn a_box_id_that_would_change_the_path_is_refused() {
        assert!(store_key("clinic-7.box_2").is_ok());
        for bad in ["", "../x", "a/b", "a?b", "a b"] {
            assert!(store_key(bad).is_err(), "{bad}");
        }
    }
}
