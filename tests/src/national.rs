//! The national DHIS2 stand-in (`src/bin/national_standin/`) as a test starts it, and
//! `clinicbox uplink` as a test runs it.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use serde_json::Value;

/// The token the stand-in accepts (a personal access token's shape).
pub const TOKEN: &str = "d2pat_StandInToken0000000000000000001234567890";

/// A running stand-in national DHIS2.
pub struct National {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// A file holding [`TOKEN`], for `--national-token-file`.
    pub token_file: PathBuf,
    netns: Option<String>,
    _dir: tempfile::TempDir,
}

fn standin_binary() -> PathBuf {
    crate::binary().with_file_name("national_standin")
}

impl National {
    /// Starts the stand-in on loopback (inside `netns` if given) and waits for its address.
    pub fn start(netns: Option<&str>) -> National {
        National::spawn(netns, false)
    }

    /// The stand-in on HTTPS, its certificate issued for `127.0.0.1` by a CA of its own, whose
    /// PEM is [`National::ca_file`].
    pub fn start_tls() -> National {
        National::spawn(None, true)
    }

    /// The folder the stand-in serves as an update mirror under `/updates/` (made by the
    /// test that publishes a repository there).
    pub fn updates_dir(&self) -> PathBuf {
        self._dir.path().join("updates")
    }

    /// The PEM of the CA that issued an HTTPS stand-in's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self._dir.path().join("ca.pem")
    }

    fn spawn(netns: Option<&str>, tls: bool) -> National {
        let dir = tempfile::tempdir().expect("tempdir");
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, format!("{TOKEN}\n")).expect("token file");
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(standin_binary());
                c
            }
            None => Command::new(standin_binary()),
        };
        let mut child = cmd
            .args(["--listen", "127.0.0.1:0", "--token", TOKEN])
            .args(["--user", "sync", "--password", "sync-password"])
            .arg("--state")
            .arg(dir.path().join("state.json"))
            .arg("--updates")
            .arg(dir.path().join("updates"))
            .args(if tls {
                tls_files(dir.path())
            } else {
                Vec::new()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the national stand-in");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the stand-in's first line");
        let url = line
            .trim()
            .strip_prefix("national-standin: listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line}"))
            .to_string();
        National {
            child,
            url,
            token_file,
            netns: netns.map(str::to_string),
            _dir: dir,
        }
    }

    /// The stand-in's address.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.host().parse().expect("host:port")
    }

    fn host(&self) -> &str {
        self.url.trim_start_matches("http://")
    }

    /// What national applied: objects with their write counts, notes, data values, requests.
    pub fn ledger(&self) -> Value {
        self.here(|| crate::http_request(self.host(), "GET", "/ledger", &[], b"").json())
    }

    /// A GET at national as the sync account (what a national form or script would ask).
    pub fn get(&self, path: &str) -> Value {
        let auth = format!("ApiToken {TOKEN}");
        self.here(|| {
            crate::http_request(self.host(), "GET", path, &[("Authorization", &auth)], b"").json()
        })
    }

    /// A request at national as the sync account with a JSON body (a remote admin's script
    /// writing the dataStore): its status and JSON answer.
    pub fn send(&self, method: &str, path: &str, body: &Value) -> (u16, Value) {
        let auth = format!("ApiToken {TOKEN}");
        let bytes = serde_json::to_vec(body).expect("json");
        self.here(|| {
            let r = crate::http_request(
                self.host(),
                method,
                path,
                &[
                    ("Authorization", &auth),
                    ("Content-Type", "application/json"),
                ],
                &bytes,
            );
            (
                r.status,
                serde_json::from_slice(&r.body).unwrap_or(Value::Null),
            )
        })
    }

    /// Runs `f` where the stand-in's loopback is.
    fn here<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        match &self.netns {
            Some(ns) => crate::in_netns(ns, f),
            None => f(),
        }
    }

    /// Turns faults on (fields as in the stand-in's `Faults`).
    pub fn faults(&self, faults: Value) {
        self.admin("/faults", &faults);
    }

    /// National's metadata changes: `package`'s objects created or updated now (users may
    /// carry a `password`).
    pub fn put_metadata(&self, package: &Value) {
        self.admin("/admin/metadata", package);
    }

    /// National deletes an object (it leaves every list that named it).
    pub fn remove_metadata(&self, collection: &str, uid: &str) {
        self.admin(
            "/admin/metadata/remove",
            &serde_json::json!({"type": collection, "id": uid}),
        );
    }

    /// The org units national assigns the sync account.
    pub fn assign_sync_user(&self, org_units: &[&str]) {
        self.admin(
            "/admin/sync-user",
            &serde_json::json!({ "organisationUnits": org_units }),
        );
    }

    /// Approves (or with a null `state`, un-approves) at national: `[{wf, pe, ou, state}]`.
    pub fn set_approvals(&self, states: &Value) {
        self.admin("/admin/approvals", states);
    }

    /// A district officer's values at national: `[{dataElement, period, orgUnit,
    /// categoryOptionCombo, attributeOptionCombo, value, storedBy}]` (a null value deletes).
    pub fn set_data_values(&self, values: &Value) {
        self.admin("/admin/data-values", values);
    }

    /// Someone at national changes tracker data: `{trackedEntities, enrollments, events}`.
    pub fn set_tracker(&self, payload: &Value) {
        self.admin("/admin/tracker", payload);
    }

    /// Someone at national moves `te`'s owner in `program` to `org_unit`.
    pub fn transfer(&self, te: &str, program: &str, org_unit: &str) {
        self.admin(
            "/admin/tracker/transfer",
            &serde_json::json!({"trackedEntity": te, "program": program, "orgUnit": org_unit}),
        );
    }

    /// Someone at national deletes a tracker object (`trackedEntities`, `enrollments`, `events`).
    pub fn delete_tracker(&self, kind: &str, uid: &str) {
        self.admin(
            "/admin/tracker/delete",
            &serde_json::json!({"type": kind, "uid": uid}),
        );
    }

    fn admin(&self, path: &str, body: &Value) {
        let body = serde_json::to_vec(body).expect("json");
        let r = self.here(|| {
            crate::http_request(
                self.host(),
                "POST",
                path,
                &[("Content-Type", "application/json")],
                &body,
            )
        });
        assert_eq!(r.status, 204, "{}", String::from_utf8_lossy(&r.body));
    }
}

impl Drop for National {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CA and a certificate for `127.0.0.1` it issued, written into `dir`; the stand-in's
/// arguments for them.
fn tls_files(dir: &Path) -> Vec<String> {
    let ca_key = rcgen::KeyPair::generate().expect("ca key");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "Ministry test CA");
    let ca_cert = ca.self_signed(&ca_key).expect("ca");
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().expect("key");
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .expect("leaf params")
        .signed_by(&key, &issuer)
        .expect("leaf");
    let write = |name: &str, pem: String| {
        let p = dir.join(name);
        std::fs::write(&p, pem).expect("pem");
        p.display().to_string()
    };
    write("ca.pem", ca_cert.pem());
    vec![
        "--tls-cert".into(),
        write("cert.pem", format!("{}{}", leaf.pem(), ca_cert.pem())),
        "--tls-key".into(),
        write("key.pem", key.serialize_pem()),
    ]
}

/// `clinicbox uplink --demo --data-dir DIR --national-url URL --national-token-file F --once`
/// beside the demo box whose data is in `data_dir`.
pub fn uplink_once(data_dir: &Path, national: &National) -> (ExitStatus, String, String) {
    uplink_once_via(data_dir, national, &national.url)
}

/// [`uplink_once`] reaching national at `url` (a link in between).
pub fn uplink_once_via(
    data_dir: &Path,
    national: &National,
    url: &str,
) -> (ExitStatus, String, String) {
    run_uplink(&[], data_dir, national, url)
}

/// [`uplink_once_ok`] with arguments before the subcommand (`--config FILE`).
pub fn uplink_once_with(data_dir: &Path, national: &National, global: &[&OsStr]) -> String {
    let (status, out, err) = run_uplink(global, data_dir, national, &national.url);
    assert!(status.success(), "uplink --once failed: {err}\n{out}");
    out
}

fn run_uplink(
    global: &[&OsStr],
    data_dir: &Path,
    national: &National,
    url: &str,
) -> (ExitStatus, String, String) {
    let out = Command::new(crate::binary())
        .args(global)
        .args(["uplink", "--demo", "--data-dir"])
        .arg(data_dir)
        .args(["--national-url", url, "--national-token-file"])
        .arg(&national.token_file)
        .arg("--once")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("run clinicbox uplink");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Like [`uplink_once`], but asserts success and returns what it printed.
pub fn uplink_once_ok(data_dir: &Path, national: &National) -> String {
    let (status, out, err) = uplink_once(data_dir, national);
    assert!(status.success(), "uplink --once failed: {err}\n{out}");
    out
}

/// The number on a `--once` summary line, e.g. `pushed(out, "events")`.
pub fn pushed(summary: &str, kind: &str) -> u64 {
    let line = summary
        .lines()
        .find(|l| l.starts_with("pushed: "))
        .unwrap_or_else(|| panic!("no pushed line in {summary}"));
    line.trim_start_matches("pushed: ")
        .split(", ")
        .find_map(|part| {
            let (n, k) = part.split_once(' ')?;
            let k = k.split(' ').next()?;
            (k == kind).then(|| n.parse().ok())?
        })
        .unwrap_or_else(|| panic!("no {kind} in {line}"))
}

/// Waits up to `limit` for `pred` on the ledger.
pub fn wait_for_ledger(
    national: &National,
    limit: Duration,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let l = national.ledger();
        if pred(&l) || std::time::Instant::now() > deadline {
            return l;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
