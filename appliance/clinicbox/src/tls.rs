//! HTTPS: rustls with ring, TLS 1.2 and 1.3 with AEAD suites only, next to plain HTTP.
//!
//! Which certificate:
//! - **Installed**: a chain and key for the box's public name (`<box-id>.<clinics-domain>`),
//!   the only kind the stock Capture app accepts (it trusts system CAs only). Files are PEM,
//!   certbot-style `fullchain.pem` + `privkey.pem`; the uplink renews them through ACME later.
//!   They are checked every `reload_check_secs` and swapped in without a restart. A replacement
//!   that does not parse or whose key does not match is refused, the old pair keeps serving,
//!   and the status page shows the problem (a half-written renewal fixes itself on the next
//!   check once both files are written).
//! - **Self-signed** otherwise: generated once with rcgen (ECDSA P-256, ten years) and kept in
//!   the data dir, so browsers that pinned an exception keep working after restarts. Good for
//!   the admin page, not for the Capture app.
//!
//! The resolver hands out the current [`CertifiedKey`] per handshake, so a swap applies to the
//! next connection and never drops live ones.

use std::fs;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::crypto::{CryptoProvider, ring};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, version};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::{info, warn};

/// `[tls]` in `clinicbox.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// Serve HTTPS. Default: `true`.
    pub enabled: bool,
    /// HTTPS listen addresses. Default: `["0.0.0.0:443"]`; `--demo` uses `127.0.0.1:8443`.
    pub listen: Vec<SocketAddr>,
    /// Installed certificate chain (PEM, leaf first). Default: `<data_dir>/tls/fullchain.pem`.
    pub cert_file: Option<PathBuf>,
    /// Installed private key (PEM, PKCS#8, SEC1 or PKCS#1). Default: `<data_dir>/tls/privkey.pem`.
    pub key_file: Option<PathBuf>,
    /// How often the installed files are checked for replacement, in seconds. Default: `5`.
    pub reload_check_secs: u64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: vec![SocketAddr::from(([0, 0, 0, 0], 443))],
            cert_file: None,
            key_file: None,
            reload_check_secs: 5,
        }
    }
}

/// Where the certificate in use came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CertSource {
    Installed,
    SelfSigned,
}

/// What the status page and logs say about the certificate in use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertStatus {
    pub source: CertSource,
    /// The leaf's subject, e.g. `CN=box-0001.clinics.example.org`.
    pub subject: String,
    pub issuer: String,
    /// DNS names and IP addresses the leaf is valid for.
    pub names: Vec<String>,
    /// Validity, seconds since the Unix epoch.
    pub not_before: i64,
    pub not_after: i64,
    /// SHA-256 of the leaf's DER, lower-case hex.
    pub sha256: String,
    /// The file the leaf was read from.
    pub path: PathBuf,
    /// Why an installed certificate is not (or no longer) the one in use, if it is not.
    pub problem: Option<String>,
}

/// Errors loading or generating certificates. Each names the file and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {0}: {1}")]
    Read(PathBuf, #[source] io::Error),
    #[error("writing {0}: {1}")]
    Write(PathBuf, #[source] io::Error),
    #[error("{0}: no PEM certificate")]
    NoCertificate(PathBuf),
    #[error("{0}: no PEM private key")]
    NoKey(PathBuf),
    #[error("{0}: {1}")]
    Pem(PathBuf, String),
    #[error("{cert} and {key} do not form a usable pair: {reason}")]
    Pair {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error("{0}: not a valid X.509 certificate: {1}")]
    X509(PathBuf, String),
    #[error("generating the self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The crypto provider: ring, with only AEAD suites with forward secrecy.
pub fn provider() -> Arc<CryptoProvider> {
    use rustls::crypto::ring::cipher_suite as cs;
    Arc::new(CryptoProvider {
        cipher_suites: vec![
            cs::TLS13_AES_128_GCM_SHA256,
            cs::TLS13_AES_256_GCM_SHA384,
            cs::TLS13_CHACHA20_POLY1305_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        ],
        ..ring::default_provider()
    })
}

/// The box's certificates: the one in use and where to look for a replacement.
pub struct Certificates {
    installed_cert: PathBuf,
    installed_key: PathBuf,
    self_signed_cert: PathBuf,
    self_signed_key: PathBuf,
    self_signed_names: Vec<String>,
    provider: Arc<CryptoProvider>,
    current: RwLock<Current>,
}

struct Current {
    key: Arc<CertifiedKey>,
    status: CertStatus,
    /// The installed files as last seen, so unchanged files are not re-read.
    seen: Option<(FileStamp, FileStamp)>,
}

/// Enough of a file's metadata to notice a replacement (rename or rewrite).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    inode: u64,
    len: u64,
    mtime_ns: i128,
}

fn stamp(path: &Path) -> Option<FileStamp> {
    let m = fs::metadata(path).ok()?;
    Some(FileStamp {
        inode: m.ino(),
        len: m.len(),
        mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
    })
}

impl Certificates {
    /// Loads the installed pair if there is a valid one, else the self-signed one (generated
    /// now if missing or not valid for `self_signed_names`).
    pub fn load(
        cfg: &TlsConfig,
        data_dir: &Path,
        self_signed_names: Vec<String>,
    ) -> Result<Arc<Self>, TlsError> {
        let tls_dir = data_dir.join("tls");
        let installed_cert = cfg
            .cert_file
            .clone()
            .unwrap_or_else(|| tls_dir.join("fullchain.pem"));
        let installed_key = cfg
            .key_file
            .clone()
            .unwrap_or_else(|| tls_dir.join("privkey.pem"));
        let provider = provider();
        let self_signed_cert = tls_dir.join("self-signed.pem");
        let self_signed_key = tls_dir.join("self-signed.key");

        let seen = stamp(&installed_cert).zip(stamp(&installed_key));
        let (key, status) = match load_installed(&installed_cert, &installed_key, &provider) {
            Ok(Some(loaded)) => loaded,
            other => {
                let problem = match other {
                    Err(e) => {
                        warn!("TLS: installed certificate not used: {e}");
                        Some(e.to_string())
                    }
                    _ => None,
                };
                let (key, mut status) = self_signed(
                    &self_signed_cert,
                    &self_signed_key,
                    &self_signed_names,
                    &provider,
                )?;
                status.problem = problem;
                (key, status)
            }
        };
        log_status(&status);
        Ok(Arc::new(Self {
            installed_cert,
            installed_key,
            self_signed_cert,
            self_signed_key,
            self_signed_names,
            provider,
            current: RwLock::new(Current { key, status, seen }),
        }))
    }

    /// The certificate in use now.
    pub fn status(&self) -> CertStatus {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .status
            .clone()
    }

    /// Looks at the installed files and swaps the certificate if they changed and are valid.
    /// Returns whether the certificate in use changed.
    pub fn check_for_changes(&self) -> bool {
        let seen = stamp(&self.installed_cert).zip(stamp(&self.installed_key));
        let mut cur = self.current.write().unwrap_or_else(PoisonError::into_inner);
        if seen == cur.seen {
            return false;
        }
        cur.seen = seen;
        match load_installed(&self.installed_cert, &self.installed_key, &self.provider) {
            Ok(Some((key, status))) => {
                let changed = status.sha256 != cur.status.sha256;
                cur.key = key;
                cur.status = status;
                if changed {
                    info!("TLS: installed certificate changed, new connections use it");
                    log_status(&cur.status);
                }
                changed
            }
            Ok(None) => {
                if cur.status.source == CertSource::SelfSigned {
                    return false;
                }
                warn!("TLS: installed certificate removed, back to the self-signed one");
                match self_signed(
                    &self.self_signed_cert,
                    &self.self_signed_key,
                    &self.self_signed_names,
                    &self.provider,
                ) {
                    Ok((key, status)) => {
                        cur.key = key;
                        cur.status = status;
                        log_status(&cur.status);
                        true
                    }
                    Err(e) => {
                        warn!("TLS: keeping the removed certificate in memory: {e}");
                        false
                    }
                }
            }
            Err(e) => {
                warn!("TLS: replacement refused, the current certificate stays: {e}");
                cur.status.problem = Some(e.to_string());
                false
            }
        }
    }

    /// A rustls server config that always serves the current certificate. ALPN: h2, http/1.1.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<ServerConfig>, TlsError> {
        let mut config = ServerConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_protocol_versions(&[&version::TLS13, &version::TLS12])?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Resolver(Arc::clone(self))));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// Checks the installed files every `period` until the returned task is aborted.
    pub fn spawn_reloader(self: &Arc<Self>, period: Duration) -> tokio::task::JoinHandle<()> {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period.max(Duration::from_secs(1)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                this.check_for_changes();
            }
        })
    }
}

#[derive(Debug)]
struct Resolver(Arc<Certificates>);

impl std::fmt::Debug for Certificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificates")
            .field("installed_cert", &self.installed_cert)
            .finish()
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self
                .0
                .current
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .key,
        ))
    }
}

fn log_status(s: &CertStatus) {
    let source = match s.source {
        CertSource::Installed => "installed",
        CertSource::SelfSigned => "self-signed",
    };
    info!(
        tls.source = source,
        tls.sha256 = %s.sha256,
        tls.not_after = s.not_after,
        "TLS: serving the {source} certificate {} for {} (expires {})",
        s.subject,
        s.names.join(", "),
        format_utc(s.not_after)
    );
}

/// `Ok(None)`: no installed files (the normal first-boot state).
fn load_installed(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<Option<(Arc<CertifiedKey>, CertStatus)>, TlsError> {
    if !cert.exists() && !key.exists() {
        return Ok(None);
    }
    if let Ok(m) = fs::metadata(key)
        && m.permissions().mode() & 0o077 != 0
    {
        warn!(
            "TLS: {} is readable by other users; it should be mode 0600",
            key.display()
        );
    }
    let (ck, status) = load_pair(cert, key, provider, CertSource::Installed)?;
    Ok(Some((ck, status)))
}

fn load_pair(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
    source: CertSource,
) -> Result<(Arc<CertifiedKey>, CertStatus), TlsError> {
    let cert_pem = fs::read(cert).map_err(|e| TlsError::Read(cert.to_owned(), e))?;
    let key_pem = fs::read(key).map_err(|e| TlsError::Read(key.to_owned(), e))?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem(cert.to_owned(), e.to_string()))?;
    let Some(leaf) = chain.first() else {
        return Err(TlsError::NoCertificate(cert.to_owned()));
    };
    let status = describe(leaf, cert, source)?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoKey(key.to_owned()),
        other => TlsError::Pem(key.to_owned(), other.to_string()),
    })?;
    let pair_err = |reason: String| TlsError::Pair {
        cert: cert.to_owned(),
        key: key.to_owned(),
        reason,
    };
    let ck =
        CertifiedKey::from_der(chain, key_der, provider).map_err(|e| pair_err(e.to_string()))?;
    Ok((Arc::new(ck), status))
}

fn describe(
    leaf: &CertificateDer<'_>,
    path: &Path,
    source: CertSource,
) -> Result<CertStatus, TlsError> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, x509) = X509Certificate::from_der(leaf.as_ref())
        .map_err(|e| TlsError::X509(path.to_owned(), e.to_string()))?;
    let names = match x509.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(d) => Some((*d).to_owned()),
                GeneralName::IPAddress(b) => ip_from_bytes(b).map(|ip| ip.to_string()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    Ok(CertStatus {
        source,
        subject: x509.subject().to_string(),
        issuer: x509.issuer().to_string(),
        names,
        not_before: x509.validity().not_before.timestamp(),
        not_after: x509.validity().not_after.timestamp(),
        sha256: hex(&Sha256::digest(leaf.as_ref())),
        path: path.to_owned(),
        problem: None,
    })
}

fn ip_from_bytes(b: &[u8]) -> Option<std::net::IpAddr> {
    match b.len() {
        4 => <[u8; 4]>::try_from(b).ok().map(std::net::IpAddr::from),
        16 => <[u8; 16]>::try_from(b).ok().map(std::net::IpAddr::from),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Loads the self-signed pair, or generates it when missing, unreadable or not valid for
/// every name in `names` (e.g. a public name was configured since).
fn self_signed(
    cert: &Path,
    key: &Path,
    names: &[String],
    provider: &CryptoProvider,
) -> Result<(Arc<CertifiedKey>, CertStatus), TlsError> {
    if cert.exists() && key.exists() {
        match load_pair(cert, key, provider, CertSource::SelfSigned) {
            Ok((ck, status)) if names.iter().all(|n| status.names.contains(n)) => {
                return Ok((ck, status));
            }
            Ok(_) => info!("TLS: box names changed, generating a new self-signed certificate"),
            Err(e) => warn!("TLS: self-signed certificate unusable ({e}), generating a new one"),
        }
    }
    generate_self_signed(cert, key, names)?;
    load_pair(cert, key, provider, CertSource::SelfSigned)
}

fn generate_self_signed(cert: &Path, key: &Path, names: &[String]) -> Result<(), TlsError> {
    let key_pair = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(names.to_vec())?;
    let cn = names
        .first()
        .cloned()
        .unwrap_or_else(|| "clinicbox".to_owned());
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "ClinicBox (self-signed)");
    let (y, m, d) = civil_date(now_secs());
    // A day of slack for a box whose clock was set slightly late.
    let (py, pm, pd) = civil_date(now_secs() - 86_400);
    params.not_before = rcgen::date_time_ymd(py, pm, pd);
    params.not_after = rcgen::date_time_ymd(y + 10, m, d.min(28));
    let certificate = params.self_signed(&key_pair)?;

    let dir = cert.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| TlsError::Write(dir.to_owned(), e))?;
    write_private(key, key_pair.serialize_pem().as_bytes())?;
    write_atomic(cert, certificate.pem().as_bytes(), 0o644)?;
    info!(tls.path = %cert.display(), "TLS: generated a self-signed certificate for {}", names.join(", "));
    Ok(())
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), TlsError> {
    write_atomic(path, data, 0o600)
}

/// A power cut leaves the old file or the new one.
fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), TlsError> {
    clinicbox_process::write_atomic(path, data, mode)
        .map_err(|e| TlsError::Write(path.to_owned(), e))
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// (year, month, day) of a Unix time, UTC (Howard Hinnant's `civil_from_days`).
fn civil_date(secs: i64) -> (i32, u8, u8) {
    let z = secs.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let y = (yoe + era * 400 + i64::from(m <= 2)) as i32;
    (y, m, d)
}

/// `2026-11-21 10:30 UTC`, for logs and the status page.
pub fn format_utc(secs: i64) -> String {
    let (y, m, d) = civil_date(secs);
    let rem = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        vec![
            "clinicbox.lan".into(),
            "clinicbox.local".into(),
            "localhost".into(),
            "127.0.0.1".into(),
        ]
    }

    /// A CA-signed pair for `name`, as an ACME client would install it.
    fn issue(dir: &Path, name: &str, file_prefix: &str) -> (PathBuf, PathBuf) {
        let ca_key = rcgen::KeyPair::generate().expect("ca key");
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).expect("ca");
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = rcgen::KeyPair::generate().expect("key");
        let leaf = rcgen::CertificateParams::new(vec![name.to_owned()])
            .expect("params")
            .signed_by(&key, &issuer)
            .expect("leaf");
        let cert_path = dir.join(format!("{file_prefix}fullchain.pem"));
        let key_path = dir.join(format!("{file_prefix}privkey.pem"));
        fs::write(&cert_path, format!("{}{}", leaf.pem(), ca_cert.pem())).expect("write");
        fs::write(&key_path, key.serialize_pem()).expect("write");
        (cert_path, key_path)
    }

    #[test]
    fn self_signed_is_generated_once_and_kept() {
        let dir = tempfile::tempdir().expect("tmp");
        let cfg = TlsConfig::default();
        let a = Certificates::load(&cfg, dir.path(), names()).expect("load");
        let first = a.status();
        assert_eq!(first.source, CertSource::SelfSigned);
        assert!(
            first.names.contains(&"clinicbox.lan".to_owned()),
            "{:?}",
            first.names
        );
        assert!(
            first.names.contains(&"127.0.0.1".to_owned()),
            "{:?}",
            first.names
        );
        assert!(first.not_after > now_secs() + 9 * 365 * 86_400);
        let mode = fs::metadata(dir.path().join("tls/self-signed.key"))
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = Certificates::load(&cfg, dir.path(), names()).expect("reload");
        assert_eq!(
            b.status().sha256,
            first.sha256,
            "a restart must keep the same certificate"
        );
        let mut more = names();
        more.push("box-7.clinics.example.org".into());
        let c = Certificates::load(&cfg, dir.path(), more).expect("new names");
        assert_ne!(
            c.status().sha256,
            first.sha256,
            "new names need a new certificate"
        );
    }

    #[test]
    fn installed_pair_wins_and_is_swapped_without_restart() {
        let dir = tempfile::tempdir().expect("tmp");
        let tls = dir.path().join("tls");
        fs::create_dir_all(&tls).expect("mkdir");
        let cfg = TlsConfig::default();
        let certs = Certificates::load(&cfg, dir.path(), names()).expect("load");
        assert_eq!(certs.status().source, CertSource::SelfSigned);
        assert!(!certs.check_for_changes());

        issue(&tls, "box-7.clinics.example.org", "");
        assert!(certs.check_for_changes());
        let s = certs.status();
        assert_eq!(s.source, CertSource::Installed);
        assert_eq!(s.names, ["box-7.clinics.example.org"]);

        // A renewal written as new files and renamed over the old ones.
        let (c, k) = issue(&tls, "box-7.clinics.example.org", "new-");
        fs::rename(c, tls.join("fullchain.pem")).expect("rename");
        fs::rename(k, tls.join("privkey.pem")).expect("rename");
        assert!(certs.check_for_changes());
        assert_ne!(certs.status().sha256, s.sha256);

        // Removing the installed pair falls back to the self-signed one.
        fs::remove_file(tls.join("fullchain.pem")).expect("rm");
        fs::remove_file(tls.join("privkey.pem")).expect("rm");
        assert!(certs.check_for_changes());
        assert_eq!(certs.status().source, CertSource::SelfSigned);
    }

    #[test]
    fn mismatched_replacement_is_refused_and_old_pair_keeps_serving() {
        let dir = tempfile::tempdir().expect("tmp");
        let tls = dir.path().join("tls");
        fs::create_dir_all(&tls).expect("mkdir");
        issue(&tls, "box-7.clinics.example.org", "");
        let certs = Certificates::load(&TlsConfig::default(), dir.path(), names()).expect("load");
        let good = certs.status();
        assert_eq!(good.source, CertSource::Installed);

        // Only the certificate replaced so far (a renewal half-written).
        let (c, _k) = issue(&tls, "box-7.clinics.example.org", "other-");
        fs::rename(c, tls.join("fullchain.pem")).expect("rename");
        assert!(!certs.check_for_changes());
        let now = certs.status();
        assert_eq!(now.sha256, good.sha256);
        assert!(
            now.problem.as_deref().is_some_and(|p| p.contains("pair")),
            "{:?}",
            now.problem
        );

        // Garbage is refused too, with the file named.
        fs::write(tls.join("privkey.pem"), "not a key").expect("write");
        assert!(!certs.check_for_changes());
        assert!(
            certs
                .status()
                .problem
                .as_deref()
                .is_some_and(|p| p.contains("privkey.pem"))
        );
    }

    #[test]
    fn broken_installed_files_at_start_fall_back_with_the_reason() {
        let dir = tempfile::tempdir().expect("tmp");
        let tls = dir.path().join("tls");
        fs::create_dir_all(&tls).expect("mkdir");
        fs::write(tls.join("fullchain.pem"), "junk").expect("write");
        let certs = Certificates::load(&TlsConfig::default(), dir.path(), names()).expect("load");
        let s = certs.status();
        assert_eq!(s.source, CertSource::SelfSigned);
        assert!(s.problem.is_some());
    }

    #[test]
    fn only_tls12_and_tls13_with_aead_suites() {
        let p = provider();
        for s in &p.cipher_suites {
            let name = format!("{:?}", s.suite());
            assert!(name.contains("GCM") || name.contains("CHACHA20"), "{name}");
        }
        let dir = tempfile::tempdir().expect("tmp");
        let certs = Certificates::load(&TlsConfig::default(), dir.path(), names()).expect("load");
        let cfg = certs.server_config().expect("config");
        assert_eq!(cfg.alpn_protocols[0], b"h2");
    }

    #[test]
    fn dates() {
        assert_eq!(civil_date(0), (1970, 1, 1));
        assert_eq!(civil_date(951_782_400), (2000, 2, 29));
        assert_eq!(format_utc(1_700_000_000), "2023-11-14 22:13 UTC");
    }

    #[test]
    fn config_defaults_and_demo_shape() {
        let cfg: TlsConfig = toml::from_str("").expect("empty");
        assert_eq!(cfg, TlsConfig::default());
        let cfg: TlsConfig =
            toml::from_str("listen = [\"127.0.0.1:8443\"]\nreload_check_secs = 2").expect("cfg");
        assert_eq!(cfg.listen[0].port(), 8443);
        assert!(toml::from_str::<TlsConfig>("lisen = []").is_err());
    }
}
