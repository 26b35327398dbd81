//! The box's own page as a person sees it: headless Chromium (Debian `chromium`) renders `/` at
//! a tablet's size, zbarimg (Debian `zbar-tools`) decodes the QR code from the screenshot, and
//! the figures on the page are checked against the daemon's own (`/status.json`, `/metrics`,
//! the store file, `clinicbox --version`, the API).
//!
//! The screenshot is kept in `target/test-artifacts/` for a human to look at. Without Chromium
//! or zbarimg: `SKIPPED` outside CI, a failure in CI.

use std::path::{Path, PathBuf};
use std::process::Command;

use clinicbox_tests::{BoxBuilder, RunningBox, run_admin};
use serde_json::json;

fn prerequisites(test: &str) -> bool {
    clinicbox_tests::prerequisites(test, &["chromium", "zbarimg"], false)
}

/// `target/test-artifacts/`, next to the test executables' profile directory.
fn artifacts() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let target = exe.ancestors().nth(3).expect("target dir").to_owned();
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).expect("artifacts dir");
    dir
}

/// Chromium with the flags that keep it off the network and out of the user's profile.
fn chromium(profile: &Path) -> Command {
    let mut c = Command::new("chromium");
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    c
}

/// The value of `data-figure="name"`: its `data-value` if present, else its text.
fn figure(html: &str, name: &str) -> Option<String> {
    let at = html.find(&format!("data-figure=\"{name}\""))?;
    let tag_end = at + html[at..].find('>')?;
    let tag = &html[at..tag_end];
    if let Some(v) = tag.find("data-value=\"") {
        let rest = &tag[v + 12..];
        return Some(rest[..rest.find('"')?].to_owned());
    }
    let text = &html[tag_end + 1..];
    Some(text[..text.find('<')?].trim().to_owned())
}

fn figures(html: &str, name: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(i) = rest.find(&format!("data-figure=\"{name}\"")) {
        if let Some(v) = figure(&rest[i..], name) {
            out.push(v);
        }
        rest = &rest[i + 1..];
    }
    out
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

fn basic(user_pass: &str) -> String {
    use std::fmt::Write;
    // Standard base64, small and local to keep the test's dependencies short.
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = user_pass.as_bytes();
    let mut s = String::from("Basic ");
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                let _ = s.write_char(char::from(T[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                s.push('=');
            }
        }
    }
    s
}

fn sync_like_a_tablet(b: &RunningBox) {
    let auth = basic("android:Android123");
    let agent = "com.dhis2/1.14.0/3.4.1/Android_34";
    for path in ["/api/system/info", "/api/me"] {
        let r = b.request(
            "GET",
            path,
            &[("Authorization", &auth), ("User-Agent", agent)],
            b"",
        );
        assert_eq!(
            r.status,
            200,
            "{path}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    // A wrong password must not show up as a tablet.
    let r = b.request(
        "GET",
        "/api/me",
        &[
            ("Authorization", &basic("intruder:nope")),
            ("User-Agent", "curl/8"),
        ],
        b"",
    );
    assert_eq!(r.status, 401);
}

#[test]
fn the_status_page_shows_a_scannable_url_and_the_daemons_figures_on_a_tablet() {
    if !prerequisites("statuspage") {
        return;
    }
    let b = BoxBuilder::demo().start();
    sync_like_a_tablet(&b);

    let status = b.request("GET", "/status.json", &[], b"").json();
    let capture_url = status["capture_url"]
        .as_str()
        .expect("capture_url")
        .to_owned();
    assert_eq!(
        capture_url,
        b.url(),
        "a demo box's tablets use its HTTP URL"
    );

    // Chromium at a 10" tablet's portrait size: the screenshot and the rendered DOM.
    let profile = tempfile::tempdir().expect("profile");
    let shot = artifacts().join("statuspage-tablet.png");
    let _ = std::fs::remove_file(&shot);
    let out = chromium(profile.path())
        .arg("--window-size=800,1280")
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("{}/", b.url()))
        .output()
        .expect("chromium");
    assert!(
        shot.is_file(),
        "no screenshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dom = chromium(profile.path())
        .arg("--dump-dom")
        .arg(format!("{}/", b.url()))
        .output()
        .expect("chromium");
    let html = String::from_utf8_lossy(&dom.stdout).into_owned();
    assert!(html.contains("Connect a tablet"), "{html}");
    assert!(
        !html.to_lowercase().contains("<script"),
        "the page needs no JavaScript"
    );

    // The QR code in the screenshot decodes to the URL to type.
    let z = Command::new("zbarimg")
        .args(["--raw", "-q"])
        .arg(&shot)
        .output()
        .expect("zbarimg");
    let decoded = String::from_utf8_lossy(&z.stdout);
    assert_eq!(
        decoded.trim(),
        capture_url,
        "zbarimg: {}",
        String::from_utf8_lossy(&z.stderr)
    );
    assert_eq!(
        figure(&html, "capture-url").as_deref(),
        Some(capture_url.as_str())
    );

    // The figures match the daemon's.
    let (st, version, _) = run_admin(&["--version"], "");
    assert!(st.success());
    assert_eq!(
        figure(&html, "version").as_deref(),
        version.split_whitespace().nth(1)
    );
    let info = b
        .request(
            "GET",
            "/api/system/info",
            &[("Authorization", &basic("admin:district"))],
            b"",
        )
        .json();
    assert_eq!(
        figure(&html, "dhis2-version").as_deref(),
        info["version"].as_str()
    );
    assert_eq!(
        figure(&html, "box-id").as_deref(),
        status["info"]["box_id"].as_str()
    );

    let metrics = b.request("GET", "/metrics", &[], b"");
    assert_eq!(metrics.status, 200, "loopback may read /metrics");
    let metrics = String::from_utf8_lossy(&metrics.body).into_owned();
    let db = std::fs::metadata(b.dir().join("data").join(clinicbox_store::DB_FILE))
        .expect("store file")
        .len();
    let page_bytes: u64 = figure(&html, "store-bytes")
        .expect("store-bytes")
        .parse()
        .expect("number");
    assert_eq!(page_bytes, db, "database size on the page vs the file");
    assert_eq!(
        metric(&metrics, "clinicbox_store_file_bytes"),
        Some(db as f64)
    );
    // Staff see their records by name and the box's bookkeeping as one line; every count adds
    // up to what the store holds.
    let mut on_page_total =
        figure(&html, "records.bookkeeping").map_or(0, |v| v.parse::<u64>().expect("number"));
    let mut total = 0;
    for (collection, n) in status["store"]["records"]
        .as_array()
        .expect("records")
        .iter()
        .filter_map(|r| Some((r[0].as_str()?, r[1].as_u64()?)))
    {
        total += n;
        if let Some(v) = figure(&html, &format!("records.{collection}")) {
            let on_page: u64 = v.parse().expect("number");
            assert_eq!(on_page, n, "{collection}");
            on_page_total += on_page;
        }
        let in_metrics = metric(
            &metrics,
            &format!("clinicbox_store_records{{collection=\"{collection}\"}}"),
        );
        assert_eq!(in_metrics, Some(n as f64), "{collection}");
    }
    assert_eq!(
        on_page_total, total,
        "the page's counts add up to the store's"
    );
    assert!(!html.contains(">trackerJobs<") && !html.contains("Metadata revision"));
    assert!(
        status["store"]["records"]
            .as_array()
            .is_some_and(|r| !r.is_empty()),
        "the demo box has metadata records"
    );
    // The demo users' settings and metadata were written: the page shows when.
    assert_ne!(figure(&html, "store-last-write").as_deref(), Some("0"));

    // The tablet that synced is listed (user and app), the failed login is not.
    assert_eq!(figures(&html, "tablet-user"), ["android"]);
    assert!(html.contains("DHIS2 Capture 3.4.1"), "device column");
    // The admin's check above counts as a second user-and-client pair.
    assert_eq!(metric(&metrics, "clinicbox_tablets_seen"), Some(2.0));
    assert!(
        metrics.contains(
            "clinicbox_http_requests_total{method=\"GET\",route=\"/api/me\",status=\"401\"} 1"
        ),
        "{metrics}"
    );

    // The certificate the page names is the one HTTPS serves (self-signed on a demo box).
    assert_eq!(figure(&html, "cert-source").as_deref(), Some("self-signed"));
    assert_eq!(
        figure(&html, "cert-sha256").as_deref(),
        status["certificate"]["sha256"].as_str()
    );

    // Admin actions want an admin login; a tablet user is not one.
    assert_eq!(b.request("GET", "/admin", &[], b"").status, 401);
    assert_eq!(
        b.request(
            "GET",
            "/admin",
            &[("Authorization", &basic("android:Android123"))],
            b""
        )
        .status,
        401
    );
    assert_eq!(
        b.request(
            "GET",
            "/admin",
            &[("Authorization", &basic("admin:district"))],
            b""
        )
        .status,
        200
    );

    b.stop();
}

/// What the layout measures, from outside the page (it runs no script of its own): the page's
/// width against the screen's, the sections and tables wider than their box, how many lines the
/// server URL takes, and the words on the page.
const MEASURE: &str = r#"
const over = [...document.querySelectorAll('section, table, dl, .url, li')]
  .filter(e => e.scrollWidth > e.clientWidth + 1)
  .map(e => ((e.querySelector('h2') || e).textContent || e.tagName).trim().slice(0, 60));
const url = document.querySelector('[data-figure="capture-url"]');
let urlLines = 0;
if (url) {
  const r = document.createRange();
  r.selectNodeContents(url);
  const rects = [...r.getClientRects()].filter(x => x.width > 0 && x.height > 0);
  urlLines = new Set(rects.map(x => Math.round(x.top))).size;
  window.__rects = rects.map(x => [x.top, x.left, x.width, x.height]);
}
return {page: document.documentElement.scrollWidth, screen: window.innerWidth,
        over: over, urlLines: urlLines, rects: window.__rects || [], text: document.body.innerText};
"#;

#[test]
fn the_status_admin_and_setup_pages_fit_a_phone_and_a_desktop() {
    use clinicbox_tests::browser::{Browser, Screen};
    if !clinicbox_tests::prerequisites("page layout", &["chromium", "chromedriver"], false) {
        return;
    }
    let b = BoxBuilder::demo().start();
    sync_like_a_tablet(&b);
    let admin_url = b.url().replacen("http://", "http://admin:district@", 1);
    for screen in [Screen::Phone, Screen::Desktop] {
        let browser = Browser::start(screen);
        for (name, url) in [
            ("status", format!("{}/", b.url())),
            ("admin", format!("{admin_url}/admin")),
            ("setup", format!("{admin_url}/setup")),
        ] {
            browser.open(&url);
            let m = browser.eval(MEASURE);
            let what = format!("{name} page on a {screen:?}");
            assert!(
                m["page"].as_u64() <= m["screen"].as_u64(),
                "{what} is wider than the screen: {m}"
            );
            assert_eq!(m["over"], json!([]), "{what}: these run past their edge");
            let text = m["text"].as_str().unwrap_or_default();
            assert!(text.len() > 200, "{what} did not render: {text}");
            for internal in [
                "completeDataSetRegistrations",
                "dataValueAudit",
                "trackerJobs",
                "Box identity",
                "Metadata revision",
            ] {
                assert!(!text.contains(internal), "{what} says {internal}");
            }
            if name == "status" {
                assert_eq!(m["urlLines"], 1, "{what}: the server URL breaks: {m}");
            }
        }
    }
    b.stop();
}

#[test]
fn base64_helper_matches_rfc4648() {
    assert_eq!(
        basic("android:Android123"),
        "Basic YW5kcm9pZDpBbmRyb2lkMTIz"
    );
    assert_eq!(basic("a:b"), "Basic YTpi");
    assert_eq!(basic("ab:"), "Basic YWI6");
}
