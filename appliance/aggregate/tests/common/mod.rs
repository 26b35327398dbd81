//! In-process harness: a real store in a temp dir, the demo package plus an aggregate test
//! package, and the API and aggregate routers merged as the daemon merges them.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use base64::Engine;
use clinicbox_aggregate::periods::{Now, offset};
use clinicbox_api::metadata::import::{ImportParams, import};
use clinicbox_api::{ApiConfig, ApiState};
use clinicbox_dhis2::PeriodType;
use clinicbox_store::{NewKeySlot, Store};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

pub const ANDROID: (&str, &str) = ("android", "Android123");
pub const ADMIN: (&str, &str) = ("admin", "district");
/// A capture user of clinic B (from the test package).
pub const CLINIC_B: (&str, &str) = ("nurseb", "ClinicB123");

pub const DS: &str = "cbDsOpdMon1";
pub const CLINIC_A: &str = "cbClinicA01";
pub const CLINIC_B_OU: &str = "cbClinicB01";
pub const DISTRICT: &str = "cbDistrct01";
pub const OPD: &str = "cbDeAggOpd1";
pub const MAL: &str = "cbDeAggMal1";
pub const REF: &str = "cbDeAggRef1";
pub const FEMALE: &str = "cbCocFemale";
pub const MALE: &str = "cbCocMale01";
pub const DEFAULT_COC: &str = "HllvX50cXC0";
pub const DEFAULT_COMBO: &str = "bjDvmb4bfuf";
pub const DEFAULT_OPTION: &str = "xYerKDKCefk";

/// Test data sets (see `test_package`).
pub const DS_WEEKLY: &str = "cbTDsWeek01";
pub const DS_INPUT: &str = "cbTDsInput1";
pub const DS_APPROVAL: &str = "cbTDsAppr01";
pub const DS_EXPIRY: &str = "cbTDsExpir1";
pub const DS_READ_ONLY: &str = "cbTDsNoWri1";
pub const DS_CLINIC_B: &str = "cbTDsOnlyB1";
pub const WORKFLOW: &str = "cbTWfAppr01";
pub const DE_NUM: &str = "cbTDeNum001";
pub const DE_OPT: &str = "cbTDeOpt001";
pub const DE_FILE: &str = "cbTDeFile01";
pub const DE_BOOL: &str = "cbTDeBool01";
pub const DE_SIG: &str = "cbTDeSigZr1";

pub struct TestBox {
    pub state: ApiState,
    pub app: Router,
    pub store: Store,
    _dir: tempfile::TempDir,
}

pub struct Resp {
    pub status: StatusCode,
    pub content_type: String,
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

    /// Asserts a DHIS2 WebMessage with this HTTP status; returns it.
    pub fn web_message(&self, code: u16) -> Value {
        assert_eq!(self.status.as_u16(), code, "{}", self.text());
        assert!(
            self.content_type.starts_with("application/json"),
            "{}",
            self.content_type
        );
        let v = self.json();
        assert_eq!(v["httpStatusCode"], code, "{v}");
        for k in ["httpStatus", "status", "message"] {
            assert!(v[k].is_string(), "{k} missing: {v}");
        }
        v
    }
}

pub fn basic(who: (&str, &str)) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", who.0, who.1))
    )
}

impl TestBox {
    pub async fn new() -> TestBox {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::create(
            &dir.path().join("data"),
            NewKeySlot::KeyFile {
                path: dir.path().join("key"),
                label: "test".into(),
                create: true,
            },
        )
        .unwrap();
        let state = ApiState::new(store.clone(), ApiConfig::default())
            .await
            .unwrap();
        clinicbox_api::demo::load_demo(&state).await.unwrap();
        let now = Now::at(store.server_time_ms(), state.zone()).unwrap();
        let report = import(
            state.metadata(),
            &test_package(&now),
            ImportParams::default(),
        )
        .await
        .unwrap();
        assert_eq!(
            serde_json::to_value(&report).unwrap()["status"],
            "OK",
            "{}",
            serde_json::to_string_pretty(&report).unwrap()
        );
        // The daemon's own app, layers and all.
        let app = clinicbox::app::in_process(
            &store,
            state.clone(),
            clinicbox_tracker::Tracker::start(state.clone(), Default::default())
                .await
                .unwrap(),
        );
        TestBox {
            state,
            app,
            store,
            _dir: dir,
        }
    }

    pub fn now(&self) -> Now {
        Now::at(self.store.server_time_ms(), self.state.zone()).unwrap()
    }

    /// The current month's id, as the box sees it.
    pub fn month(&self, shift: i32) -> String {
        let cur = self.now().current(PeriodType::Monthly).unwrap();
        offset(&cur, shift).unwrap().id().to_string()
    }

    pub async fn call(
        &self,
        method: Method,
        uri: &str,
        who: Option<(&str, &str)>,
        body: Option<&Value>,
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
                .body(Body::from(serde_json::to_vec(v).unwrap()))
                .unwrap(),
            None => b.body(Body::empty()).unwrap(),
        };
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        Resp {
            status,
            content_type,
            bytes,
        }
    }

    pub async fn get(&self, uri: &str, who: (&str, &str)) -> Resp {
        self.call(Method::GET, uri, Some(who), None).await
    }

    pub async fn post(&self, uri: &str, who: (&str, &str), body: &Value) -> Resp {
        self.call(Method::POST, uri, Some(who), Some(body)).await
    }

    /// Posts a data value set; returns `(HTTP status, ImportSummary)`.
    pub async fn import(&self, who: (&str, &str), body: &Value) -> (u16, Value) {
        self.import_with("", who, body).await
    }

    pub async fn import_with(&self, query: &str, who: (&str, &str), body: &Value) -> (u16, Value) {
        let r = self
            .post(&format!("/api/dataValueSets{query}"), who, body)
            .await;
        let code = r.status.as_u16();
        let v = r.web_message(code);
        (code, v["response"].clone())
    }

    /// The SDK's download request for one data set.
    pub async fn download(
        &self,
        who: (&str, &str),
        ds: &str,
        periods: &[&str],
        org_units: &str,
    ) -> Vec<Value> {
        let uri = format!(
            "/api/dataValueSets?fields={}&dataSet={ds}&period={}&orgUnit={org_units}&children=true&includeDeleted=true&paging=false",
            SDK_FIELDS,
            periods.join(",")
        );
        let r = self.get(&uri, who).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        r.json()["dataValues"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

/// The SDK's `DataValueFields.allFields`.
pub const SDK_FIELDS: &str = "dataElement,period,orgUnit,categoryOptionCombo,attributeOptionCombo,value,storedBy,created,lastUpdated,comment,followup,deleted";

pub fn dv(de: &str, pe: &str, ou: &str, coc: &str, value: &str) -> Value {
    json!({
        "dataElement": de, "period": pe, "orgUnit": ou, "categoryOptionCombo": coc,
        "attributeOptionCombo": DEFAULT_COC, "value": value, "storedBy": "android", "followup": false
    })
}

/// A month of the demo data set for clinic A, as the SDK posts it.
pub fn month_payload(pe: &str, values: [&str; 6]) -> Value {
    let cells = [
        (OPD, FEMALE),
        (OPD, MALE),
        (MAL, FEMALE),
        (MAL, MALE),
        (REF, FEMALE),
        (REF, MALE),
    ];
    json!({
        "dataSet": DS,
        "dataValues": cells.iter().zip(values).map(|((de, coc), v)| dv(de, pe, CLINIC_A, coc, v)).collect::<Vec<_>>()
    })
}

fn sharing(public: &str) -> Value {
    json!({"public": public, "external": false, "users": {}, "userGroups": {}})
}

fn element(id: &str, value_type: &str, extra: Value) -> Value {
    let mut v = json!({
        "id": id, "name": format!("Test {id}"), "shortName": format!("Test {id}"),
        "valueType": value_type, "domainType": "AGGREGATE", "aggregationType": "SUM",
        "categoryCombo": {"id": DEFAULT_COMBO}, "zeroIsSignificant": false,
        "sharing": sharing("rwrw----")
    });
    if let (Value::Object(m), Value::Object(e)) = (&mut v, extra) {
        m.extend(e);
    }
    v
}

fn data_set(
    id: &str,
    period_type: &str,
    elements: &[&str],
    org_units: &[&str],
    extra: Value,
) -> Value {
    let mut v = json!({
        "id": id, "name": format!("Test {id}"), "shortName": format!("Test {id}"),
        "periodType": period_type, "categoryCombo": {"id": DEFAULT_COMBO},
        "openFuturePeriods": 1, "expiryDays": 0,
        "organisationUnits": org_units.iter().map(|o| json!({"id": o})).collect::<Vec<_>>(),
        "dataSetElements": elements.iter().map(|d| json!({"dataSet": {"id": id}, "dataElement": {"id": d}})).collect::<Vec<_>>(),
        "sharing": sharing("rwrw----")
    });
    if let (Value::Object(m), Value::Object(e)) = (&mut v, extra) {
        m.extend(e);
    }
    v
}

/// Data sets and elements that exercise every rule, plus a capture user for clinic B.
pub fn test_package(now: &Now) -> Value {
    let month = now.current(PeriodType::Monthly).unwrap();
    let last = offset(&month, -1).unwrap();
    let all = [DE_NUM, DE_OPT, DE_FILE, DE_BOOL, DE_SIG];
    let both = [CLINIC_A, CLINIC_B_OU];
    json!({
        "dataElements": [
            element(DE_NUM, "NUMBER", json!({})),
            element(DE_OPT, "TEXT", json!({"optionSet": {"id": "cbOsTriage1"}})),
            element(DE_FILE, "FILE_RESOURCE", json!({})),
            element(DE_BOOL, "BOOLEAN", json!({})),
            element(DE_SIG, "INTEGER", json!({"zeroIsSignificant": true})),
        ],
        "dataApprovalLevels": [
            {"id": "cbTLvlClin1", "name": "Clinic", "level": 4, "orgUnitLevel": 4}
        ],
        "dataApprovalWorkflows": [
            {"id": WORKFLOW, "name": "Test approval", "periodType": "Monthly",
             "categoryCombo": {"id": DEFAULT_COMBO}, "dataApprovalLevels": [{"id": "cbTLvlClin1"}]}
        ],
        "dataSets": [
            data_set(DS_WEEKLY, "Weekly", &all, &both, json!({"openFuturePeriods": 2})),
            data_set(DS_INPUT, "Monthly", &all, &both, json!({"dataInputPeriods": [
                {"period": {"id": last.id()}, "openingDate": "2000-01-01T00:00:00.000", "closingDate": "2000-02-01T00:00:00.000"},
                {"period": {"id": month.id()}}
            ]})),
            data_set(DS_APPROVAL, "Monthly", &all, &both, json!({"workflow": {"id": WORKFLOW}})),
            data_set(DS_EXPIRY, "Monthly", &all, &both, json!({"expiryDays": 1})),
            data_set(DS_READ_ONLY, "Monthly", &all, &both, json!({"sharing": sharing("rwr-----")})),
            data_set(DS_CLINIC_B, "Monthly", &all, &[CLINIC_B_OU], json!({})),
        ],
        "users": [
            {"id": "cbTUserNrsB", "username": CLINIC_B.0, "password": CLINIC_B.1, "firstName": "Nurse",
             "surname": "Bee", "userRoles": [{"id": "cbRoleCaptr"}],
             "organisationUnits": [{"id": CLINIC_B_OU}], "dataViewOrganisationUnits": [{"id": CLINIC_B_OU}],
             "teiSearchOrganisationUnits": [{"id": CLINIC_B_OU}]}
        ]
    })
}
