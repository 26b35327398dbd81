//! First-boot setup through the status page, on a box made the way the image's first boot
//! makes it: a store with a key-file slot, no users, no metadata, and recovery keys left in
//! `keys/*.pending`. The person setting it up claims it (clinic name + first admin), is shown
//! the keys once and confirms them, then uploads the metadata package, and the tablets' users
//! from that package can log in. Refused steps change nothing.

use std::path::Path;

use base64::Engine;
use clinicbox_tests::{BoxBuilder, RunningBox, http_request, init_store};

const ADMIN: &str = "nurse.admin";
const PASSWORD: &str = "Clinic-2026!";
const CLINIC: &str = "Kisumu <East> Health Centre";
const LUKS_KEY: &str = "abcde-fghij-klmno-pqrst-uvwxy-z0123-45678-9abcd";

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// A store and pending keys as `image/scripts/firstboot` leaves them; returns the store's key.
fn first_boot(data: &Path) -> String {
    let keys = data.join("keys");
    std::fs::create_dir_all(&keys).expect("keys dir");
    let recovery = init_store(data, &keys.join("store.key"), &[])
        .lines()
        .map(str::trim)
        .find(|l| l.len() > 20 && !l.contains(' '))
        .expect("recovery key printed")
        .to_owned();
    std::fs::write(
        keys.join("store-recovery-key.pending"),
        format!("{recovery}\n"),
    )
    .expect("w");
    std::fs::write(
        keys.join("data-recovery-key.pending"),
        format!("{LUKS_KEY}\n"),
    )
    .expect("w");
    recovery
}

fn start(data: &Path) -> RunningBox {
    BoxBuilder::new()
        .config(&format!(
            // HTTPS on a port of its own: tests run boxes side by side.
            "data_dir = \"{}\"\n[store]\nkey_file = \"{}\"\n[tls]\nlisten = [\"127.0.0.1:0\"]\n",
            data.display(),
            data.join("keys/store.key").display()
        ))
        .start()
}

fn form_post(b: &RunningBox, path: &str, auth: Option<&str>, body: &str) -> (u16, String) {
    let origin = b.url().to_owned();
    let mut headers = vec![
        ("Content-Type", "application/x-www-form-urlencoded"),
        ("Origin", origin.as_str()),
    ];
    if let Some(a) = auth {
        headers.push(("Authorization", a));
    }
    let r = b.request("POST", path, &headers, body.as_bytes());
    (r.status, String::from_utf8_lossy(&r.body).into_owned())
}

fn get(b: &RunningBox, path: &str, auth: Option<&str>) -> (u16, String) {
    let headers: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
    let r = b.request("GET", path, &headers, b"");
    (r.status, String::from_utf8_lossy(&r.body).into_owned())
}

fn claim_body(clinic: &str, user: &str, password: &str, confirm: &str) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|c| match c {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => {
                    (c as char).to_string()
                }
                b' ' => "+".into(),
                _ => format!("%{c:02X}"),
            })
            .collect::<String>()
    };
    format!(
        "clinic_name={}&username={}&password={}&confirm={}",
        enc(clinic),
        enc(user),
        enc(password),
        enc(confirm)
    )
}

fn multipart(file: &[u8], skip_refused: bool) -> (String, Vec<u8>) {
    let boundary = "----clinicbox-test-7MA4YWxkTrZu0gW";
    let mut body = Vec::new();
    if skip_refused {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"skip_refused\"\r\n\r\non\r\n"
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"package\"; filename=\"metadata.json\"\r\n\
             Content-Type: application/json\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

fn upload(b: &RunningBox, auth: &str, file: &[u8]) -> (u16, String) {
    upload_with(b, auth, file, false)
}

fn upload_with(b: &RunningBox, auth: &str, file: &[u8], skip_refused: bool) -> (u16, String) {
    let (ctype, body) = multipart(file, skip_refused);
    let origin = b.url().to_owned();
    let r = b.request(
        "POST",
        "/setup/metadata",
        &[
            ("Content-Type", ctype.as_str()),
            ("Origin", origin.as_str()),
            ("Authorization", auth),
        ],
        &body,
    );
    (r.status, String::from_utf8_lossy(&r.body).into_owned())
}

#[test]
fn a_new_box_is_claimed_given_its_keys_and_loaded_through_the_status_page() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let recovery = first_boot(&data);
    let b = start(&data);
    let admin = basic(ADMIN, PASSWORD);

    // A new box says what is left to do, and offers the claim form to anyone on the LAN.
    let (st, page) = get(&b, "/", None);
    assert_eq!(st, 200);
    assert!(page.contains("data-figure=\"setup-todo\""), "{page}");
    assert!(page.contains("create the admin account"), "{page}");
    let (st, page) = get(&b, "/setup", None);
    assert_eq!(st, 200);
    assert!(page.contains("data-figure=\"claim-form\""), "{page}");
    assert!(!page.contains(&recovery), "keys before the claim");

    // Refused claims change nothing: a cross-site post, passwords that differ, a short one.
    let good = claim_body(CLINIC, ADMIN, PASSWORD, PASSWORD);
    let r = b.request(
        "POST",
        "/setup/claim",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        good.as_bytes(),
    );
    assert_eq!(r.status, 403, "a claim without Origin/Referer");
    let (st, page) = form_post(
        &b,
        "/setup/claim",
        None,
        &claim_body(CLINIC, ADMIN, PASSWORD, "Clinic-2027!"),
    );
    assert_eq!(st, 400, "{page}");
    assert!(page.contains("The two passwords differ"), "{page}");
    let (st, page) = form_post(
        &b,
        "/setup/claim",
        None,
        &claim_body(CLINIC, ADMIN, "short", "short"),
    );
    assert_eq!(st, 400, "{page}");
    let (st, page) = form_post(
        &b,
        "/setup/claim",
        None,
        &claim_body(CLINIC, "bad name!", PASSWORD, PASSWORD),
    );
    assert_eq!(st, 400, "{page}");
    assert_eq!(get(&b, "/api/me", Some(&admin)).0, 401);
    let (_, page) = get(&b, "/setup", None);
    assert!(
        page.contains("data-figure=\"claim-form\""),
        "still unclaimed"
    );
    let (_, settings) = get(&b, "/api/systemSettings", Some(&admin));
    assert!(
        !settings.contains("Kisumu"),
        "a refused claim named the clinic"
    );

    // The claim: the admin exists, the clinic is named, and both recovery keys are shown.
    let (st, page) = form_post(&b, "/setup/claim", None, &good);
    assert_eq!(st, 200, "{page}");
    assert!(page.contains(&recovery), "store recovery key shown");
    assert!(page.contains(LUKS_KEY), "LUKS recovery key shown");
    assert!(page.contains(ADMIN));
    assert_eq!(get(&b, "/api/me", Some(&admin)).0, 200);
    let (_, title) = get(&b, "/api/systemSettings/applicationTitle", Some(&admin));
    assert!(title.contains("Kisumu <East> Health Centre"), "{title}");

    // Never again: a second claim is refused and its user does not exist.
    let (st, page) = form_post(
        &b,
        "/setup/claim",
        None,
        &claim_body("Other", "intruder", PASSWORD, PASSWORD),
    );
    assert_eq!(st, 409, "{page}");
    assert_eq!(
        get(&b, "/api/me", Some(&basic("intruder", PASSWORD))).0,
        401
    );

    // The status page now carries the clinic's name and what is still to do.
    let (_, page) = get(&b, "/", None);
    assert!(page.contains("Kisumu &lt;East&gt; Health Centre"), "{page}");
    assert!(page.contains("write down the recovery keys"), "{page}");
    assert!(page.contains("upload the metadata package"), "{page}");
    assert!(!page.contains(&recovery), "keys on the public page");

    // After the claim, setup is for the admin only; the keys stay until confirmed.
    assert_eq!(get(&b, "/setup", None).0, 401);
    let (st, page) = get(&b, "/setup", Some(&admin));
    assert_eq!(st, 200);
    assert!(page.contains(&recovery) && page.contains(LUKS_KEY));
    let (st, _) = form_post(&b, "/setup/keys/done", None, "");
    assert_eq!(st, 401, "confirming the keys needs the admin");
    assert!(data.join("keys/store-recovery-key.pending").exists());
    let (st, _) = form_post(&b, "/setup/keys/done", Some(&admin), "");
    assert_eq!(st, 303);
    assert!(!data.join("keys/store-recovery-key.pending").exists());
    assert!(!data.join("keys/data-recovery-key.pending").exists());
    assert!(
        data.join("keys/store.key").exists(),
        "the key file must stay"
    );
    let (_, page) = get(&b, "/setup", Some(&admin));
    assert!(page.contains("data-figure=\"keys-done\""), "{page}");
    assert!(!page.contains(&recovery));

    // A file that is not a metadata package is refused and imports nothing.
    let (st, page) = upload(&b, &admin, b"name,age\nAmina,31\n");
    assert_eq!(st, 409, "{page}");
    assert!(page.contains("not a DHIS2 metadata package"), "{page}");
    let (_, programs) = get(&b, "/api/programs?fields=id", Some(&admin));
    assert!(programs.contains("\"programs\":[]"), "{programs}");

    // A package that clashes with the box (its admin's username) is refused whole, with why.
    let clash = format!(
        r#"{{"organisationUnits":[{{"id":"ClashOu0001","name":"Clash","shortName":"Clash","openingDate":"2020-01-01"}}],
            "users":[{{"id":"ClashUs0001","username":"{ADMIN}","password":"Clash-2026!","firstName":"A","surname":"B"}}]}}"#
    );
    let (st, page) = upload(&b, &admin, clash.as_bytes());
    assert_eq!(st, 409, "{page}");
    assert!(
        page.contains("nothing changed") && page.contains("already exists"),
        "{page}"
    );
    let (_, ous) = get(&b, "/api/organisationUnits?fields=id", Some(&admin));
    assert!(!ous.contains("ClashOu0001"), "{ous}");
    assert!(
        page.contains("Import the rest"),
        "the way on is named: {page}"
    );
    // "Import the rest": the org unit goes in, the clashing user is skipped and said.
    let (st, page) = upload_with(&b, &admin, clash.as_bytes(), true);
    assert_eq!(st, 200, "{page}");
    assert!(page.contains("skipped: E"), "{page}");
    let (_, ous) = get(&b, "/api/organisationUnits?fields=id", Some(&admin));
    assert!(ous.contains("ClashOu0001"), "{ous}");
    assert_eq!(
        get(&b, "/api/me", Some(&admin)).0,
        200,
        "the box's admin is untouched"
    );

    // The package: programs for the tablets, and its users can log in.
    let package = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../appliance/api/demo/metadata.json"),
    )
    .expect("demo package");
    let (st, page) = upload(&b, &admin, &package);
    assert_eq!(st, 200, "{page}");
    assert!(page.contains("data-figure=\"import-summary\""), "{page}");
    let (_, programs) = get(&b, "/api/programs?fields=id", Some(&admin));
    assert!(!programs.contains("\"programs\":[]"), "{programs}");
    assert_eq!(
        get(&b, "/api/me", Some(&basic("android", "Android123"))).0,
        200
    );
    let (_, page) = get(&b, "/setup", Some(&admin));
    assert!(page.contains("data-figure=\"setup-complete\""), "{page}");
    let (_, page) = get(&b, "/", None);
    assert!(!page.contains("setup-todo"), "setup is done: {page}");

    // A tablet user for one of the package's org units, with one of its roles.
    let pkg: serde_json::Value = serde_json::from_slice(&package).expect("package json");
    let ou = pkg["organisationUnits"][1]["id"]
        .as_str()
        .expect("org unit");
    let role = pkg["userRoles"][0]["id"].as_str().expect("role");
    let (_, page) = get(&b, "/setup", Some(&admin));
    assert!(
        page.contains("data-figure=\"add-user-form\"") && page.contains(ou),
        "{page}"
    );
    let add = |org_unit: &str| {
        format!(
            "username=amina.w&first_name=Amina&surname=Wanjiru&password=Triage-2026&confirm=Triage-2026&org_unit={org_unit}&role={role}"
        )
    };
    let (st, page) = form_post(&b, "/setup/users", Some(&admin), &add("NoSuchOrgU1"));
    assert_eq!(st, 400, "an unknown org unit: {page}");
    assert_eq!(
        get(&b, "/api/me", Some(&basic("amina.w", "Triage-2026"))).0,
        401
    );
    let (st, _) = form_post(&b, "/setup/users", None, &add(ou));
    assert_eq!(st, 401, "adding users needs the admin");
    let (st, page) = form_post(&b, "/setup/users", Some(&admin), &add(ou));
    assert_eq!(st, 303, "{page}");
    let (st, me) = get(
        &b,
        "/api/me?fields=organisationUnits[id]",
        Some(&basic("amina.w", "Triage-2026")),
    );
    assert_eq!(st, 200);
    assert!(me.contains(ou), "{me}");
    // Amina forgot her password: the admin sets a new one.
    let (st, _) = form_post(
        &b,
        "/setup/users/password",
        Some(&admin),
        "username=amina.w&password=Pharmacy-2026&confirm=Pharmacy-2026",
    );
    assert_eq!(st, 303);
    assert_eq!(
        get(&b, "/api/me", Some(&basic("amina.w", "Triage-2026"))).0,
        401
    );
    assert_eq!(
        get(&b, "/api/me", Some(&basic("amina.w", "Pharmacy-2026"))).0,
        200
    );
    // Disabling Amina asks once more, saying what her tablets will lose; then she is out.
    let amina = basic("amina.w", "Pharmacy-2026");
    let (st, page) = form_post(
        &b,
        "/setup/users/disable",
        Some(&admin),
        "username=amina.w&disable=true",
    );
    assert_eq!(st, 200);
    assert!(page.contains("data-figure=\"disable-warning\""), "{page}");
    assert_eq!(get(&b, "/api/me", Some(&amina)).0, 200, "not yet");
    let (st, _) = form_post(
        &b,
        "/setup/users/disable",
        Some(&admin),
        "username=amina.w&disable=true&confirmed=true",
    );
    assert_eq!(st, 303);
    assert_eq!(get(&b, "/api/me", Some(&amina)).0, 401);
    let (_, page) = get(&b, "/setup", Some(&admin));
    assert!(
        page.contains("amina.w <span class=\"bad\">(disabled)</span>"),
        "{page}"
    );
    let (st, _) = form_post(
        &b,
        "/setup/users/disable",
        Some(&admin),
        "username=amina.w&disable=false",
    );
    assert_eq!(st, 303);
    assert_eq!(get(&b, "/api/me", Some(&amina)).0, 200);
    let (st, page) = form_post(
        &b,
        "/setup/users/disable",
        Some(&admin),
        &format!("username={ADMIN}&disable=true&confirmed=true"),
    );
    assert_eq!(st, 400, "an admin cannot lock themselves out: {page}");

    // Who did what is on the admin page, newest first; refused attempts left nothing there.
    let (_, status) = get(&b, "/status.json", Some(&admin));
    let status: serde_json::Value = serde_json::from_str(&status).expect("status.json");
    let trail: Vec<(String, String, String)> = status["audit"]
        .as_array()
        .expect("audit trail")
        .iter()
        .map(|e| {
            let f = |k: &str| e[k].as_str().unwrap_or_default().to_string();
            (f("who"), f("action"), f("detail"))
        })
        .collect();
    let expected = [
        (ADMIN, "user enabled", "amina.w"),
        (ADMIN, "user disabled", "amina.w"),
        (ADMIN, "password reset", "amina.w"),
        (ADMIN, "tablet user added", "amina.w"),
        (ADMIN, "metadata package imported", ""),
        (ADMIN, "metadata package imported", "skipped: E"),
        (
            ADMIN,
            "recovery keys",
            "confirmed written down; deleted from the box",
        ),
        (ADMIN, "box set up", ""),
    ];
    assert_eq!(trail.len(), expected.len(), "{trail:?}");
    for ((who, action, detail), (w, a, d)) in trail.iter().zip(expected) {
        assert_eq!((who.as_str(), action.as_str()), (w, a), "{trail:?}");
        assert!(detail.contains(d), "{trail:?}");
    }
    let (_, anonymous) = get(&b, "/status.json", None);
    assert!(
        anonymous.contains("\"audit\":[]"),
        "the trail is for admins only"
    );
    let (_, page) = get(&b, "/admin", Some(&admin));
    assert!(
        page.contains("Recent changes") && page.contains("tablet user added"),
        "{page}"
    );

    // All of it survives a restart.
    b.stop();
    let b = start(&data);
    assert_eq!(get(&b, "/api/me", Some(&admin)).0, 200);
    let (_, page) = get(&b, "/", None);
    assert!(page.contains("Kisumu &lt;East&gt; Health Centre"));
    assert!(!page.contains("setup-todo"));
    assert_eq!(
        get(&b, "/setup", None).0,
        401,
        "a restarted box is not claimable"
    );
    b.stop();
}

#[test]
fn of_claims_sent_at_once_exactly_one_wins() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    first_boot(&data);
    let b = start(&data);
    let origin = b.url().to_owned();
    let host = origin.trim_start_matches("http://").to_owned();
    let all_ready = std::sync::Arc::new(std::sync::Barrier::new(6));
    let claims: Vec<_> = (0..6)
        .map(|i| {
            let (origin, host, all_ready) = (origin.clone(), host.clone(), all_ready.clone());
            std::thread::spawn(move || {
                let user = format!("admin{i}");
                let body = claim_body(&format!("Clinic {i}"), &user, PASSWORD, PASSWORD);
                all_ready.wait();
                let r = http_request(
                    &host,
                    "POST",
                    "/setup/claim",
                    &[
                        ("Content-Type", "application/x-www-form-urlencoded"),
                        ("Origin", origin.as_str()),
                    ],
                    body.as_bytes(),
                );
                (user, r.status)
            })
        })
        .collect();
    let results: Vec<(String, u16)> = claims
        .into_iter()
        .map(|t| t.join().expect("claim thread"))
        .collect();
    let winners: Vec<&String> = results
        .iter()
        .filter(|(_, st)| *st == 200)
        .map(|(u, _)| u)
        .collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    assert!(
        results.iter().all(|(_, st)| *st == 200 || *st == 409),
        "{results:?}"
    );
    for (user, _) in &results {
        let expected = if user == winners[0] { 200 } else { 401 };
        assert_eq!(
            get(&b, "/api/me", Some(&basic(user, PASSWORD))).0,
            expected,
            "{user}"
        );
    }
    b.stop();
}
