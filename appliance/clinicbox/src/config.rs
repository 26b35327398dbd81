//! The daemon's configuration: one typed struct loaded from TOML, every field with a default.
//! Unknown keys are errors, so a typo in a technician's config is caught at start.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where the configuration file usually lives on a box.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/clinicbox/clinicbox.toml";

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Directory of the store (and the self-signed certificate). Default `/var/lib/clinicbox`.
    pub data_dir: PathBuf,
    /// How the box presents itself.
    #[serde(rename = "box")]
    pub box_info: BoxConfig,
    /// How the store is unlocked.
    pub store: StoreConfig,
    /// Plain-HTTP listeners (today's Capture app uses `http://`).
    pub http: HttpConfig,
    /// Logging.
    pub log: LogConfig,
    /// HTTPS next to HTTP.
    pub tls: crate::tls::TlsConfig,
    /// DNS-SD and the LAN DNS responder.
    pub discovery: clinicbox_discovery::DiscoveryConfig,
    /// The status page at `/` and `/metrics`.
    pub status: clinicbox_statuspage::StatusConfig,
    /// The tablet-facing DHIS2 API: time zone, login limits, body size.
    pub api: clinicbox_api::ApiConfig,
    /// Tracker: reserved-value ranges of this box, file size, ownership overrides.
    pub tracker: clinicbox_tracker::TrackerConfig,
    /// UPS / battery and clean shutdown (`clinicbox power`); the daemon uses `control_socket`.
    pub power: clinicbox_power::PowerConfig,
    /// The uplink to the national DHIS2 (`clinicbox uplink`); `serve` uses `socket`.
    pub uplink: clinicbox_uplink::UplinkConfig,
    /// Encrypted backups (`clinicbox backup`).
    pub backup: crate::backup::BackupConfig,
    /// Installing releases into the other root slot (`clinicbox update`).
    pub update: clinicbox_update::InstallConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("/var/lib/clinicbox"),
            box_info: BoxConfig::default(),
            store: StoreConfig::default(),
            http: HttpConfig::default(),
            log: LogConfig::default(),
            tls: Default::default(),
            discovery: Default::default(),
            status: Default::default(),
            api: Default::default(),
            tracker: Default::default(),
            power: Default::default(),
            uplink: Default::default(),
            backup: Default::default(),
            update: Default::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct BoxConfig {
    /// Short name of this box, shown on the status page and announced on the LAN.
    pub name: String,
    /// The clinic's name, for staff.
    pub clinic_name: String,
}

impl Default for BoxConfig {
    fn default() -> Self {
        BoxConfig {
            name: "clinicbox".into(),
            clinic_name: "Clinic".into(),
        }
    }
}

/// Which secret unlocks the store at start. The first one set wins, in this order.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Name of a systemd credential (in `$CREDENTIALS_DIRECTORY`) holding the key-file bytes;
    /// with `LoadCredentialEncrypted=` the key is sealed to the box's TPM2.
    pub credential: Option<String>,
    /// A key file (demo boxes; a key kept on separate media).
    pub key_file: Option<PathBuf>,
    /// A file holding the PIN/passphrase (first line).
    pub pin_file: Option<PathBuf>,
    /// The most memory the store keeps for cached pages, in MiB. Default 64; the image sets
    /// the board's (`hw/*.toml` `[store] cache_mib`). The database library's own default is
    /// 1 GiB, which on a 2 GB Pi would let the box's memory grow with its data.
    pub cache_mib: u32,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            credential: None,
            key_file: None,
            pin_file: None,
            cache_mib: 64,
        }
    }
}

impl StoreConfig {
    /// How `serve` opens the store.
    pub fn options(&self) -> clinicbox_store::StoreOptions {
        clinicbox_store::StoreOptions {
            cache_bytes: usize::try_from(self.cache_mib.max(1))
                .unwrap_or(64)
                .saturating_mul(1024 * 1024),
            ..clinicbox_store::StoreOptions::default()
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Addresses to serve plain HTTP on. Default `0.0.0.0:80`.
    pub listen: Vec<SocketAddr>,
    /// Seconds a shutdown or quiesce waits for in-flight requests. Default 20.
    pub drain_secs: u64,
    /// `Retry-After` seconds sent with 503 while the box is quiescing. Default 120.
    pub retry_after_secs: u64,
    /// A request's header must arrive within this many seconds, or the connection is closed.
    /// Default 10.
    pub header_timeout_secs: u64,
    /// A request body that sends nothing for this many seconds is refused with 408. Default 30.
    pub body_idle_secs: u64,
    /// The largest request body any route takes, in bytes (each route has its own, lower or
    /// equal limit). Default 67108864 (64 MiB).
    pub max_body_bytes: usize,
    /// The longest request target (path and query) served, in bytes; longer ones get 414.
    /// Default 16384.
    pub max_uri_bytes: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: vec![SocketAddr::from(([0, 0, 0, 0], 80))],
            drain_secs: 20,
            retry_after_secs: 120,
            header_timeout_secs: 10,
            body_idle_secs: 30,
            max_body_bytes: 64 * 1024 * 1024,
            max_uri_bytes: 16 * 1024,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A `tracing` filter, e.g. `info` or `info,clinicbox_api=debug`. Default `info`.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            filter: "info".into(),
        }
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid ClinicBox configuration: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },
}

impl Config {
    /// Loads `path`; a missing file at the default path means "all defaults".
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let (path, required) = match path {
            Some(p) => (p.to_owned(), true),
            None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Config::default());
            }
            Err(source) => return Err(ConfigError::Read { path, source }),
        };
        Config::parse(&text).map_err(|source| ConfigError::Parse {
            path,
            source: Box::new(source),
        })
    }

    pub fn parse(text: &str) -> Result<Config, toml::de::Error> {
        let mut cfg: Config = toml::from_str(text)?;
        // The uplink skips a release the installer refused; where that is written is `[update]`'s.
        cfg.uplink.update.installer_state_dir = cfg.update.state_dir.clone();
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_gives_defaults() {
        let c = Config::parse("").expect("parse");
        assert_eq!(c.http.listen, vec![SocketAddr::from(([0, 0, 0, 0], 80))]);
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/clinicbox"));
    }

    #[test]
    fn sections_override_defaults() {
        let c = Config::parse(
            "data_dir = \"/data\"\n[box]\nname = \"kisumu-1\"\n[http]\nlisten = [\"127.0.0.1:8080\"]\n[store]\nkey_file = \"/k\"\n",
        )
        .expect("parse");
        assert_eq!(c.box_info.name, "kisumu-1");
        assert_eq!(
            c.http.listen,
            vec![SocketAddr::from(([127, 0, 0, 1], 8080))]
        );
        assert_eq!(c.store.key_file, Some(PathBuf::from("/k")));
    }

    #[test]
    fn typos_are_errors() {
        assert!(Config::parse("[http]\nlisen = []\n").is_err());
        assert!(Config::parse("dta_dir = \"/x\"\n").is_err());
    }

    #[test]
    fn a_pi_image_s_update_section_reads() {
        // As image/build/customise.sh renders it for a Pi (hw/pi4.toml disk_id).
        let c = Config::parse(
            "[update]\nboot = \"rpi-tryboot\"\nroot_partitions = [\"by-partuuid/c11cb0c5-05\", \"by-partuuid/c11cb0c5-06\"]\nboot_partitions = [\"by-partuuid/c11cb0c5-02\", \"by-partuuid/c11cb0c5-03\"]\ntries = 1\n",
        )
        .expect("parse");
        assert_eq!(
            c.update.boot,
            Some(clinicbox_update::BootLoader::RpiTryboot)
        );
        assert_eq!(
            c.update.boot_partitions.map(|p| p[1].clone()),
            Some(PathBuf::from("by-partuuid/c11cb0c5-03"))
        );
    }

    #[test]
    fn a_missing_explicit_file_is_an_error() {
        assert!(Config::load(Some(Path::new("/nonexistent/clinicbox.toml"))).is_err());
    }
}
#[cfg(test)]
mod page {
    /// `docs/CONFIG.md`, the page a technician reads.
    const PAGE: &str = include_str!("../../../docs/CONFIG.md");

    /// The page's key rows per section heading (`[http]`, `[discovery.dns]`; "" at the top).
    fn documented() -> Vec<(String, String)> {
        let mut section = String::new();
        let mut out = Vec::new();
        for line in PAGE.lines() {
            if let Some(h) = line.strip_prefix("## ") {
                section = h
                    .trim_matches(|c| c == '`' || c == '[' || c == ']')
                    .to_string();
                if h == "top level" {
                    section.clear();
                }
            } else if let Some(row) = line.strip_prefix("| `") {
                let key = row.split('`').next().unwrap_or_default();
                out.push((section.clone(), key.to_string()));
            }
        }
        out
    }

    /// Every (section, key) the defaults serialize, nested tables included.
    fn keys(prefix: &str, table: &toml::Table, out: &mut Vec<(String, String)>) {
        for (k, v) in table {
            match v {
                toml::Value::Table(t) => {
                    let p = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    keys(&p, t, out);
                }
                _ => out.push((prefix.to_string(), k.clone())),
            }
        }
    }

    #[test]
    fn every_key_with_a_default_is_on_the_configuration_page() {
        let text = toml::to_string(&super::Config::default()).expect("defaults serialize");
        let table: toml::Table = text.parse().expect("defaults parse");
        let mut want = Vec::new();
        keys("", &table, &mut want);
        let have = documented();
        let missing: Vec<_> = want.iter().filter(|k| !have.contains(k)).collect();
        assert!(missing.is_empty(), "docs/CONFIG.md lacks {missing:?}");
        assert!(
            want.len() > 60,
            "only {} keys: the walk lost some",
            want.len()
        );
    }

    #[test]
    fn every_key_on_the_page_is_one_the_configuration_takes() {
        for (section, key) in documented() {
            let value = if key == "kind" { "\"nut\"" } else { "0" };
            let text = match section.as_str() {
                "" => format!("{key} = {value}"),
                // The source is tagged by `kind`: without it every key is refused alike.
                "power.source" if key != "kind" => {
                    format!("[{section}]\nkind = \"nut\"\n{key} = {value}")
                }
                s => format!("[{s}]\n{key} = {value}"),
            };
            // A type error is fine (the probe's value is a guess); an unknown key is not.
            if let Err(e) = super::Config::parse(&text) {
                assert!(
                    !e.to_string().contains("unknown field"),
                    "[{section}] {key} on the page is not a key: {e}"
                );
            }
        }
    }
}
