//! In-process harness: a real store in a temp dir, the demo metadata, the API and tracker
//! routers, and helpers that speak like the Android SDK.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use clinicbox_api::{ApiConfig, ApiState};
use clinicbox_store::{NewKeySlot, Store, StoreOptions, Unlock};
use clinicbox_tracker::{Tracker, TrackerConfig};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

pub const ANDROID: (&str, &str) = ("android", "Android123");
pub const ADMIN: (&str, &str) = ("admin", "district");
pub const CLINIC_A: &str = "cbClinicA01";
pub const CLINIC_B: &str = "cbClinicB01";
pub const DISTRICT: &str = "cbDistrct01";
pub const OPD: &str = "cbPrgOpd001";
pub const PERSON: &str = "cbTetPerson";
pub const TRIAGE: &str = "cbStgTriage";
pub const CONSULT: &str = "cbStgConsul";
pub const PHARMACY: &str = "cbStgPharma";
pub const HEALTH: &str = "cbPrgHealth";
pub const HEALTH_STAGE: &str = "cbStgHealth";

/// The SDK's tracked-entity download field list (`NewTrackedEntityInstanceFields.allFields`).
pub const TE_FIELDS: &str = "trackedEntity,createdAt,updatedAt,createdAtClient,updatedAtClient,orgUnit,trackedEntityType,geometry,deleted,attributes[attribute,value,createdAt,updatedAt],relationships[relationship,relationshipName,relationshipType,createdAt,updatedAt,from[trackedEntity[trackedEntity],enrollment[enrollment],event[event]],to[trackedEntity[trackedEntity],enrollment[enrollment],event[event]]],enrollments[enrollment,createdAt,updatedAt,createdAtClient,updatedAtClient,orgUnit,program,enrolledAt,occurredAt,completedAt,followUp,status,deleted,trackedEntity,geometry,attributeOptionCombo,events[event,enrollment,createdAt,updatedAt,createdAtClient,updatedAtClient,status,geometry,program,programStage,orgUnit,occurredAt,completedAt,scheduledAt,deleted,attributeOptionCombo,assignedUser,completedBy,notes[note,value,storedAt,storedBy],relationships[relationship,relationshipType],dataValues[dataElement,createdBy,value,createdAt,updatedAt,providedElsewhere]],notes[note,value,storedAt,storedBy],relationships[relationship,relationshipType]],programOwners";

pub struct TestBox {
    pub state: ApiState,
    pub tracker: Tracker,
    pub app: Router,
    pub store: Store,
    pub dir: tempfile::TempDir,
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub bytes: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.bytes)))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

pub fn basic(who: (&str, &str)) -> String {
    use base64_lite::encode;
    format!(
        "Basic {}",
        encode(format!("{}:{}", who.0, who.1).as_bytes())
    )
}

/// A tiny base64 encoder so the harness needs no extra crate.
mod base64_lite {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    pub fn encode(b: &[u8]) -> String {
        let mut out = String::new();
        for c in b.chunks(3) {
            let n = (u32::from(c[0]) << 16)
                | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
                | u32::from(*c.get(2).unwrap_or(&0));
            for i in 0..4 {
                if i <= c.len() {
                    out.push(char::from(T[((n >> (18 - 6 * i)) & 63) as usize]));
                } else {
                    out.push('=');
                }
            }
        }
        out
    }
}

fn key_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("key")
}

impl TestBox {
    pub async fn demo() -> TestBox {
        TestBox::with(TrackerConfig::default()).await
    }

    pub async fn with(config: TrackerConfig) -> TestBox {
        TestBox::with_store(config, StoreOptions::default()).await
    }

    /// A box whose store's every sync takes at least `sync` (a slow SD card).
    pub async fn slow_disk(sync: std::time::Duration) -> TestBox {
        let options = StoreOptions {
            sync_delay: sync,
            ..StoreOptions::default()
        };
        TestBox::with_store(TrackerConfig::default(), options).await
    }

    async fn with_store(config: TrackerConfig, options: StoreOptions) -> TestBox {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::create_with(
            &dir.path().join("data"),
            NewKeySlot::KeyFile {
                path: key_path(&dir),
                label: "test".into(),
                create: true,
            },
            options,
        )
        .unwrap();
        let state = ApiState::new(store.clone(), ApiConfig::default())
            .await
            .unwrap();
        clinicbox_api::demo::load_demo(&state).await.unwrap();
        TestBox::assemble(dir, store, state, config).await
    }

    async fn assemble(
        dir: tempfile::TempDir,
        store: Store,
        state: ApiState,
        config: TrackerConfig,
    ) -> TestBox {
        let tracker = Tracker::start(state.clone(), config).await.unwrap();
        // The daemon's own app, layers and all.
        let app = clinicbox::app::in_process(&store, state.clone(), tracker.clone());
        TestBox {
            state,
            tracker,
            app,
            store,
            dir,
        }
    }

    /// Closes the store and opens it again, as a daemon restart does.
    pub async fn restart(self) -> TestBox {
        let TestBox {
            state,
            tracker,
            app,
            store,
            dir,
        } = self;
        drop((app, tracker, state));
        store.close().unwrap();
        drop(store);
        let key = key_path(&dir);
        let data = dir.path().join("data");
        let store =
            tokio::task::spawn_blocking(move || Store::open(&data, &Unlock::KeyFile(key)).unwrap())
                .await
                .unwrap();
        let state = ApiState::new(store.clone(), ApiConfig::default())
            .await
            .unwrap();
        TestBox::assemble(dir, store, state, TrackerConfig::default()).await
    }

    pub async fn call(
        &self,
        method: Method,
        uri: &str,
        who: Option<(&str, &str)>,
        body: Option<Value>,
    ) -> Resp {
        let mut b = Request::builder()
            .method(method)
            .uri(uri)
            .header("host", "10.0.0.1:8080");
        if let Some(w) = who {
            b = b.header("authorization", basic(w));
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

    pub async fn send(&self, req: Request<Body>) -> Resp {
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

    pub async fn get(&self, uri: &str, who: (&str, &str)) -> Resp {
        self.call(Method::GET, uri, Some(who), None).await
    }

    pub async fn get_ok(&self, uri: &str, who: (&str, &str)) -> Value {
        let r = self.get(uri, who).await;
        assert_eq!(r.status, StatusCode::OK, "{uri}: {}", r.text());
        r.json()
    }

    /// The SDK's upload: POST (async), poll the job, fetch the report.
    pub async fn sdk_post(&self, who: (&str, &str), strategy: &str, payload: Value) -> Value {
        let r = self
            .call(
                Method::POST,
                &format!("/api/tracker?atomicMode=OBJECT&importStrategy={strategy}"),
                Some(who),
                Some(payload),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let msg = r.json();
        assert_eq!(msg["httpStatusCode"], 200);
        assert_eq!(msg["status"], "OK");
        let id = msg["response"]["id"].as_str().unwrap().to_string();
        let jobs = self.get_ok(&format!("/api/tracker/jobs/{id}"), who).await;
        assert!(
            jobs.as_array()
                .unwrap()
                .iter()
                .any(|n| n["completed"] == true),
            "{jobs}"
        );
        self.get_ok(&format!("/api/tracker/jobs/{id}/report"), who)
            .await
    }

    /// A synchronous import; returns (status, report).
    pub async fn post_sync(&self, who: (&str, &str), query: &str, payload: Value) -> (u16, Value) {
        let r = self
            .call(
                Method::POST,
                &format!("/api/tracker?async=false&{query}"),
                Some(who),
                Some(payload),
            )
            .await;
        (r.status.as_u16(), r.json())
    }
}

/// UIDs of every object report of a type.
pub fn reported(report: &Value, t: &str) -> Vec<String> {
    report["bundleReport"]["typeReportMap"][t]["objectReports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["uid"].as_str().unwrap().to_string())
        .collect()
}

/// (uid, errorCode) of every validation error.
pub fn errors(report: &Value) -> Vec<(String, String)> {
    report["validationReport"]["errorReports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["uid"].as_str().unwrap().to_string(),
                e["errorCode"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Asserts a tracker audit timestamp is exactly `yyyy-MM-ddTHH:mm:ss.SSS`.
pub fn assert_ts(v: &Value, what: &str) {
    let s = v.as_str().unwrap_or_else(|| panic!("{what} missing: {v}"));
    assert!(
        clinicbox_dhis2::Dhis2Timestamp::parse_strict(s).is_ok(),
        "{what} = {s:?} is not yyyy-MM-ddTHH:mm:ss.SSS"
    );
}

/// A patient registered, enrolled and triaged, flat as the SDK posts it.
pub fn registration(te: &str, en: &str, ev: &str, patient_id: &str, first: &str) -> Value {
    json!({
        "trackedEntities": [{
            "trackedEntity": te, "trackedEntityType": PERSON, "orgUnit": CLINIC_A,
            "deleted": false, "createdAtClient": "2026-03-01T09:00:00.000",
            "updatedAtClient": "2026-03-01T09:00:00.000",
            "attributes": [
                {"attribute": "cbAttrPatId", "value": patient_id},
                {"attribute": "cbAttrFirst", "value": first},
                {"attribute": "cbAttrLastN", "value": "Otieno"}
            ],
            "programOwners": [{"program": OPD, "trackedEntity": te, "orgUnit": CLINIC_A}]
        }],
        "enrollments": [{
            "enrollment": en, "trackedEntity": te, "program": OPD, "orgUnit": CLINIC_A,
            "enrolledAt": "2026-03-01T09:00:00.000", "occurredAt": "2026-03-01T09:00:00.000",
            "status": "ACTIVE", "followUp": false, "deleted": false,
            "attributes": [
                {"attribute": "cbAttrSex01", "value": "F"},
                {"attribute": "cbAttrDob01", "value": "1990-04-02"},
                {"attribute": "cbAttrPhone", "value": "+254700000001"}
            ],
            "notes": [{"note": format!("{}N", &en[..10]), "value": "Arrived walking", "storedAt": "2026-03-01T09:00:00.000", "storedBy": "android"}]
        }],
        "events": [{
            "event": ev, "enrollment": en, "trackedEntity": te, "program": OPD,
            "programStage": TRIAGE, "orgUnit": CLINIC_A, "status": "COMPLETED",
            "occurredAt": "2026-03-01T09:05:00.000", "deleted": false,
            "dataValues": [
                {"dataElement": "cbDeWeight1", "value": "61.5", "providedElsewhere": false},
                {"dataElement": "cbDeTemp001", "value": "38.4", "providedElsewhere": false},
                {"dataElement": "cbDeTriage1", "value": "YELLOW", "providedElsewhere": false}
            ]
        }],
        "relationships": []
    })
}

/// A consultation event in the enrollment.
pub fn consultation(te: &str, en: &str, ev: &str, diagnosis: &str) -> Value {
    json!({
        "trackedEntities": [], "enrollments": [], "relationships": [],
        "events": [{
            "event": ev, "enrollment": en, "trackedEntity": te, "program": OPD,
            "programStage": CONSULT, "orgUnit": CLINIC_A, "status": "COMPLETED",
            "occurredAt": "2026-03-01T10:00:00.000",
            "dataValues": [
                {"dataElement": "cbDeDiagnos", "value": diagnosis},
                {"dataElement": "cbDeNotes01", "value": "Fever for three days"}
            ]
        }]
    })
}

/// A serial-number UID: a letter prefix and a zero-padded counter.
pub fn uid(prefix: char, n: usize) -> String {
    format!("{prefix}{n:010}")
}
