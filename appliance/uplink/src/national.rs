//! The national DHIS2, as the uplink talks to it: who it is (`/api/system/info`, `/api/me`)
//! and the three imports the push needs. Every answer's bytes are counted; no body, token or
//! password is ever logged.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use serde::Deserialize;
use serde_json::Value;

use crate::{UplinkConfig, UplinkError};
use clinicbox_control::pull::LoginVerdict;

/// The DHIS2 versions the push is written for (`/api/tracker` with flat payloads, PATs).
pub const SUPPORTED: std::ops::RangeInclusive<u32> = 39..=43;
/// The largest answer read from national.
const MAX_ANSWER_BYTES: usize = 32 * 1024 * 1024;

/// How the uplink proves who it is.
#[derive(Clone)]
pub enum Credentials {
    Token(String),
    Basic { username: String, password: String },
}

impl Credentials {
    /// From `[uplink] token_file`, or `username` + `password_file`.
    pub fn from_config(cfg: &UplinkConfig) -> Result<Credentials, UplinkError> {
        let read = |p: &std::path::Path, what: &str| {
            std::fs::read_to_string(p)
                .map(|s| s.lines().next().unwrap_or("").trim().to_string())
                .map_err(|e| {
                    UplinkError::Config(format!("cannot read the {what} file {}: {e}", p.display()))
                })
        };
        if let Some(p) = &cfg.token_file {
            let token = read(p, "token")?;
            if token.is_empty() {
                return Err(UplinkError::Config(format!("{} is empty", p.display())));
            }
            return Ok(Credentials::Token(token));
        }
        match (&cfg.username, &cfg.password_file) {
            (Some(u), Some(p)) => Ok(Credentials::Basic {
                username: u.clone(),
                password: read(p, "password")?,
            }),
            _ => Err(UplinkError::Config(
                "no credentials for national: set [uplink] token_file, or username and password_file"
                    .into(),
            )),
        }
    }

    fn header(&self) -> Result<HeaderValue, UplinkError> {
        use base64::Engine as _;
        let text = match self {
            Credentials::Token(t) => format!("ApiToken {t}"),
            Credentials::Basic { username, password } => format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
            ),
        };
        let mut v = HeaderValue::from_str(&text).map_err(|_| {
            UplinkError::Config("the token or password has invalid characters".into())
        })?;
        v.set_sensitive(true);
        Ok(v)
    }
}

/// What `/api/system/info` told about national.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NationalInfo {
    pub version: String,
    #[serde(default)]
    pub server_date: Option<String>,
    #[serde(default)]
    pub server_time_zone_id: Option<String>,
}

/// An HTTP answer from national: status, body and `ETag`.
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
    pub etag: Option<String>,
}

/// A conditional GET's answer.
pub enum Fetched {
    /// 304: what the box has is current.
    NotModified,
    Body {
        json: Value,
        etag: Option<String>,
    },
}

/// What every HTTPS client of the uplink shares: rustls, the system's roots plus `ca_file`,
/// a connect timeout, its user agent.
pub(crate) fn https_client(cfg: &UplinkConfig) -> Result<reqwest::ClientBuilder, UplinkError> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .connect_timeout(Duration::from_secs(30))
        .user_agent(concat!("clinicbox-uplink/", env!("CARGO_PKG_VERSION")));
    if let Some(ca) = &cfg.ca_file {
        let pem = std::fs::read(ca).map_err(|e| {
            UplinkError::Config(format!("cannot read ca_file {}: {e}", ca.display()))
        })?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| UplinkError::Config(format!("ca_file {} is not PEM: {e}", ca.display())))?
        {
            builder = builder.add_root_certificate(cert);
        }
    }
    Ok(builder)
}

/// A client for one national server.
pub struct National {
    base: String,
    http: reqwest::Client,
    auth: HeaderValue,
    sent: AtomicU64,
    received: AtomicU64,
}

impl National {
    /// The national `[uplink] national_url` names, with the configured credentials and CA.
    pub fn from_config(cfg: &UplinkConfig) -> Result<National, UplinkError> {
        let url = cfg.national_url.as_deref().ok_or_else(|| {
            UplinkError::Config("[uplink] national_url is not set: nowhere to send".into())
        })?;
        National::new(cfg, url)
    }

    pub fn new(cfg: &UplinkConfig, url: &str) -> Result<National, UplinkError> {
        let http = https_client(cfg)?
            .timeout(Duration::from_secs(cfg.request_timeout_secs.max(5)))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| UplinkError::Config(format!("cannot build the HTTPS client: {e}")))?;
        Ok(National {
            base: url.trim_end_matches('/').to_string(),
            http,
            auth: Credentials::from_config(cfg)?.header()?,
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
        })
    }

    /// Bytes sent and received so far (bodies).
    pub fn bytes(&self) -> (u64, u64) {
        (
            self.sent.load(Ordering::Relaxed),
            self.received.load(Ordering::Relaxed),
        )
    }

    /// `/api/system/info` and `/api/me`: national is reachable, speaks a version we know and
    /// takes our credentials.
    pub async fn connect(&self) -> Result<NationalInfo, UplinkError> {
        let info = self.get_json("/api/system/info").await?;
        let info: NationalInfo = serde_json::from_value(info).map_err(|e| {
            UplinkError::Protocol(format!("/api/system/info is not DHIS2's answer: {e}"))
        })?;
        check_version(&info.version)?;
        self.get_json("/api/me?fields=id,username").await?;
        Ok(info)
    }

    /// The org units the sync account is assigned (`/api/me`).
    pub async fn my_org_units(&self) -> Result<Vec<String>, UplinkError> {
        let me = self
            .get_json("/api/me?fields=organisationUnits[id]")
            .await?;
        Ok(me
            .get("organisationUnits")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|o| o.get("id").and_then(Value::as_str).map(str::to_string))
            .collect())
    }

    /// `GET path` with `If-None-Match: etag` when the box has one.
    pub async fn fetch(&self, path: &str, etag: Option<&str>) -> Result<Fetched, UplinkError> {
        let answer = self.get(path, etag).await?;
        refuse_auth(path, &answer)?;
        match answer.status {
            304 => Ok(Fetched::NotModified),
            200 => Ok(Fetched::Body {
                json: serde_json::from_slice(&answer.body).map_err(|e| {
                    UplinkError::Protocol(format!("{path} did not answer JSON: {e}"))
                })?,
                etag: answer.etag,
            }),
            s => Err(unexpected(path, s)),
        }
    }

    pub async fn get_json(&self, path: &str) -> Result<Value, UplinkError> {
        let answer = self.get(path, None).await?;
        refuse_auth(path, &answer)?;
        if answer.status != 200 {
            return Err(unexpected(path, answer.status));
        }
        serde_json::from_slice(&answer.body)
            .map_err(|e| UplinkError::Protocol(format!("{path} did not answer JSON: {e}")))
    }

    /// `POST /api/tracker` synchronously with `strategy`, object by object.
    pub async fn post_tracker(&self, body: &Value, strategy: &str) -> Result<Answer, UplinkError> {
        let path = format!(
            "/api/tracker?async=false&importStrategy={strategy}&atomicMode=OBJECT&reportMode=WARNINGS&skipSideEffects=true"
        );
        let bytes = serde_json::to_vec(body).map_err(|e| UplinkError::Protocol(e.to_string()))?;
        // DHIS2 does not take gzip for tracker JSON.
        self.post(&path, bytes).await
    }

    /// Whether national already holds file resource `uid` (a re-send after a cut answer).
    pub async fn has_file(&self, uid: &str) -> Result<bool, UplinkError> {
        let path = format!("/api/fileResources/{uid}");
        let answer = self.get(&path, None).await?;
        refuse_auth(&path, &answer)?;
        match answer.status {
            200 => Ok(true),
            404 => Ok(false),
            s => Err(unexpected(&path, s)),
        }
    }

    /// `POST /api/fileResources?uid=…&domain=…` (multipart `file`), keeping the box's UID so
    /// the values that reference it need no rewriting.
    pub async fn post_file(
        &self,
        file: &clinicbox_control::outbox::FileRef,
        bytes: Vec<u8>,
    ) -> Result<Answer, UplinkError> {
        let len = bytes.len() as u64;
        // The type the box decided from the bytes; anything odd goes as octet-stream.
        let ct = &file.content_type;
        let ct = if ct.contains('/') && ct.chars().all(|c| c.is_ascii_graphic()) {
            ct.as_str()
        } else {
            "application/octet-stream"
        };
        let part = reqwest::multipart::Part::bytes(bytes)
            .file_name(file.name.clone())
            .mime_str(ct)
            .map_err(|e| UplinkError::Protocol(format!("file {}: {e}", file.uid)))?;
        let path = "/api/fileResources";
        let req = self
            .http
            .post(self.url(path))
            .query(&[("uid", file.uid.as_str()), ("domain", file.domain.as_str())])
            .multipart(reqwest::multipart::Form::new().part("file", part));
        let answer = self.exchange(req).await?;
        self.sent.fetch_add(len, Ordering::Relaxed);
        refuse_auth(path, &answer)?;
        Ok(answer)
    }

    /// `POST /api/dataValueSets`, gzip body (national sniffs the magic bytes).
    pub async fn post_data_values(&self, body: &Value) -> Result<Answer, UplinkError> {
        self.post(
            "/api/dataValueSets?importStrategy=CREATE_AND_UPDATE",
            gzip(body)?,
        )
        .await
    }

    /// `POST /api/completeDataSetRegistrations`, gzip body.
    pub async fn post_registrations(&self, body: &Value) -> Result<Answer, UplinkError> {
        self.post(
            "/api/completeDataSetRegistrations?importStrategy=CREATE_AND_UPDATE",
            gzip(body)?,
        )
        .await
    }

    /// Who owns `te` in `program` at national now (`trackedEntity`, `trackedEntityType`,
    /// `orgUnit`, `programOwners`); `None` when national does not let the box see her (a
    /// protected program's patient moved elsewhere: 403) or holds no such patient (404).
    pub async fn owners_of(&self, te: &str, program: &str) -> Result<Option<Value>, UplinkError> {
        let path = format!(
            "/api/tracker/trackedEntities/{te}?program={program}&fields=trackedEntity,trackedEntityType,orgUnit,programOwners[orgUnit,program]"
        );
        let answer = self.get(&path, None).await?;
        match answer.status {
            200 => serde_json::from_slice(&answer.body)
                .map(Some)
                .map_err(|e| UplinkError::Protocol(format!("{path} did not answer JSON: {e}"))),
            403 | 404 => Ok(None),
            _ => {
                refuse_auth(&path, &answer)?;
                Err(unexpected(&path, answer.status))
            }
        }
    }

    /// `PUT /api/tracker/ownership/transfer`: a program owner moved on the box. A 403 here is
    /// about this one entity (its owner is no longer the box's at national), not the account.
    pub async fn transfer_ownership(
        &self,
        t: &clinicbox_control::outbox::OwnershipTransfer,
    ) -> Result<Answer, UplinkError> {
        let path = "/api/tracker/ownership/transfer";
        let req = self.http.put(self.url(path)).query(&[
            ("trackedEntity", t.tracked_entity.as_str()),
            ("program", t.program.as_str()),
            ("ou", t.org_unit.as_str()),
        ]);
        let answer = self.exchange(req).await?;
        if answer.status == 401 {
            refuse_auth(path, &answer)?;
        }
        Ok(answer)
    }

    /// `GET /api/dataStore/{ns}/{key}`: its value, `None` when national holds none (404).
    /// Values over `max_bytes` are refused unread.
    pub async fn data_store_get(
        &self,
        ns: &str,
        key: &str,
        max_bytes: usize,
    ) -> Result<Option<Value>, UplinkError> {
        self.get_bounded(&format!("/api/dataStore/{ns}/{key}"), max_bytes)
            .await
    }

    /// `GET /api/dataStore/{ns}`: the namespace's keys (none when national has no such
    /// namespace yet).
    pub async fn data_store_keys(&self, ns: &str) -> Result<Vec<String>, UplinkError> {
        let path = format!("/api/dataStore/{ns}");
        match self.get_bounded(&path, MAX_ANSWER_BYTES).await? {
            None => Ok(Vec::new()),
            Some(v) => serde_json::from_value(v)
                .map_err(|e| UplinkError::Protocol(format!("{path} is not a list of keys: {e}"))),
        }
    }

    /// `GET path`: its JSON, `None` on 404, refused when over `max_bytes`.
    async fn get_bounded(
        &self,
        path: &str,
        max_bytes: usize,
    ) -> Result<Option<Value>, UplinkError> {
        let answer = self.get(path, None).await?;
        refuse_auth(path, &answer)?;
        match answer.status {
            404 => Ok(None),
            200 if answer.body.len() > max_bytes => Err(UplinkError::Protocol(format!(
                "{path} holds {} bytes, more than the {max_bytes} the box reads",
                answer.body.len()
            ))),
            200 => serde_json::from_slice(&answer.body)
                .map(Some)
                .map_err(|e| UplinkError::Protocol(format!("{path} is not JSON: {e}"))),
            s => Err(unexpected(path, s)),
        }
    }

    /// Writes `value` to `{ns}/{key}` whether national holds the key yet or not: `PUT` (404:
    /// no such key) then `POST` (409: another round made it meanwhile) then `PUT` once more.
    pub async fn data_store_put(
        &self,
        ns: &str,
        key: &str,
        value: &Value,
    ) -> Result<(), UplinkError> {
        let path = format!("/api/dataStore/{ns}/{key}");
        let body = serde_json::to_vec(value).map_err(|e| UplinkError::Protocol(e.to_string()))?;
        for method in [
            reqwest::Method::PUT,
            reqwest::Method::POST,
            reqwest::Method::PUT,
        ] {
            let req = self
                .http
                .request(method, self.url(&path))
                .header(CONTENT_TYPE, "application/json")
                .body(body.clone());
            let answer = self.exchange(req).await?;
            self.sent.fetch_add(body.len() as u64, Ordering::Relaxed);
            refuse_auth(&path, &answer)?;
            match answer.status {
                200 | 201 | 204 => return Ok(()),
                404 | 409 => continue,
                s => return Err(unexpected(&path, s)),
            }
        }
        Err(UplinkError::Protocol(format!(
            "{path}: national kept answering that the key both exists and does not"
        )))
    }

    async fn post(&self, path: &str, body: Vec<u8>) -> Result<Answer, UplinkError> {
        let len = body.len() as u64;
        let req = self
            .http
            .post(self.url(path))
            .header(CONTENT_TYPE, "application/json")
            .body(body);
        let answer = self.exchange(req).await?;
        self.sent.fetch_add(len, Ordering::Relaxed);
        refuse_auth(path, &answer)?;
        Ok(answer)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A staff member's first login on the box, checked with their own credentials
    /// (`/api/me`, once): 200 right, 401 wrong, anything else no answer.
    pub async fn check_password(&self, username: &str, password: &[u8]) -> LoginVerdict {
        use base64::Engine as _;
        let mut pair = format!("{username}:").into_bytes();
        pair.extend_from_slice(password);
        let text = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(&pair)
        );
        let Ok(mut auth) = HeaderValue::from_str(&text) else {
            return LoginVerdict::Wrong;
        };
        auth.set_sensitive(true);
        let req = self.http.get(self.url("/api/me?fields=id"));
        match self.exchange_as(req, auth).await {
            Ok(a) if a.status == 200 => LoginVerdict::Right,
            Ok(a) if a.status == 401 => LoginVerdict::Wrong,
            _ => LoginVerdict::Unavailable,
        }
    }

    /// `GET path`, tried again on a cut connection: a GET changes nothing at national, and
    /// on a bad link one cut should not cost the whole round.
    async fn get(&self, path: &str, etag: Option<&str>) -> Result<Answer, UplinkError> {
        let mut tries = 0;
        loop {
            let mut req = self.http.get(self.url(path));
            if let Some(tag) = etag {
                req = req.header(reqwest::header::IF_NONE_MATCH, tag);
            }
            match self.exchange(req).await {
                Err(UplinkError::Unreachable(e)) if tries + 1 < GET_TRIES => {
                    tries += 1;
                    tracing::debug!(path, error = %e, "GET cut; trying again");
                }
                other => return other,
            }
        }
    }

    async fn exchange(&self, req: reqwest::RequestBuilder) -> Result<Answer, UplinkError> {
        self.exchange_as(req, self.auth.clone()).await
    }

    async fn exchange_as(
        &self,
        req: reqwest::RequestBuilder,
        auth: HeaderValue,
    ) -> Result<Answer, UplinkError> {
        let mut resp = req
            .header(AUTHORIZATION, auth)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| UplinkError::Unreachable(describe(&e)))?;
        let status = resp.status().as_u16();
        let etag = resp
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| {
            UplinkError::Unreachable(format!("the answer was cut off: {}", describe(&e)))
        })? {
            if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(UplinkError::Protocol(
                    "national's answer is too large".into(),
                ));
            }
            body.extend_from_slice(&chunk);
        }
        self.received
            .fetch_add(body.len() as u64, Ordering::Relaxed);
        Ok(Answer { status, body, etag })
    }
}

/// How many times a GET is tried on a cut connection.
const GET_TRIES: u32 = 3;

/// 401 and 403 stop the round: nothing is marked sent.
fn refuse_auth(path: &str, answer: &Answer) -> Result<(), UplinkError> {
    match answer.status {
        401 => Err(UplinkError::Unauthorized(format!(
            "national refused the credentials on {path} (HTTP 401): the token may have expired or the account be disabled"
        ))),
        403 => Err(UplinkError::Unauthorized(format!(
            "national refused access to {path} (HTTP 403): the sync user lacks an authority"
        ))),
        _ => Ok(()),
    }
}

/// A GET answered with neither 200 nor 304: a refusal (4xx) is about this request and holds up
/// only what asked; anything else means national is not answering properly.
fn unexpected(path: &str, status: u16) -> UplinkError {
    let message = format!("national answered {path} with HTTP {status}");
    if (400..500).contains(&status) {
        UplinkError::Protocol(message)
    } else {
        UplinkError::Unreachable(message)
    }
}

/// `2.39`…`2.43` (with any patch or suffix) pass.
pub fn check_version(version: &str) -> Result<(), UplinkError> {
    let mut parts = version.split(['.', '-']);
    let major = parts.next().and_then(|p| p.parse::<u32>().ok());
    let minor = parts.next().and_then(|p| p.parse::<u32>().ok());
    match (major, minor) {
        (Some(2), Some(m)) if SUPPORTED.contains(&m) => Ok(()),
        _ => Err(UplinkError::Unsupported(format!(
            "national runs DHIS2 {version}; this uplink speaks 2.{}–2.{}",
            SUPPORTED.start(),
            SUPPORTED.end()
        ))),
    }
}

fn gzip(body: &Value) -> Result<Vec<u8>, UplinkError> {
    let json = serde_json::to_vec(body).map_err(|e| UplinkError::Protocol(e.to_string()))?;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(&json)
        .and_then(|_| enc.finish())
        .map_err(|e| UplinkError::Protocol(e.to_string()))
}

/// A transport error in one line, without the URL's query (no secrets are in it, but keep
/// lines short).
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "failed"
    };
    let mut text = format!("request to national {kind}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_2_39_to_2_43_pass_and_others_are_refused_with_a_reason() {
        for ok in ["2.39.0", "2.40.3.1", "2.42.3", "2.43-SNAPSHOT", "2.41"] {
            assert!(check_version(ok).is_ok(), "{ok}");
        }
        for bad in ["2.38.4", "2.44.0", "3.0", "", "banana"] {
            let e = check_version(bad).expect_err(bad).to_string();
            assert!(e.contains("2.39–2.43"), "{e}");
        }
    }
}
