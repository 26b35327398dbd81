//! HTTP Basic authentication on every call: Argon2id password hashes, a verification cache so
//! Basic-on-every-request stays cheap, and failed-login limits per username and per address.
//!
//! Order of checks: a credential already verified (cache hit) passes; then the address limit
//! (an address that keeps failing gets 429s); then, for a username with many recent failures, a
//! slow-down — never a lock — that spares the devices that logged in as that user before: a
//! stranger guessing passwords can slow guessing down for new devices, but cannot lock a
//! clinic's tablets or staff out. Then one Argon2id verification off the async threads.
//! "Account disabled" is sent only after the password was right and the account really is
//! disabled.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::{AUTHORIZATION, USER_AGENT};
use axum::http::request::Parts;
use base64::Engine;
use sha2::{Digest, Sha256};

use crate::ApiState;
use crate::error::ApiError;
use crate::scope::AuthUser;

/// What national said of a password, asked through the uplink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Right,
    Wrong,
    /// No answer: the uplink is offline, busy or national did not answer in time.
    Unavailable,
}

/// Asks the national DHIS2 whether a staff member's password is right: a national account's
/// first login on the box, or its first after national changed the password (the box holds no
/// hash for it then). Called only after the failed-login limits, with the user's own words.
pub trait PasswordCheck: Send + Sync {
    fn check<'a>(
        &'a self,
        uid: &'a str,
        username: &'a str,
        password: &'a [u8],
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Verdict> + Send + 'a>>;
}

/// Argon2 refused to hash a password (it does so only for parameters out of range).
#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashError(String);

impl From<HashError> for ApiError {
    fn from(e: HashError) -> ApiError {
        ApiError::Internal(e.to_string())
    }
}

/// Hashes a password with Argon2id (the crate's defaults: 19 MiB, 2 passes) and a random salt.
pub fn hash_password(password: &str) -> Result<String, HashError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| HashError(e.to_string()))
}

/// Checks a password against a stored PHC hash; a malformed hash never verifies.
pub fn verify_password(password: &[u8], hash: &str) -> bool {
    Argon2::default().verify_password(password, hash).is_ok()
}

/// A hash of a password nobody has, verified when the username is unknown so that unknown and
/// known usernames take the same time.
fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_password("decoy password that never matches").unwrap_or_default())
}

/// Limits for failed logins (also the `api` config section's fields).
#[derive(Debug, Clone, Copy)]
pub struct LoginLimits {
    /// Failed logins for one username within `window` before attempts for it from devices that
    /// never logged in as it are slowed down to one per `slowdown`.
    pub per_user: usize,
    /// Failed logins from one client address within `window` before it gets 429s.
    pub per_address: usize,
    pub window: Duration,
    /// How long a verified credential stays in the cache.
    pub cache_ttl: Duration,
    /// While a username is slowed down: one attempt per this from unknown devices.
    pub slowdown: Duration,
    /// How long an address that logged in as a user counts as that user's known device.
    pub known_device_ttl: Duration,
}

impl Default for LoginLimits {
    fn default() -> Self {
        LoginLimits {
            per_user: 5,
            per_address: 30,
            window: Duration::from_secs(15 * 60),
            cache_ttl: Duration::from_secs(60 * 60),
            slowdown: Duration::from_secs(30),
            known_device_ttl: Duration::from_secs(30 * 24 * 60 * 60),
        }
    }
}

const MAX_TRACKED: usize = 10_000;
const MAX_CACHED: usize = 4_096;

#[derive(Default)]
struct Failures {
    by_key: HashMap<String, VecDeque<Instant>>,
}

impl Failures {
    fn count(&mut self, key: &str, window: Duration, now: Instant) -> usize {
        let Some(q) = self.by_key.get_mut(key) else {
            return 0;
        };
        while q.front().is_some_and(|t| now.duration_since(*t) > window) {
            q.pop_front();
        }
        q.len()
    }

    fn record(&mut self, key: &str, now: Instant, cap: usize) {
        if self.by_key.len() >= MAX_TRACKED && !self.by_key.contains_key(key) {
            // Bounded memory: forget the stalest entry.
            if let Some(oldest) = self
                .by_key
                .iter()
                .min_by_key(|(_, q)| q.back().copied())
                .map(|(k, _)| k.clone())
            {
                self.by_key.remove(&oldest);
            }
        }
        let q = self.by_key.entry(key.to_string()).or_default();
        q.push_back(now);
        while q.len() > cap + 1 {
            q.pop_front();
        }
    }
}

struct CacheEntry {
    uid: String,
    /// SHA-256 of the PHC hash it was verified against: a password change invalidates it.
    hash_digest: [u8; 32],
    at: Instant,
}

/// Verification cache and failure counters. Cheap to clone.
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<AuthInner>,
}

struct AuthInner {
    limits: LoginLimits,
    /// Per-process secret mixed into cache keys, so the cache never holds a plain password hash
    /// that could be attacked offline from a memory dump.
    pepper: [u8; 32],
    cache: Mutex<HashMap<[u8; 32], CacheEntry>>,
    users: Mutex<Failures>,
    addresses: Mutex<Failures>,
    /// `(username, address)` pairs that logged in, with when: exempt from the slow-down.
    known_devices: Mutex<HashMap<(String, String), Instant>>,
    /// Per slowed-down username: when an unknown device last got its one attempt.
    last_slowed_attempt: Mutex<HashMap<String, Instant>>,
    /// Password checks running at once: each takes Argon2id's 19 MiB, so twenty tablets
    /// logging in together after a restart would otherwise take 380 MiB of a small Pi's memory.
    argon2_slots: tokio::sync::Semaphore,
}

/// Argon2id checks at once: 38 MiB at most; twenty first logins then take ten check times.
const ARGON2_AT_ONCE: usize = 2;

fn digest(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.finalize().into()
}

impl Authenticator {
    pub fn new(limits: LoginLimits) -> Self {
        let mut pepper = [0u8; 32];
        // Without OS randomness the cache keys are still salted per user; carry on.
        let _ = getrandom::fill(&mut pepper);
        Authenticator {
            inner: Arc::new(AuthInner {
                limits,
                pepper,
                cache: Mutex::new(HashMap::new()),
                users: Mutex::new(Failures::default()),
                addresses: Mutex::new(Failures::default()),
                known_devices: Mutex::new(HashMap::new()),
                last_slowed_attempt: Mutex::new(HashMap::new()),
                argon2_slots: tokio::sync::Semaphore::new(ARGON2_AT_ONCE),
            }),
        }
    }

    /// Verifies `username`/`password` (each possibly in two decodings) against the snapshot's
    /// credentials. Returns the user's UID.
    /// The answer the cache already holds for these credentials, if any: verified before and
    /// the stored hash unchanged since.
    fn cached(
        &self,
        snap: &crate::metadata::Snapshot,
        candidates: &[(String, Vec<u8>)],
        now: Instant,
    ) -> Option<Result<String, ApiError>> {
        let inner = &self.inner;
        for (username, password) in candidates {
            let key = digest(&[&inner.pepper, username.as_bytes(), password]);
            let hit = {
                let cache = inner.cache.lock().unwrap_or_else(|p| p.into_inner());
                cache.get(&key).and_then(|e| {
                    (now.duration_since(e.at) < inner.limits.cache_ttl)
                        .then(|| (e.uid.clone(), e.hash_digest))
                })
            };
            if let Some((uid, hd)) = hit {
                if let Some(cred) = snap.credential(username) {
                    let same = cred.uid == uid
                        && cred
                            .password_hash
                            .as_deref()
                            .is_some_and(|h| digest(&[h.as_bytes()]) == hd);
                    if same {
                        return Some(if cred.disabled {
                            Err(ApiError::AccountDisabled)
                        } else {
                            Ok(uid)
                        });
                    }
                }
            }
        }
        None
    }

    pub async fn authenticate(
        &self,
        state: &ApiState,
        candidates: &[(String, Vec<u8>)],
        addr: Option<IpAddr>,
    ) -> Result<String, ApiError> {
        let snap = state.metadata().snapshot()?;
        let inner = &self.inner;
        let now = Instant::now();
        // 1. Cache hit: already verified, still the same hash.
        if let Some(answer) = self.cached(&snap, candidates, now) {
            return answer;
        }
        // 2. Limits.
        let addr_key = addr
            .map(|a| a.to_string())
            .unwrap_or_else(|| "unknown".into());
        {
            let mut a = inner.addresses.lock().unwrap_or_else(|p| p.into_inner());
            if a.count(&addr_key, inner.limits.window, now) >= inner.limits.per_address {
                tracing::warn!(client.addr = %addr_key, "login refused: too many failures from this address");
                return Err(ApiError::TooManyRequests);
            }
        }
        let username = candidates.first().map(|c| c.0.clone()).unwrap_or_default();
        if self.slowed_down(&username, &addr_key, now) {
            tracing::warn!(client.addr = %addr_key, "login refused: slowed down after failures for this username");
            return Err(ApiError::AccountLocked);
        }
        // 3. Argon2id, off the async threads, a few at a time; the same tablet's other requests
        // waiting here find the first one's answer in the cache.
        let _slot = inner
            .argon2_slots
            .acquire()
            .await
            .map_err(|_| ApiError::Internal("password checks are closed".into()))?;
        if let Some(answer) = self.cached(&snap, candidates, Instant::now()) {
            return answer;
        }
        let mut jobs = Vec::new();
        for (username, password) in candidates {
            let cred = snap.credential(username).cloned();
            jobs.push((username.clone(), password.clone(), cred));
        }
        let verified = tokio::task::spawn_blocking(move || {
            for (username, password, cred) in jobs {
                let hash = cred
                    .as_ref()
                    .and_then(|c| c.password_hash.clone())
                    .unwrap_or_else(|| decoy_hash().to_string());
                if verify_password(&password, &hash) && cred.is_some() {
                    return Some((username, password, cred, hash));
                }
            }
            None
        })
        .await
        .map_err(|e| ApiError::Internal(format!("password check task failed: {e}")))?;
        match verified {
            Some((username, password, Some(cred), hash)) => {
                // The username's failures stay counted until they expire: a stranger's guesses
                // stay slowed down while the nurse logs in from her known devices.
                self.remember_device(&username, &addr_key, now);
                let mut cache = inner.cache.lock().unwrap_or_else(|p| p.into_inner());
                if cache.len() >= MAX_CACHED {
                    let ttl = inner.limits.cache_ttl;
                    cache.retain(|_, e| now.duration_since(e.at) < ttl);
                    if cache.len() >= MAX_CACHED {
                        cache.clear();
                    }
                }
                cache.insert(
                    digest(&[&inner.pepper, username.as_bytes(), &password]),
                    CacheEntry {
                        uid: cred.uid.clone(),
                        hash_digest: digest(&[hash.as_bytes()]),
                        at: now,
                    },
                );
                if cred.disabled {
                    Err(ApiError::AccountDisabled)
                } else {
                    Ok(cred.uid)
                }
            }
            _ => {
                if let Some(uid) = self
                    .confirmed_by_national(state, &snap, candidates, &addr_key, now)
                    .await?
                {
                    return Ok(uid);
                }
                let (cap_u, cap_a) = (inner.limits.per_user, inner.limits.per_address);
                inner
                    .users
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .record(&username, now, cap_u);
                inner
                    .addresses
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .record(&addr_key, now, cap_a);
                tracing::info!(client.addr = %addr_key, "login failed: bad credentials");
                Err(ApiError::Unauthorized("Unauthorized".into()))
            }
        }
    }
}

impl Authenticator {
    /// A password the box could not verify, checked at national when the account is one
    /// national sent: right, its hash is kept (the next logins need no uplink) and the user's
    /// UID returned. `None` for wrong, unknown or unanswered.
    async fn confirmed_by_national(
        &self,
        state: &ApiState,
        snap: &crate::metadata::Snapshot,
        candidates: &[(String, Vec<u8>)],
        addr_key: &str,
        now: Instant,
    ) -> Result<Option<String>, ApiError> {
        let (Some(check), Some((username, password))) =
            (state.password_check(), candidates.first())
        else {
            return Ok(None);
        };
        let Some(cred) = snap.credential(username).cloned() else {
            return Ok(None);
        };
        if check.check(&cred.uid, username, password).await != Verdict::Right {
            return Ok(None);
        }
        let text = String::from_utf8_lossy(password).into_owned();
        let hash = tokio::task::spawn_blocking(move || hash_password(&text))
            .await
            .map_err(|e| ApiError::Internal(format!("password hash task failed: {e}")))??;
        crate::users::keep_confirmed_hash(state.metadata(), username, hash.clone()).await?;
        tracing::info!(user.uid = %cred.uid, "first login checked at national; kept for offline logins");
        self.remember_device(username, addr_key, now);
        let mut cache = self.inner.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(
            digest(&[&self.inner.pepper, username.as_bytes(), password]),
            CacheEntry {
                uid: cred.uid.clone(),
                hash_digest: digest(&[hash.as_bytes()]),
                at: now,
            },
        );
        if cred.disabled {
            return Err(ApiError::AccountDisabled);
        }
        Ok(Some(cred.uid))
    }

    /// Whether this attempt must wait: the username has `per_user` recent failures, the address
    /// is not one of its known devices, and an unknown device already had its one attempt in
    /// this `slowdown` interval.
    fn slowed_down(&self, username: &str, addr_key: &str, now: Instant) -> bool {
        let inner = &self.inner;
        let failures = inner.users.lock().unwrap_or_else(|p| p.into_inner()).count(
            username,
            inner.limits.window,
            now,
        );
        if failures < inner.limits.per_user {
            return false;
        }
        let known = inner
            .known_devices
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(username.to_string(), addr_key.to_string()))
            .is_some_and(|at| now.duration_since(*at) < inner.limits.known_device_ttl);
        if known {
            return false;
        }
        let mut last = inner
            .last_slowed_attempt
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if last
            .get(username)
            .is_some_and(|at| now.duration_since(*at) < inner.limits.slowdown)
        {
            return true;
        }
        if last.len() >= MAX_TRACKED {
            let slowdown = inner.limits.slowdown;
            last.retain(|_, at| now.duration_since(*at) < slowdown);
        }
        last.insert(username.to_string(), now);
        false
    }

    fn remember_device(&self, username: &str, addr_key: &str, now: Instant) {
        let inner = &self.inner;
        let mut known = inner
            .known_devices
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if known.len() >= MAX_TRACKED {
            let ttl = inner.limits.known_device_ttl;
            known.retain(|_, at| now.duration_since(*at) < ttl);
            if known.len() >= MAX_TRACKED {
                // Bounded memory: forget the stalest device.
                if let Some(k) = known
                    .iter()
                    .min_by_key(|(_, at)| **at)
                    .map(|(k, _)| k.clone())
                {
                    known.remove(&k);
                }
            }
        }
        known.insert((username.to_string(), addr_key.to_string()), now);
    }
}

/// An `/api` call whose credentials were verified: who, from which app, from where.
pub struct LoginSeen<'a> {
    pub username: &'a str,
    pub user_agent: Option<&'a str>,
    pub addr: Option<IpAddr>,
}

/// See [`ApiState::observe_logins`].
pub type LoginObserver = Arc<dyn Fn(&LoginSeen<'_>) + Send + Sync>;

/// Decodes an `Authorization: Basic …` header into `(username, password)` candidates: UTF-8
/// first, then ISO-8859-1 when that reads differently (the SDK's login call uses ISO-8859-1,
/// later calls UTF-8).
pub fn basic_credentials(header: &str) -> Result<Vec<(String, Vec<u8>)>, ApiError> {
    let bad = || ApiError::Unauthorized("Unauthorized".into());
    let (scheme, b64) = header.trim().split_once(' ').ok_or_else(bad)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(bad());
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|_| bad())?;
    let colon = raw.iter().position(|b| *b == b':').ok_or_else(bad)?;
    let (user, pass) = (&raw[..colon], &raw[colon + 1..]);
    let latin1 = |b: &[u8]| b.iter().map(|c| char::from(*c)).collect::<String>();
    let mut out = Vec::new();
    if let (Ok(u), Ok(p)) = (std::str::from_utf8(user), std::str::from_utf8(pass)) {
        out.push((u.to_string(), p.as_bytes().to_vec()));
    }
    let (lu, lp) = (latin1(user), latin1(pass));
    let lp = lp.into_bytes();
    if !out.iter().any(|(u, p)| *u == lu && *p == lp) {
        out.push((lu, lp));
    }
    if out.iter().all(|(u, _)| u.is_empty()) {
        return Err(bad());
    }
    Ok(out)
}

impl FromRequestParts<ApiState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        if let Some(user) = parts.extensions.get::<AuthUser>() {
            return Ok(user.clone());
        }
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .ok_or_else(|| ApiError::Unauthorized("Unauthorized".into()))?;
        let candidates = basic_credentials(header)?;
        let addr = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        let uid = state.auth().authenticate(state, &candidates, addr).await?;
        let snap = state.metadata().snapshot()?;
        let user = AuthUser::load(&snap, &uid)
            .ok_or_else(|| ApiError::Unauthorized("Unauthorized".into()))?;
        if let Some(observe) = state.login_observer()
            && parts.uri.path().starts_with("/api")
        {
            observe(&LoginSeen {
                username: &user.username,
                user_agent: parts.headers.get(USER_AGENT).and_then(|h| h.to_str().ok()),
                addr,
            });
        }
        parts.extensions.insert(user.clone());
        Ok(user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &[u8]) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(s)
        )
    }

    #[test]
    fn hashes_are_argon2id_and_verify() {
        let h = hash_password("Android123").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password(b"Android123", &h));
        assert!(!verify_password(b"android123", &h));
        assert!(!verify_password(b"Android123", "not a hash"));
    }

    #[test]
    fn decodes_utf8_and_latin1_basic_credentials() {
        let utf8 = basic_credentials(&b64("josé:pässword".as_bytes())).unwrap();
        assert_eq!(utf8[0].0, "josé");
        assert_eq!(utf8[0].1, "pässword".as_bytes());
        // ISO-8859-1 bytes for "pässword" are not valid UTF-8.
        let latin: Vec<u8> = b"jose:p\xe4ssword".to_vec();
        let c = basic_credentials(&b64(&latin)).unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].0, "jose");
        assert_eq!(c[0].1, "pässword".as_bytes());
        // Plain ASCII yields one candidate.
        assert_eq!(
            basic_credentials(&b64(b"android:Android123"))
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn rejects_malformed_headers() {
        for h in [
            "Bearer abc",
            "Basic !!!",
            "Basic",
            &b64(b"nocolon"),
            &b64(b":pw"),
        ] {
            assert!(basic_credentials(h).is_err(), "{h}");
        }
    }

    #[test]
    fn failure_windows_expire_and_are_bounded() {
        let mut f = Failures::default();
        let t0 = Instant::now();
        for _ in 0..10 {
            f.record("u", t0, 5);
        }
        assert_eq!(f.count("u", Duration::from_secs(60), t0), 6);
        assert_eq!(
            f.count("u", Duration::from_secs(60), t0 + Duration::from_secs(61)),
            0
        );
    }
}
