//! Server-rendered HTML: no JavaScript, one inline stylesheet, readable on a 7–10" tablet.
//! Every figure a test or a technician may want to read back carries `data-figure="…"`.

use std::fmt::Write;

use qrcode::QrCode;
use qrcode::render::svg;

use crate::Snapshot;

/// Escapes text for HTML element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// The QR code of `text` as an inline `<svg>` (no XML prolog), or an empty string when the
/// text is too long for a QR code.
pub fn qr_svg(text: &str) -> String {
    let Ok(code) = QrCode::new(text.as_bytes()) else {
        return String::new();
    };
    let svg = code
        .render::<svg::Color<'_>>()
        .min_dimensions(232, 232)
        .quiet_zone(true)
        .dark_color(svg::Color("#000000"))
        .light_color(svg::Color("#ffffff"))
        .build();
    match svg.find("<svg") {
        Some(i) => svg[i..].replacen(
            "<svg",
            "<svg role=\"img\" aria-label=\"QR code of the server URL\"",
            1,
        ),
        None => String::new(),
    }
}

const STYLE: &str = r#"
*{box-sizing:border-box}
body{margin:0;font:18px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;background:#eef2f5;color:#1b2630}
header{background:#135e8c;color:#fff;padding:18px 22px}
header h1{margin:0;font-size:1.6em}
header p{margin:4px 0 0;opacity:.9}
main{display:grid;grid-template-columns:repeat(auto-fit,minmax(330px,1fr));gap:16px;padding:16px;max-width:1200px;margin:auto}
section{background:#fff;border-radius:10px;padding:16px 18px;box-shadow:0 1px 3px rgba(0,0,0,.12)}
section h2{margin:0 0 10px;font-size:1.15em;color:#135e8c}
.wide{grid-column:1/-1}
.connect{grid-column:1/-1;display:flex;flex-wrap:wrap;gap:18px;align-items:center}
.connect .qr{background:#fff;padding:6px;border:1px solid #d6dde3;border-radius:8px;line-height:0}
.connect .qr svg{width:232px;height:232px}
.url{font:700 min(1.5em,4.5vw)/1.2 ui-monospace,Menlo,Consolas,monospace;white-space:nowrap;max-width:100%;overflow-x:auto;box-sizing:border-box;background:#f4f8fb;border:2px solid #135e8c;border-radius:8px;padding:10px 12px;margin:8px 0;display:inline-block}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:6px 4px;border-bottom:1px solid #e3e8ec;vertical-align:top}
th{font-weight:600;color:#4a5a68}
td.n{text-align:right;font-variant-numeric:tabular-nums}
dl{display:grid;grid-template-columns:max-content 1fr;gap:4px 14px;margin:0}
dt{color:#4a5a68}
dd{margin:0;word-break:break-word}
.ok{color:#17652f;font-weight:600}
.warn{color:#8a4b00;font-weight:600}
.bad{color:#a11b1b;font-weight:600}
.small{font-size:.85em;color:#4a5a68}
ul{margin:4px 0;padding-left:20px}
footer{text-align:center;padding:8px 0 20px;color:#4a5a68;font-size:.85em}
a{color:#135e8c}
button{font:inherit;padding:6px 14px;border-radius:6px;border:1px solid #135e8c;background:#fff;color:#135e8c}
input,select{font:inherit;padding:6px 8px;width:100%;max-width:420px;border:1px solid #9fb0bd;border-radius:6px;background:#fff}
td form input{max-width:160px;margin:2px 0}
input[type=file]{border:0;padding:0}
a.action{display:inline-block;font-weight:600;padding:8px 16px;border-radius:6px;background:#135e8c;color:#fff;text-decoration:none}
@media (max-width:600px){table.stack,table.stack tbody,table.stack tr,table.stack td{display:block}table.stack tr:first-child{display:none}table.stack tr{border-bottom:1px solid #e3e8ec;padding:6px 0}table.stack td{border:0;padding:2px 0}table.stack td form input{max-width:100%}}
code.key{font:700 1.15em/1.3 ui-monospace,Menlo,Consolas,monospace;word-break:break-all;background:#fff8e6;border:2px solid #8a4b00;border-radius:6px;padding:6px 8px;display:inline-block}
"#;

pub(crate) fn head(out: &mut String, title: &str, refresh: bool) {
    let _ = write!(
        out,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">{}\
         <title>{}</title><style>{STYLE}</style></head><body>",
        if refresh {
            "<meta http-equiv=\"refresh\" content=\"30\">"
        } else {
            ""
        },
        esc(title)
    );
}

/// Human time since `ms`, e.g. `4 min ago`.
pub fn ago(now_ms: u64, ms: u64) -> String {
    let secs = now_ms.saturating_sub(ms) / 1000;
    match secs {
        0..=59 => "just now".to_owned(),
        60..=3599 => format!("{} min ago", secs / 60),
        3600..=86_399 => format!("{} h ago", secs / 3600),
        _ => format!("{} days ago", secs / 86_400),
    }
}

pub fn duration(secs: u64) -> String {
    let (d, h, m) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    if d > 0 {
        format!("{d} d {h} h")
    } else if h > 0 {
        format!("{h} h {m} min")
    } else {
        format!("{m} min")
    }
}

pub fn bytes(n: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    if n >= 1024 * 1024 {
        format!("{:.1} MiB", n as f64 / MIB)
    } else {
        format!("{:.0} KiB", n as f64 / 1024.0)
    }
}

/// `2026-11-21 10:30 UTC`.
pub fn utc(secs: i64) -> String {
    let z = secs.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let rem = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// The records staff count, in the words they use; the box's own bookkeeping (job reports,
/// audit trails, the uplink's position, file bytes…) is counted as one line.
fn collection_label(c: &str) -> Option<&'static str> {
    Some(match c {
        "trackedEntities" => "Patients",
        "enrollments" => "Enrollments in programs",
        "events" => "Visits and events",
        "relationships" => "Links between patients",
        "fileResources" => "Files (photos, documents)",
        "dataValues" => "Monthly figures",
        "completeDataSetRegistrations" => "Monthly reports marked complete",
        "users" => "Staff accounts",
        "metadata" => "Forms and settings",
        _ => return None,
    })
}

/// Tablets that have not synced for a while, said in words at the top: what is only on a
/// tablet is the one copy the box cannot protect.
fn stale_tablets_banner(o: &mut String, s: &Snapshot) {
    let stale = s.stale_tablets();
    if stale.is_empty() {
        return;
    }
    let names: Vec<String> = stale
        .iter()
        .map(|t| {
            format!(
                "{} ({}, {})",
                t.username,
                t.device,
                ago(s.now_ms, t.last_seen_ms)
            )
        })
        .collect();
    let _ = write!(
        o,
        "<section><p class=\"warn\" data-figure=\"stale-tablets\">{} {} not synced for {} days: {}. \
         What is recorded only on a tablet is not kept safe by the box: sync {} soon.</p></section>",
        stale.len(),
        if stale.len() == 1 {
            "tablet has"
        } else {
            "tablets have"
        },
        s.stale_tablet_days,
        esc(&names.join("; ")),
        if stale.len() == 1 { "it" } else { "them" },
    );
}

pub fn render(s: &Snapshot) -> String {
    let mut o = String::with_capacity(16 * 1024);
    let title = if s.info.clinic_name.is_empty() {
        format!("ClinicBox {}", s.info.box_id)
    } else {
        s.info.clinic_name.clone()
    };
    head(&mut o, &title, true);
    let _ = write!(
        o,
        "<header><h1 data-figure=\"box-name\">{}</h1><p>ClinicBox <span data-figure=\"box-id\">{}</span> · DHIS2 server for this clinic's tablets</p></header><main>",
        esc(&title),
        esc(&s.info.box_id)
    );

    if let Some(setup) = &s.setup {
        crate::setup::render_todo(&mut o, setup);
    }
    stale_tablets_banner(&mut o, s);

    connect_section(&mut o, s);
    certificate_section(&mut o, s);
    records_section(&mut o, s);
    tablets_section(&mut o, s);
    box_section(&mut o, s);

    let _ = write!(
        o,
        "</main><footer>Updated {} · refreshes every 30 s · <a href=\"/admin\">Admin</a>{}</footer></body></html>",
        utc((s.now_ms / 1000) as i64),
        if s.setup.is_some() {
            " · <a href=\"/setup\" data-figure=\"setup-link\">Setup</a>"
        } else {
            ""
        }
    );
    o
}

/// The server URL the Capture app needs, with its QR code, and the box's other URLs.
fn connect_section(o: &mut String, s: &Snapshot) {
    let _ = write!(
        o,
        "<section class=\"connect\"><div class=\"qr\">{}</div><div><h2>Connect a tablet</h2>\
         <p>In the DHIS2 Capture app, type this server URL or scan the QR code:</p>\
         <div class=\"url\" data-figure=\"capture-url\">{}</div>\
         <p class=\"small\">Then log in with your DHIS2 username and password.</p>",
        qr_svg(&s.capture_url),
        esc(&s.capture_url)
    );
    let others: Vec<&String> = s
        .served_urls
        .iter()
        .filter(|u| **u != s.capture_url)
        .collect();
    if !others.is_empty() {
        o.push_str("<p class=\"small\">This box also answers at:</p><ul class=\"small\">");
        for u in others {
            let _ = write!(o, "<li data-figure=\"served-url\">{}</li>", esc(u));
        }
        o.push_str("</ul>");
    }
    o.push_str("</div></section>");
}

/// The certificate in use and how long it is valid.
fn certificate_section(o: &mut String, s: &Snapshot) {
    o.push_str("<section><h2>Security certificate</h2>");
    match &s.certificate {
        Some(c) => {
            let now = (s.now_ms / 1000) as i64;
            let days_left = (c.not_after - now).div_euclid(86_400);
            let (class, verdict) = if c.not_after <= now {
                ("bad", "expired".to_owned())
            } else if days_left < 21 {
                ("warn", format!("expires in {days_left} days"))
            } else {
                ("ok", format!("valid for {days_left} more days"))
            };
            let source = if c.source == "installed" {
                "Installed (issued by a public authority: the Capture app accepts it over https)"
            } else {
                "Self-signed (for the admin page only; the Capture app uses http)"
            };
            let _ = write!(
                o,
                "<dl><dt>In use</dt><dd data-figure=\"cert-source\" data-value=\"{}\">{}</dd>\
                 <dt>Names</dt><dd data-figure=\"cert-names\">{}</dd>\
                 <dt>Expires</dt><dd><span data-figure=\"cert-expiry\" data-value=\"{}\">{}</span> <span class=\"{class}\">({})</span></dd>\
                 <dt>SHA-256</dt><dd class=\"small\" data-figure=\"cert-sha256\">{}</dd></dl>",
                esc(&c.source),
                source,
                esc(&c.names.join(", ")),
                c.not_after,
                utc(c.not_after),
                esc(&verdict),
                esc(&c.sha256)
            );
            if let Some(p) = &c.problem {
                let _ = write!(
                    o,
                    "<p class=\"warn\" data-figure=\"cert-problem\">{}</p>",
                    esc(p)
                );
            }
        }
        None => o.push_str("<p class=\"warn\">HTTPS is off.</p>"),
    }
    o.push_str("</section>");
}

/// What the store holds, its size and its last write.
fn records_section(o: &mut String, s: &Snapshot) {
    o.push_str("<section><h2>Records on this box</h2>");
    match &s.store {
        Some(st) => {
            o.push_str("<table><tr><th>Type</th><th class=\"n\">Records</th></tr>");
            let mut bookkeeping = 0u64;
            for (c, n) in &st.records {
                let Some(label) = collection_label(c) else {
                    bookkeeping += n;
                    continue;
                };
                let _ = write!(
                    o,
                    "<tr><td>{}</td><td class=\"n\" data-figure=\"records.{}\">{n}</td></tr>",
                    esc(label),
                    esc(c)
                );
            }
            if bookkeeping > 0 {
                let _ = write!(
                    o,
                    "<tr><td class=\"small\">The box's own bookkeeping</td><td class=\"n\" data-figure=\"records.bookkeeping\">{bookkeeping}</td></tr>"
                );
            }
            if st.records.is_empty() {
                o.push_str("<tr><td colspan=\"2\">No records yet.</td></tr>");
            }
            let last = if st.last_write_ms == 0 {
                "none since start".to_owned()
            } else {
                format!(
                    "{} ({})",
                    ago(s.now_ms, st.last_write_ms),
                    utc((st.last_write_ms / 1000) as i64)
                )
            };
            let _ = write!(
                o,
                "</table><dl style=\"margin-top:10px\"><dt>Database size</dt><dd data-figure=\"store-bytes\" data-value=\"{}\">{}</dd>\
                 <dt>Last write</dt><dd data-figure=\"store-last-write\" data-value=\"{}\">{}</dd>\
                 <dt>Commits</dt><dd data-figure=\"store-commits\">{}</dd></dl>",
                st.file_bytes,
                bytes(st.file_bytes),
                st.last_write_ms,
                esc(&last),
                st.commits
            );
        }
        None => o.push_str("<p class=\"warn\">The store is not open.</p>"),
    }
    o.push_str("</section>");
}

/// The tablets that synced, stale ones marked.
fn tablets_section(o: &mut String, s: &Snapshot) {
    let _ = write!(
        o,
        "<section><h2>Tablets seen (<span data-figure=\"tablets-count\">{}</span>)</h2>",
        s.tablets.len()
    );
    if s.tablets.is_empty() {
        o.push_str("<p>No tablet has synced with this box yet.</p>");
    } else {
        o.push_str("<table><tr><th>User</th><th>App / device</th><th>Last sync</th></tr>");
        for t in &s.tablets {
            let stale = s.is_stale(t);
            let _ = write!(
                o,
                "<tr data-figure=\"tablet\"><td data-figure=\"tablet-user\">{}</td><td>{}{}</td><td{}>{}</td></tr>",
                esc(&t.username),
                esc(&t.device),
                t.address
                    .map(|a| format!("<br><span class=\"small\">{a}</span>"))
                    .unwrap_or_default(),
                if stale { " class=\"warn\"" } else { "" },
                esc(&ago(s.now_ms, t.last_seen_ms))
            );
        }
        o.push_str("</table>");
    }
    o.push_str("</section>");
}

/// The box itself: software and slot, uptime, power, backup, national, names, requests.
fn box_section(o: &mut String, s: &Snapshot) {
    let _ = write!(
        o,
        "<section><h2>This box</h2><dl><dt>Software</dt><dd>ClinicBox <span data-figure=\"version\">{}</span>{}</dd>\
         <dt>DHIS2 version</dt><dd data-figure=\"dhis2-version\">{}</dd>\
         <dt>Running for</dt><dd data-figure=\"uptime\" data-value=\"{}\">{}</dd>",
        esc(&s.info.version),
        s.info
            .slot
            .as_ref()
            .map(|slot| format!(
                " <span class=\"small\" data-figure=\"slot\">(system {})</span>",
                esc(&slot.to_uppercase())
            ))
            .unwrap_or_default(),
        esc(&s.info.dhis2_version),
        s.uptime_secs,
        duration(s.uptime_secs)
    );
    if let Some(r) = &s.rollback {
        let _ = write!(
            o,
            "<dt>Last update</dt><dd><span class=\"warn\" data-figure=\"rollback\">{} did not start well and was undone</span> · system {}, {} ago: {}</dd>",
            esc(&r.version),
            esc(&r.slot.to_uppercase()),
            duration(s.now_ms.saturating_sub(u64::try_from(r.at_ms).unwrap_or(0)) / 1000),
            esc(r.reason.as_deref().unwrap_or("no reason recorded"))
        );
    }
    if let Some(p) = &s.power {
        let class = match p.state.as_str() {
            "on line" => "ok",
            "on battery" | "unknown" => "warn",
            _ => "bad",
        };
        let _ = write!(
            o,
            "<dt>Power</dt><dd><span class=\"{class}\" data-figure=\"power\">{}</span>{}</dd>",
            esc(&p.state),
            p.detail
                .as_deref()
                .map(|d| format!(" · {}", esc(d)))
                .unwrap_or_default()
        );
    } else {
        o.push_str(
            "<dt>Power</dt><dd><span class=\"warn\" data-figure=\"power\">not watched</span> · no power daemon reports to this box (a demo, or <code>clinicbox power</code> is not running)</dd>",
        );
    }
    if let Some(b) = &s.backup {
        let (class, text) = match b {
            Some(b) => (
                "ok",
                format!(
                    "{}, {}, to {}",
                    ago(s.now_ms, b.at_ms),
                    bytes(b.bytes),
                    b.folder
                ),
            ),
            None => (
                "warn",
                "never: plug in a USB stick and back the box up".to_string(),
            ),
        };
        let _ = write!(
            o,
            "<dt>Last backup</dt><dd><span class=\"{class}\" data-figure=\"backup\">{}</span></dd>",
            esc(&text)
        );
    }
    if let Some(u) = &s.uplink {
        let (class, text) = uplink_sentence(s.now_ms, u);
        let _ = write!(
            o,
            "<dt>National DHIS2</dt><dd><span class=\"{class}\" data-figure=\"uplink\">{}</span> <span class=\"small\">({})</span></dd>",
            esc(&text),
            esc(&u.state)
        );
    }
    if let Some(d) = &s.discovery {
        if let Some(h) = &d.mdns_host {
            let _ = write!(
                o,
                "<dt>Local name</dt><dd data-figure=\"mdns-host\">{}</dd>",
                esc(h.trim_end_matches('.'))
            );
        }
        if !d.dns_names.is_empty() {
            let _ = write!(
                o,
                "<dt>DNS names</dt><dd data-figure=\"dns-names\">{}</dd>",
                esc(&d.dns_names.join(", "))
            );
        }
        if let Some(i) = &d.interface {
            let _ = write!(o, "<dt>LAN interface</dt><dd>{}</dd>", esc(i));
        }
    }
    let _ = write!(
        o,
        "<dt>Requests</dt><dd><span data-figure=\"requests\">{}</span> ({} failed)</dd></dl></section>",
        s.requests, s.errors
    );
}

/// How far the box's clock may be from national's before the page says so.
const CLOCK_TOLERANCE_SECS: u64 = 60;

/// "12 min", "3 h", "2 days".
fn duration_words(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3600),
        s => format!("{} days", s / 86_400),
    }
}

/// "Last sent to national 2 hours ago · 3 records need attention", in words for staff.
pub fn uplink_sentence(now_ms: u64, u: &crate::UplinkView) -> (&'static str, String) {
    let mut parts = vec![match u.last_success_ms {
        Some(ms) => format!("Last sent to national {}", ago(now_ms, ms)),
        None => "Nothing sent to national yet".to_string(),
    }];
    let pending = u.pending_total();
    if pending > 0 {
        let more = if u.pending_at_least { "more than " } else { "" };
        parts.push(format!("{more}{pending} record(s) waiting"));
    }
    if u.parked_count > 0 {
        parts.push(format!("{} record(s) need attention", u.parked_count));
    }
    if u.conflicts_count > 0 {
        parts.push(format!(
            "{} value(s) changed both here and at national",
            u.conflicts_count
        ));
    }
    let refused = u.metadata.as_ref().is_some_and(|m| m.result == "refused");
    if refused {
        parts.push("new forms from national could not be applied".into());
    }
    let skewed = u
        .clock_skew_secs
        .filter(|s| s.unsigned_abs() > CLOCK_TOLERANCE_SECS);
    if let Some(skew) = skewed {
        let dir = if skew > 0 { "ahead of" } else { "behind" };
        parts.push(format!(
            "the box's clock is {} {dir} national's",
            duration_words(skew.unsigned_abs())
        ));
    }
    if let Some(update) = &u.update {
        parts.push(format!("software update: {update}"));
    }
    let class = if u.parked_count > 0
        || u.conflicts_count > 0
        || u.last_error.is_some()
        || refused
        || skewed.is_some()
    {
        "warn"
    } else {
        "ok"
    };
    (class, parts.join(" · "))
}

/// Values changed on both sides: both versions and the one kept.
fn conflicts_section(o: &mut String, u: &crate::UplinkView) {
    let _ = write!(
        o,
        "<section><h2>Changed on the box and at national</h2><p>{} value(s) were changed on both sides since a round. The later change was kept; the other is shown so it can be entered again if it was right.</p><table><tr><th>Type</th><th>Record</th><th>On the box</th><th>At national</th><th>Kept</th><th>When</th></tr>",
        u.conflicts_count
    );
    for c in &u.conflicts {
        let record = match &c.field {
            Some(f) => format!("{} · {f}", c.key),
            None => c.key.clone(),
        };
        let _ = write!(
            o,
            "<tr data-figure=\"conflict\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&c.kind),
            esc(&record),
            esc(c.on_box.as_deref().unwrap_or("(none)")),
            esc(c.at_national.as_deref().unwrap_or("(none)")),
            esc(&c.chosen),
            utc((c.at_ms / 1000) as i64)
        );
    }
    o.push_str("</table></section>");
}

pub fn render_admin(s: &Snapshot) -> String {
    let mut o = String::new();
    head(&mut o, "ClinicBox admin", false);
    let _ = write!(
        o,
        "<header><h1>Admin · {}</h1><p><a style=\"color:#fff\" href=\"/\">Back to the status page</a></p></header><main>",
        esc(&s.info.box_id)
    );
    o.push_str(
        "<section><h2>Certificate</h2><p>Re-read the installed certificate files now (the box also checks them every few seconds).</p>\
         <form method=\"post\" action=\"/admin/certificate/recheck\"><button>Check certificate files</button></form></section>",
    );
    admin_backup(&mut o, s);
    admin_audit(&mut o, s);
    if let Some(m) = s.uplink.as_ref().and_then(|u| u.metadata.as_ref()) {
        let _ = write!(
            o,
            "<section><h2>Metadata from national</h2><p data-figure=\"metadata\">{} {} · {} created, {} updated, {} deleted</p>",
            esc(&m.result),
            utc((m.at_ms / 1000) as i64),
            m.created,
            m.updated,
            m.deleted
        );
        if !m.messages.is_empty() {
            o.push_str("<ul>");
            for line in &m.messages {
                let _ = write!(o, "<li>{}</li>", esc(line));
            }
            o.push_str("</ul>");
        }
        if m.result == "refused" {
            o.push_str("<p>The box keeps serving the forms it had. Ask national to fix what is named above; the next round tries again.</p>");
        }
        if m.stale_values > 0 {
            let _ = write!(
                o,
                "<p data-figure=\"stale-values\">{} stored value(s) use an option or a field national's forms no longer have. They are kept and still sent; national decides what to do with them.</p>",
                m.stale_values
            );
        }
        o.push_str("</section>");
    }
    if let Some(u) = s.uplink.as_ref().filter(|u| u.conflicts_count > 0) {
        conflicts_section(&mut o, u);
    }
    if let Some(u) = s.uplink.as_ref().filter(|u| u.parked_count > 0) {
        o.push_str("<section><h2>Records national refused</h2><p>Fix the record on a tablet (or the setting national names); the next change is sent again.</p><table><tr><th>Type</th><th>UID</th><th>Code</th><th>National said</th><th>Tries</th></tr>");
        for p in &u.parked {
            let _ = write!(
                o,
                "<tr data-figure=\"parked\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&p.kind),
                esc(&p.uid),
                esc(&p.code),
                esc(&p.message),
                p.attempts
            );
        }
        o.push_str("</table></section>");
    }
    o.push_str("<section><h2>Tablets seen</h2>");
    if s.tablets.is_empty() {
        o.push_str("<p>None.</p>");
    }
    for t in &s.tablets {
        let _ = write!(
            o,
            "<form method=\"post\" action=\"/admin/tablets/forget\" style=\"margin:6px 0\">\
             <input type=\"hidden\" name=\"username\" value=\"{u}\"><input type=\"hidden\" name=\"device\" value=\"{d}\">\
             {u} · {d} · {ago} <button>Forget</button></form>",
            u = esc(&t.username),
            d = esc(&t.device),
            ago = esc(&ago(s.now_ms, t.last_seen_ms))
        );
    }
    o.push_str("</section></main></body></html>");
    o
}

/// The admin page's record of changes: who changed what, newest first.
fn admin_audit(o: &mut String, s: &Snapshot) {
    o.push_str("<section><h2>Recent changes</h2>");
    if s.audit.is_empty() {
        o.push_str("<p>No changes recorded yet.</p></section>");
        return;
    }
    o.push_str("<ul class=\"audit\">");
    for e in &s.audit {
        let _ = write!(
            o,
            "<li>{} · {} · {}<br><small>{}</small></li>",
            esc(&ago(s.now_ms, e.at_ms)),
            esc(&e.who),
            esc(&e.action),
            esc(&e.detail)
        );
    }
    o.push_str("</ul></section>");
}

/// The admin page's backup section: the last backup, and "Back up now" when a stick is in.
fn admin_backup(o: &mut String, s: &Snapshot) {
    if s.backup.is_none() {
        return;
    }
    o.push_str("<section><h2>Backup</h2>");
    if let Some((ok, said)) = &s.backup_said {
        let class = if *ok { "ok" } else { "bad" };
        let _ = write!(
            o,
            "<p class=\"{class}\" data-figure=\"backup-said\">{}</p>",
            esc(said)
        );
    }
    match &s.backup_stick {
        Some(stick) => {
            let _ = write!(
                o,
                "<p>A USB stick is plugged in ({}). The backup is encrypted: only the ministry and the box's recovery key open it.</p>\
                 <form method=\"post\" action=\"/admin/backup\"><button>Back up to the USB stick now</button></form>",
                esc(stick)
            );
        }
        None => o.push_str("<p>Plug in a USB stick to back the box up.</p>"),
    }
    o.push_str("</section>");
}

pub fn render_admin_unavailable() -> String {
    let mut o = String::new();
    head(&mut o, "ClinicBox admin", false);
    o.push_str("<main><section><h2>Admin</h2><p>Admin actions are not available on this box.</p><p><a href=\"/\">Back</a></p></section></main></body></html>");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn qr_is_inline_svg() {
        let s = qr_svg("http://192.168.8.1");
        assert!(
            s.starts_with("<svg role=\"img\""),
            "{}",
            &s[..40.min(s.len())]
        );
        assert!(s.contains("#000000"));
    }

    #[test]
    fn human_figures() {
        assert_eq!(ago(10_000_000, 10_000_000 - 5 * 60_000), "5 min ago");
        assert_eq!(ago(1_000, 5_000), "just now");
        assert_eq!(duration(90_061), "1 d 1 h");
        assert_eq!(bytes(3 * 1024 * 1024 + 512 * 1024), "3.5 MiB");
        assert_eq!(utc(1_700_000_000), "2023-11-14 22:13 UTC");
    }
}
