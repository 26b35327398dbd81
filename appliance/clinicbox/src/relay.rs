//! First logins checked at national, relayed through the uplink.
//!
//! `serve` never reaches the WAN and the uplink never listens, so the uplink long-polls the
//! uplink socket (`GET /v1/logins/next`) while national is reachable; a tablet's login that the
//! box cannot verify (a staff account national sent, with no hash yet or a password national
//! changed) waits here for the uplink's answer. Without a recent poll the box is offline and
//! the login fails at once, as it would have before. Passwords stay in memory.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use clinicbox_api::auth::{PasswordCheck, Verdict};
use clinicbox_control::pull::{LOGIN_POLL_SECS, LoginQuestion, LoginVerdict};
use clinicbox_store::Store;
use tokio::sync::{Notify, oneshot};

/// How long a tablet's login waits for national's word.
const ANSWER_WAIT: Duration = Duration::from_secs(15);
/// A poll this recent means the uplink is online.
const ONLINE_WITHIN: Duration = Duration::from_secs(LOGIN_POLL_SECS + 10);
/// Questions waiting at most: a burst beyond this fails like an offline login.
const MAX_WAITING: usize = 16;

/// The relay: questions for the uplink, and the logins waiting for their answers.
pub struct LoginRelay {
    store: Store,
    inner: Mutex<Inner>,
    asked: Notify,
}

#[derive(Default)]
struct Inner {
    queue: VecDeque<LoginQuestion>,
    waiting: HashMap<u64, oneshot::Sender<Verdict>>,
    last_poll: Option<Instant>,
    next_id: u64,
}

impl LoginRelay {
    pub fn new(store: Store) -> LoginRelay {
        LoginRelay {
            store,
            inner: Mutex::new(Inner::default()),
            asked: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether national sent this account (only those are asked about).
    fn sent_by_national(&self, uid: &str) -> bool {
        crate::pull::state_in(&self.store)
            .map(|s| s.named("users").iter().any(|u| u == uid))
            .unwrap_or(false)
    }

    /// The uplink's long poll: the next question, or `None` after [`LOGIN_POLL_SECS`].
    pub async fn next(&self) -> Option<LoginQuestion> {
        let deadline = Instant::now() + Duration::from_secs(LOGIN_POLL_SECS);
        loop {
            let notified = self.asked.notified();
            {
                let mut i = self.lock();
                i.last_poll = Some(Instant::now());
                if let Some(q) = i.queue.pop_front() {
                    return Some(q);
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || tokio::time::timeout(left, notified).await.is_err() {
                self.lock().last_poll = Some(Instant::now());
                return None;
            }
        }
    }

    /// The uplink's answer to question `id`; false if nobody waits for it any more.
    pub fn answer(&self, id: u64, verdict: LoginVerdict) -> bool {
        let Some(tx) = self.lock().waiting.remove(&id) else {
            return false;
        };
        let v = match verdict {
            LoginVerdict::Right => Verdict::Right,
            LoginVerdict::Wrong => Verdict::Wrong,
            LoginVerdict::Unavailable => Verdict::Unavailable,
        };
        tx.send(v).is_ok()
    }

    async fn ask(&self, username: &str, password: &[u8]) -> Verdict {
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut i = self.lock();
            let online = i.last_poll.is_some_and(|t| t.elapsed() < ONLINE_WITHIN);
            if !online || i.waiting.len() >= MAX_WAITING {
                return Verdict::Unavailable;
            }
            i.next_id += 1;
            let id = i.next_id;
            i.queue.push_back(LoginQuestion {
                id,
                username: username.to_string(),
                password_b64: base64::engine::general_purpose::STANDARD.encode(password),
            });
            i.waiting.insert(id, tx);
            id
        };
        self.asked.notify_one();
        let verdict = tokio::time::timeout(ANSWER_WAIT, rx).await;
        let mut i = self.lock();
        i.waiting.remove(&id);
        i.queue.retain(|q| q.id != id);
        match verdict {
            Ok(Ok(v)) => v,
            _ => Verdict::Unavailable,
        }
    }
}

impl PasswordCheck for LoginRelay {
    fn check<'a>(
        &'a self,
        uid: &'a str,
        username: &'a str,
        password: &'a [u8],
    ) -> Pin<Box<dyn std::future::Future<Output = Verdict> + Send + 'a>> {
        Box::pin(async move {
            if !self.sent_by_national(uid) {
                return Verdict::Unavailable;
            }
            let v = self.ask(username, password).await;
            tracing::info!(user.uid = %uid, verdict = ?v, "login checked at national");
            v
        })
    }
}
