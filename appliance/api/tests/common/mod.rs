//! Shared test harness: a real store in a temp dir, the demo package, the router, and the
//! Android SDK's login and metadata-sync query strings.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use base64::Engine;
use clinicbox_api::{ApiConfig, ApiState};
use clinicbox_store::{NewKeySlot, Store};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

pub struct Box {
    pub state: ApiState,
    pub app: Router,
    pub store: Store,
    _dir: tempfile::TempDir,
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub bytes: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.bytes)))
    }

    pub fn content_type(&self) -> &str {
        self.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// Asserts a DHIS2 WebMessage with this status.
    pub fn assert_web_message(&self, code: u16) -> Value {
        assert_eq!(
            self.status.as_u16(),
            code,
            "{}",
            String::from_utf8_lossy(&self.bytes)
        );
        assert!(
            self.content_type().starts_with("application/json"),
            "{}",
            self.content_type()
        );
        let v = self.json();
        assert_eq!(v["httpStatusCode"], code);
        assert!(v["httpStatus"].is_string(), "{v}");
        assert!(v["status"].is_string(), "{v}");
        assert!(v["message"].is_string(), "{v}");
        v
    }
}

pub fn basic(user: &str, pass: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

pub fn basic_latin1(user: &str, pass: &str) -> String {
    let bytes: Vec<u8> = format!("{user}:{pass}")
        .chars()
        .map(|c| u8::try_from(u32::from(c)).expect("latin-1 only"))
        .collect();
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

pub const ANDROID: (&str, &str) = ("android", "Android123");
pub const ADMIN: (&str, &str) = ("admin", "district");

impl Box {
    pub async fn demo() -> Box {
        Box::with_config(ApiConfig::default()).await
    }

    pub async fn with_config(config: ApiConfig) -> Box {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let key = dir.path().join("key");
        let (store, _) = Store::create(
            &data,
            NewKeySlot::KeyFile {
                path: key,
                label: "test".into(),
                create: true,
            },
        )
        .unwrap();
        let state = ApiState::new(store.clone(), config).await.unwrap();
        clinicbox_api::demo::load_demo(&state).await.unwrap();
        // The daemon's own app, layers and all.
        let app = clinicbox::app::in_process(
            &store,
            state.clone(),
            clinicbox_tracker::Tracker::start(state.clone(), Default::default())
                .await
                .unwrap(),
        );
        Box {
            state,
            app,
            store,
            _dir: dir,
        }
    }

    pub async fn call(
        &self,
        method: Method,
        uri: &str,
        auth: Option<String>,
        body: Option<Value>,
    ) -> Resp {
        let mut b = Request::builder()
            .method(method)
            .uri(uri)
            .header("host", "10.0.0.1:8080");
        if let Some(a) = auth {
            b = b.header("authorization", a);
        }
        let req = match body {
            Some(v) => b
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&v).unwrap()))
                .unwrap(),
            None => b.body(Body::empty()).unwrap(),
        };
        self.send(req).await
    }

    /// One request through the app, its whole answer.
    async fn send(&self, req: Request<Body>) -> Resp {
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        Resp {
            status,
            headers,
            bytes,
        }
    }

    /// GET as a client at `addr` (what axum's `ConnectInfo` tells the login limits).
    pub async fn get_from(&self, uri: &str, who: (&str, &str), addr: [u8; 4]) -> Resp {
        let mut req = Request::builder()
            .uri(uri)
            .header("host", "10.0.0.1:8080")
            .header("authorization", basic(who.0, who.1))
            .body(Body::empty())
            .unwrap();
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(std::net::SocketAddr::from((
                addr, 40000,
            ))));
        self.send(req).await
    }

    pub async fn get(&self, uri: &str, who: (&str, &str)) -> Resp {
        self.call(Method::GET, uri, Some(basic(who.0, who.1)), None)
            .await
    }

    /// GET that must answer 200 with JSON and no cookie or redirect.
    pub async fn get_ok(&self, uri: &str, who: (&str, &str)) -> Value {
        let r = self.get(uri, who).await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "{uri}: {}",
            String::from_utf8_lossy(&r.bytes)
        );
        assert!(
            r.content_type().starts_with("application/json"),
            "{uri}: {}",
            r.content_type()
        );
        assert!(r.headers.get("set-cookie").is_none(), "{uri} set a cookie");
        r.json()
    }
}

pub mod sdk;
#[allow(unused_imports)]
pub use sdk::sync_sequence;

/// Splits a body's array at `key` and returns ids.
pub fn ids(v: &Value, key: &str) -> Vec<String> {
    v[key]
        .as_array()
        .unwrap_or_else(|| panic!("no array `{key}` in {v}"))
        .iter()
        .map(|o| o["id"].as_str().expect("id").to_string())
        .collect()
}

/// Strict DHIS2 timestamp check (what the SDK's parsers need).
pub fn assert_dhis2_date(s: &Value, what: &str) {
    let s = s
        .as_str()
        .unwrap_or_else(|| panic!("{what}: not a string: {s}"));
    assert!(
        clinicbox_dhis2::Dhis2Timestamp::parse_strict(s).is_ok(),
        "{what}: {s:?} is not yyyy-MM-ddTHH:mm:ss.SSS"
    );
}
