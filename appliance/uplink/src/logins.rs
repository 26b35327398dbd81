//! First logins relayed to national: while the WAN link is up, the uplink long-polls `serve`
//! for logins the box cannot verify (a staff account national sent, with no hash yet) and
//! answers each with national's word on the user's own credentials. Nothing is logged but the
//! verdict; the password lives in memory for the one request.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use clinicbox_control::pull::LoginVerdict;

use crate::daemon::link_up;
use crate::local::LocalBox;
use crate::national::National;

/// The wait after the link or `serve` was not there.
const RETRY: Duration = Duration::from_secs(5);

/// Runs until the task is aborted.
pub async fn relay(
    local: LocalBox,
    national: Arc<National>,
    interface: String,
    lan: Option<String>,
) {
    loop {
        if !link_up(&interface, lan.as_deref()) {
            tokio::time::sleep(RETRY).await;
            continue;
        }
        match local.next_login().await {
            Ok(Some(q)) => {
                let verdict =
                    match base64::engine::general_purpose::STANDARD.decode(&q.password_b64) {
                        Ok(password) => national.check_password(&q.username, &password).await,
                        Err(_) => LoginVerdict::Wrong,
                    };
                tracing::info!(?verdict, "first login checked at national");
                if let Err(e) = local.answer_login(q.id, verdict).await {
                    tracing::debug!(error = %e, "could not answer a login");
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::debug!(error = %e, "no login relay for now");
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}
