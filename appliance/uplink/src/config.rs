//! `[uplink]` in `clinicbox.toml`. Every key has a default; unknown keys are errors.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct UplinkConfig {
    /// Base URL of the national DHIS2, context path allowed (`https://hmis.example.org/dhis`).
    /// Unset: the uplink has nowhere to send and says so.
    pub national_url: Option<String>,
    /// A file holding the sync user's personal access token (`d2pat_…`/`d2p_…`), sent as
    /// `Authorization: ApiToken …`. Preferred over a password.
    pub token_file: Option<PathBuf>,
    /// The sync user's username, with `password_file` (HTTP Basic), when there is no token.
    pub username: Option<String>,
    /// A file holding that user's password (first line).
    pub password_file: Option<PathBuf>,
    /// A PEM file of extra root certificates (a ministry's own CA), trusted next to the
    /// system's roots.
    pub ca_file: Option<PathBuf>,
    /// The WAN interface whose default route means "national may be reachable": `wan0` (the
    /// image names an LTE dongle so), or `any` for any default route not via the LAN interface.
    pub interface: String,
    /// Seconds between rounds while the link stays up. Default 300.
    pub interval_secs: u64,
    /// `pause` (wait until mains power is back) or `continue` while the box runs on battery.
    pub on_battery: OnBattery,
    /// The socket `clinicbox serve` offers the uplink. Default `/run/clinicbox-uplink/uplink.sock`; a
    /// demo box puts it in its data directory.
    pub socket: PathBuf,
    /// Group allowed to open the socket (the uplink's user's group on the image). Unset: the
    /// daemon's own group.
    pub socket_group: Option<String>,
    /// The most bytes of JSON in one request to national. Default 262144: about 30 s at
    /// 80 kbit/s, well inside `request_timeout_secs` on a bad LTE day (national's reference
    /// nginx refuses bodies over 10 MB; smaller requests lose less when a link drops). The
    /// uplink halves it after a cut or a timeout and grows it back after a success.
    pub batch_bytes: usize,
    /// Seconds one request to national may take, answer included. Default 120.
    pub request_timeout_secs: u64,
    /// Longest wait between failed rounds, in seconds (backoff doubles up to this). Default 1800.
    pub max_backoff_secs: u64,
    /// The org units whose subtree the box serves, as national UIDs. Empty (the default): the
    /// sync account's own org units at national.
    pub org_units: Vec<String>,
    /// Whether rounds pull metadata and users from national before pushing. Default true.
    pub pull_metadata: bool,
    /// How many values national reserved for the box each pool keeps (one pool per generated
    /// attribute, and per org-unit code when its pattern has one): a round tops a pool up to
    /// this when it has fallen below half. Tablets get these before the box's own slice.
    /// 0: reserve none. Default 500.
    pub reserved_values: usize,
    /// Seconds between check-ins to national's dataStore (`clinicbox-fleet/<box id>`, about
    /// 1 KB each, with a read of `clinicbox-fleet-config/<box id>`): the first round after the
    /// uplink starts checks in, then a round at least this long after the last check-in.
    /// 0: never check in. Default 21600 (6 h: about 0.4 MB a month).
    pub check_in_secs: u64,
    /// `[uplink.update]`: fetching signed updates from a mirror.
    pub update: UpdateConfig,
}

/// `[uplink.update]`: where the uplink looks for signed updates and where it stages them for
/// `clinicbox update`. Off until `mirror_url` is set.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpdateConfig {
    /// Base URL of the TUF repository (`https://updates.example.org/clinicbox/`, holding
    /// `metadata/` and `targets/`), reached over the WAN like national, with the same CA.
    /// Unset (the default): the uplink fetches no update.
    pub mirror_url: Option<String>,
    /// The repository's root metadata the release ships, trusted until the repository signs a
    /// newer one. Default `/usr/share/clinicbox/update-root.json`.
    pub root_file: PathBuf,
    /// The uplink's update folder: `staging/` (the verified metadata and the release, for
    /// `clinicbox update`), `trusted/` (the metadata it trusted last) and `clock-floor`.
    /// Default `/data/uplink-update`.
    pub dir: PathBuf,
    /// The board whose releases the box takes (`nuc`, `pi4`, `pi5`); required with
    /// `mirror_url` (the image sets it from `hw/<board>.toml`).
    pub board: Option<String>,
    /// Seconds between checks of the mirror while the link is up; a download that was cut
    /// is resumed at the next round. Default 21600 (6 h).
    pub check_secs: u64,
    /// The installer's folder (`[update] state_dir`, set from there): a release it refused
    /// because it came back to the old slot on this box is not fetched again.
    #[serde(skip)]
    pub installer_state_dir: PathBuf,
}

impl Default for UpdateConfig {
    fn default() -> Self {
        UpdateConfig {
            mirror_url: None,
            root_file: PathBuf::from("/usr/share/clinicbox/update-root.json"),
            dir: PathBuf::from("/data/uplink-update"),
            board: None,
            check_secs: 6 * 3600,
            installer_state_dir: PathBuf::from("/data/update"),
        }
    }
}

/// What a round pulls before it pushes.
#[derive(Debug, Clone, Copy)]
pub struct PullPlan<'a> {
    /// The org units whose metadata the round pulls; empty: the sync account's.
    pub roots: &'a [String],
    /// See [`UplinkConfig::reserved_values`].
    pub reserved_values: usize,
}

impl UplinkConfig {
    /// What a round pulls, or `None` when the pull is off.
    pub fn pull_plan(&self) -> Option<PullPlan<'_>> {
        self.pull_metadata.then_some(PullPlan {
            roots: &self.org_units,
            reserved_values: self.reserved_values,
        })
    }
}

/// What the uplink does while the box runs on its battery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnBattery {
    #[default]
    Pause,
    Continue,
}

impl Default for UplinkConfig {
    fn default() -> Self {
        UplinkConfig {
            national_url: None,
            token_file: None,
            username: None,
            password_file: None,
            ca_file: None,
            interface: "wan0".into(),
            interval_secs: 300,
            on_battery: OnBattery::Pause,
            socket: PathBuf::from(clinicbox_control::outbox::DEFAULT_UPLINK_SOCKET),
            socket_group: None,
            batch_bytes: 256 * 1024,
            request_timeout_secs: 120,
            max_backoff_secs: 1800,
            org_units: Vec::new(),
            pull_metadata: true,
            reserved_values: 500,
            check_in_secs: 6 * 3600,
            update: UpdateConfig::default(),
        }
    }
}
