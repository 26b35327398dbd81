//! The client side of the uplink socket (`clinicbox_control::outbox`): HTTP/1.1 over the Unix
//! socket `clinicbox serve` offers. One connection per request: they are local and rare.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clinicbox_control::outbox::{Batch, Confirm, Position, UplinkReport, VERSION_PREFIX};
use clinicbox_control::pull::{
    ApprovalQuery, ApprovalStates, ApprovalsRecorded, DataPlan, DataWatermark, LoginQuestion,
    LoginVerdict, MergeReport, MetadataPull, NationalTracker, NationalValues, PullOutcome,
    PullState, ReservedAdded, ReservedBlock, ReservedPool,
};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::UplinkError;

/// The largest answer read from `serve` (a batch is bounded by `MAX_BATCH_BYTES` plus JSON).
const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;
const TIMEOUT: Duration = Duration::from_secs(60);

/// `clinicbox serve`'s uplink socket.
#[derive(Debug, Clone)]
pub struct LocalBox {
    path: PathBuf,
}

impl LocalBox {
    pub fn new(path: &Path) -> LocalBox {
        LocalBox {
            path: path.to_path_buf(),
        }
    }

    /// The next batch, with the times the box stamped written in national's `zone`.
    pub async fn batch(&self, max_bytes: usize, zone: Option<&str>) -> Result<Batch, UplinkError> {
        let zone = zone
            .filter(|z| {
                z.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "/_-+".contains(c))
            })
            .map(|z| format!("&zone={z}"))
            .unwrap_or_default();
        let path = format!("/outbox?max_bytes={max_bytes}{zone}");
        self.call("GET", &path, None::<&()>).await
    }

    pub async fn confirm(&self, c: &Confirm) -> Result<Position, UplinkError> {
        self.call("POST", "/confirm", Some(c)).await
    }

    /// The bytes of a file resource; `None` if the box no longer has them.
    pub async fn file_bytes(&self, uid: &str) -> Result<Option<Bytes>, UplinkError> {
        match self
            .send("GET", &format!("/files/{uid}"), None::<&()>)
            .await
        {
            Ok(b) => Ok(Some(b)),
            Err(UplinkError::Local(m)) if m.contains("404") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The pull's bookkeeping as `serve` last kept it.
    pub async fn pull_state(&self) -> Result<PullState, UplinkError> {
        self.call("GET", "/pull", None::<&()>).await
    }

    /// Hands a metadata pull to `serve`, which imports it (or refuses it whole).
    pub async fn apply_metadata(&self, pull: &MetadataPull) -> Result<PullOutcome, UplinkError> {
        self.call("POST", "/metadata", Some(pull)).await
    }

    /// Which approval states the box needs, one query per workflow.
    pub async fn approval_queries(&self) -> Result<Vec<ApprovalQuery>, UplinkError> {
        self.call("GET", "/approvals", None::<&()>).await
    }

    /// Hands national's states for one query to `serve`; returns how many changed.
    pub async fn record_approvals(&self, answer: &ApprovalStates) -> Result<usize, UplinkError> {
        let r: ApprovalsRecorded = self.call("POST", "/approvals", Some(answer)).await?;
        Ok(r.changed)
    }

    /// The box's data sets and the data pull's watermark.
    pub async fn data_plan(&self) -> Result<DataPlan, UplinkError> {
        self.call("GET", "/data", None::<&()>).await
    }

    /// Hands national's changed values of one data set to `serve` to merge.
    pub async fn merge_values(&self, body: &NationalValues) -> Result<MergeReport, UplinkError> {
        self.call("POST", "/data/values", Some(body)).await
    }

    /// Hands a page of national's changed tracker objects to `serve` to merge.
    pub async fn merge_tracker(&self, body: &NationalTracker) -> Result<MergeReport, UplinkError> {
        self.call("POST", "/data/tracker", Some(body)).await
    }

    /// Keeps national's time the data pull covered.
    pub async fn keep_data_watermark(&self, watermark: &str) -> Result<(), UplinkError> {
        let body = DataWatermark {
            watermark: watermark.to_string(),
        };
        self.send("POST", "/data/watermark", Some(&body))
            .await
            .map(|_| ())
    }

    /// The pools of national reserved values the box keeps, and how full they are.
    pub async fn reserved_pools(&self) -> Result<Vec<ReservedPool>, UplinkError> {
        self.call("GET", "/reserved", None::<&()>).await
    }

    /// Hands values national reserved to `serve`; returns how many were new to the box.
    pub async fn add_reserved(&self, block: &ReservedBlock) -> Result<usize, UplinkError> {
        let r: ReservedAdded = self.call("POST", "/reserved", Some(block)).await?;
        Ok(r.added)
    }

    /// The next first login to check at national; `None` when none came in a long poll.
    pub async fn next_login(&self) -> Result<Option<LoginQuestion>, UplinkError> {
        let bytes = self.send("GET", "/logins/next", None::<&()>).await?;
        if bytes.is_empty() {
            return Ok(None);
        }
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| UplinkError::Local(format!("unreadable login question: {e}")))
    }

    pub async fn answer_login(&self, id: u64, verdict: LoginVerdict) -> Result<(), UplinkError> {
        let body = serde_json::json!({ "verdict": verdict });
        match self
            .send("POST", &format!("/logins/{id}"), Some(&body))
            .await
        {
            // The tablet gave up waiting: nothing to do.
            Err(UplinkError::Local(m)) if m.contains("404") => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// The box's check-in as `serve` sees it (`clinicbox_control::fleet`).
    pub async fn fleet_check_in(&self) -> Result<clinicbox_control::fleet::CheckIn, UplinkError> {
        self.call("GET", "/fleet/check-in", None::<&()>).await
    }

    /// Hands national's remote configuration for this box to `serve`; what it did with it.
    pub async fn fleet_config(
        &self,
        raw: &serde_json::Value,
    ) -> Result<clinicbox_control::fleet::ConfigEcho, UplinkError> {
        self.call("POST", "/fleet/config", Some(raw)).await
    }

    pub async fn position(&self) -> Result<Position, UplinkError> {
        self.call("GET", "/position", None::<&()>).await
    }

    /// Tells the status page where the uplink stands. Best effort: a box that is restarting
    /// hears the next one.
    pub async fn report(&self, r: &UplinkReport) {
        if let Err(e) = self.send("POST", "/report", Some(r)).await {
            tracing::debug!(error = %e, "could not report to serve");
        }
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, UplinkError> {
        let bytes = self.send(method, path, body).await?;
        serde_json::from_slice(&bytes)
            .map_err(|e| UplinkError::Local(format!("unreadable answer to {path}: {e}")))
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<Bytes, UplinkError> {
        tokio::time::timeout(TIMEOUT, self.exchange(method, path, body))
            .await
            .map_err(|_| UplinkError::Local(format!("serve did not answer {path} in time")))?
    }

    async fn exchange(
        &self,
        method: &str,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<Bytes, UplinkError> {
        let local = |what: &str, e: &dyn std::fmt::Display| {
            UplinkError::Local(format!("{what} {}: {e}", self.path.display()))
        };
        let stream = tokio::net::UnixStream::connect(&self.path)
            .await
            .map_err(|e| local("cannot reach clinicbox serve at", &e))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| local("no HTTP on", &e))?;
        tokio::spawn(conn);
        let payload = match body {
            Some(b) => serde_json::to_vec(b).map_err(|e| UplinkError::Local(e.to_string()))?,
            None => Vec::new(),
        };
        let req = hyper::Request::builder()
            .method(method)
            .uri(format!("{VERSION_PREFIX}{path}"))
            .header("host", "clinicbox")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(payload)))
            .map_err(|e| UplinkError::Local(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| local("request failed on", &e))?;
        let status = resp.status();
        let bytes = Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| local("answer cut off on", &e))?
            .to_bytes();
        if status == hyper::StatusCode::CONFLICT {
            return Err(UplinkError::Moved(String::from_utf8_lossy(&bytes).into()));
        }
        if !status.is_success() {
            return Err(UplinkError::Local(format!(
                "serve answered {path} with {status}: {}",
                String::from_utf8_lossy(&bytes)
            )));
        }
        Ok(bytes)
    }
}
