//! `GET /api/system/info` and `GET /api/loginConfig` bodies.

use serde::{Deserialize, Serialize};

/// The DHIS2 version the box presents. The SDK gates on a `2.30`…`2.43` prefix; 2.42 forces the
/// new tracker importer/exporter and the single file-download path.
pub const DHIS2_VERSION: &str = "2.42.3";

/// Fields of `system/info` the Android SDK reads (plus a few DHIS2 always sends).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SystemInfo {
    pub version: String,
    pub revision: String,
    /// `yyyy-MM-ddTHH:mm:ss.SSS` in `server_time_zone_id`; tablets store it as their next
    /// `updatedAfter` watermark.
    pub server_date: String,
    pub server_time_zone_id: String,
    pub server_time_zone_display_name: String,
    /// Primary key of the tablet's system-info row; must be present.
    pub context_path: String,
    pub date_format: String,
    pub calendar: String,
    pub system_name: String,
    pub system_id: String,
    pub encryption: bool,
    pub is_metadata_version_enabled: bool,
    pub is_metadata_sync_enabled: bool,
}

/// `loginPageLayout` values the SDK accepts (`valueOf` on anything else throws).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum LoginPageLayout {
    Default,
    Sidebar,
    Custom,
}

/// `GET /api/loginConfig`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoginConfig {
    pub api_version: String,
    pub application_title: String,
    pub application_description: String,
    pub ui_locale: String,
    pub login_page_layout: LoginPageLayout,
    pub allow_account_recovery: bool,
    pub email_configured: bool,
    pub self_registration_enabled: bool,
    pub self_registration_no_recaptcha: bool,
    pub use_custom_logo_front: bool,
    pub min_password_length: String,
    pub max_password_length: String,
    pub oidc_providers: Vec<serde_json::Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_passes_the_sdk_prefix_gate() {
        let allowed: Vec<String> = (30..=43).map(|m| format!("2.{m}")).collect();
        assert!(
            allowed
                .iter()
                .any(|p| DHIS2_VERSION.starts_with(p.as_str()))
        );
        assert!(DHIS2_VERSION.starts_with("2.42"));
    }

    #[test]
    fn login_page_layout_uses_enum_names() {
        assert_eq!(
            serde_json::to_value(LoginPageLayout::Default).unwrap(),
            "DEFAULT"
        );
    }
}
