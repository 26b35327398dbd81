//! Aggregate reporting through a real box: simulated tablets speak the Android SDK's exact
//! aggregate requests to `clinicbox serve --demo` over HTTP.

use base64::Engine;
use clinicbox_tests::{BoxBuilder, Response, RunningBox};
use serde_json::{Value, json};

const ANDROID: (&str, &str) = ("android", "Android123");
const ADMIN: (&str, &str) = ("admin", "district");
const NURSE_B: (&str, &str) = ("nurseb", "ClinicB123");
const DS: &str = "cbDsOpdMon1";
const CLINIC_A: &str = "cbClinicA01";
const CLINIC_B: &str = "cbClinicB01";
const DEFAULT_COC: &str = "HllvX50cXC0";
const DEFAULT_COMBO: &str = "bjDvmb4bfuf";
const DEFAULT_OPTION: &str = "xYerKDKCefk";
/// The SDK's `DataValueFields.allFields` and `DataSetCompleteRegistrationFields.allFields`.
const DV_FIELDS: &str = "dataElement,period,orgUnit,categoryOptionCombo,attributeOptionCombo,value,storedBy,created,lastUpdated,comment,followup,deleted";
const CDSR_FIELDS: &str =
    "period,dataSet,organisationUnit,attributeOptionCombo,date,storedBy,completed";
const CELLS: [(&str, &str); 6] = [
    ("cbDeAggOpd1", "cbCocFemale"),
    ("cbDeAggOpd1", "cbCocMale01"),
    ("cbDeAggMal1", "cbCocFemale"),
    ("cbDeAggMal1", "cbCocMale01"),
    ("cbDeAggRef1", "cbCocFemale"),
    ("cbDeAggRef1", "cbCocMale01"),
];

/// One simulated tablet: a user's Basic credentials against the box.
struct Tablet<'a> {
    b: &'a RunningBox,
    auth: String,
}

impl<'a> Tablet<'a> {
    fn new(b: &'a RunningBox, who: (&str, &str)) -> Tablet<'a> {
        let auth = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", who.0, who.1))
        );
        Tablet { b, auth }
    }

    fn send(&self, method: &str, path: &str, body: Option<&Value>) -> Response {
        let bytes = body.map(|v| serde_json::to_vec(v).expect("json"));
        let mut headers = vec![
            ("Authorization", self.auth.as_str()),
            ("Accept", "application/json"),
            ("User-Agent", "com.dhis2/1.14.0/3.4.1/Android_34"),
        ];
        if bytes.is_some() {
            headers.push(("Content-Type", "application/json; charset=utf-8"));
        }
        self.b
            .request(method, path, &headers, bytes.as_deref().unwrap_or(b""))
    }

    /// `POST dataValueSets`, one data set per request as SDK ≥ 2.39 sends it.
    fn upload(&self, pe: &str, values: [&str; 6]) -> (u16, Value) {
        let r = self.send(
            "POST",
            "/api/dataValueSets",
            Some(&month(pe, CLINIC_A, values)),
        );
        (r.status, r.json())
    }

    /// The SDK's aggregate download for the demo data set: values and registrations.
    fn download(&self, periods: &[&str], root: &str) -> (Vec<Value>, Vec<Value>) {
        let pe = periods.join(",");
        let r = self.send(
            "GET",
            &format!("/api/dataValueSets?fields={DV_FIELDS}&dataSet={DS}&period={pe}&orgUnit={root}&children=true&includeDeleted=true&paging=false"),
            None,
        );
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert!(
            r.header("content-type")
                .unwrap_or("")
                .starts_with("application/json")
        );
        let values = r.json()["dataValues"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let r = self.send(
            "GET",
            &format!("/api/completeDataSetRegistrations?fields={CDSR_FIELDS}&dataSet={DS}&period={pe}&orgUnit={root}&children=true&paging=false"),
            None,
        );
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let regs = r.json()["completeDataSetRegistrations"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        (values, regs)
    }
}

fn month(pe: &str, ou: &str, values: [&str; 6]) -> Value {
    json!({
        "dataSet": DS,
        "dataValues": CELLS.iter().zip(values).map(|((de, coc), v)| json!({
            "dataElement": de, "period": pe, "orgUnit": ou, "categoryOptionCombo": coc,
            "attributeOptionCombo": DEFAULT_COC, "value": v, "storedBy": "android", "followup": false
        })).collect::<Vec<_>>()
    })
}

fn counts(resp: &Value) -> [u64; 4] {
    let c = &resp["response"]["importCount"];
    ["imported", "updated", "ignored", "deleted"].map(|k| {
        c[k].as_u64()
            .unwrap_or_else(|| panic!("no importCount.{k}: {resp}"))
    })
}

/// The current month as the box sees it (`serverDate` of `system/info`).
fn current_month(t: &Tablet) -> String {
    let r = t.send("GET", "/api/system/info?fields=serverDate", None);
    let date = r.json()["serverDate"]
        .as_str()
        .expect("serverDate")
        .to_string();
    format!("{}{}", &date[0..4], &date[5..7])
}

/// `(dataElement, categoryOptionCombo, value, deleted)` sorted: what a tablet ends up with.
fn state(values: &[Value]) -> Vec<(String, String, String, bool)> {
    let mut s: Vec<_> = values
        .iter()
        .map(|v| {
            (
                v["dataElement"].as_str().unwrap_or("").to_string(),
                v["categoryOptionCombo"].as_str().unwrap_or("").to_string(),
                v["value"].as_str().unwrap_or("").to_string(),
                v["deleted"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    s.sort();
    s
}

#[test]
fn a_monthly_report_typed_on_one_tablet_reaches_another_and_survives_a_power_cut() {
    let first = BoxBuilder::demo();
    let data = first.dir().join("data");
    let b = first.start();
    let tablet_a = Tablet::new(&b, ANDROID);
    let pe = current_month(&tablet_a);

    // Tablet A uploads the month.
    let (code, r) = tablet_a.upload(&pe, ["40", "35", "7", "5", "2", "1"]);
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["status"], "OK");
    assert_eq!(r["response"]["status"], "SUCCESS");
    assert_eq!(counts(&r), [6, 0, 0, 0]);

    // A retry after a lost answer: nothing changes.
    let (code, r) = tablet_a.upload(&pe, ["40", "35", "7", "5", "2", "1"]);
    assert_eq!((code, counts(&r)), (200, [0, 0, 6, 0]), "{r}");

    // A correction of one value.
    let (code, r) = tablet_a.upload(&pe, ["40", "35", "9", "5", "2", "1"]);
    assert_eq!((code, counts(&r)), (200, [0, 1, 5, 0]), "{r}");

    // One invalid value (negative count): a conflict pointing at it, the rest go in.
    let (code, r) = tablet_a.upload(&pe, ["40", "35", "9", "-1", "3", "1"]);
    assert_eq!(code, 409, "{r}");
    assert_eq!(r["response"]["status"], "WARNING");
    assert_eq!(
        counts(&r),
        [0, 1, 5, 0],
        "one updated, four same, one rejected"
    );
    let conflicts = r["response"]["conflicts"].as_array().expect("conflicts");
    assert_eq!(conflicts.len(), 1, "{r}");
    assert_eq!(conflicts[0]["indexes"], json!([3]));
    assert_eq!(conflicts[0]["errorCode"], "E7619");
    assert!(conflicts[0]["object"].is_string() && conflicts[0]["value"].is_string());

    // Complete the month, then un-complete it as the SDK does (DELETE with cc/cp).
    let reg = json!({"completeDataSetRegistrations": [{
        "period": pe, "dataSet": DS, "organisationUnit": CLINIC_A,
        "attributeOptionCombo": DEFAULT_COC, "date": "2026-01-01", "storedBy": "android", "completed": true
    }]});
    let r = tablet_a.send("POST", "/api/completeDataSetRegistrations", Some(&reg));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(counts(&r.json()), [1, 0, 0, 0]);
    let tablet_b = Tablet::new(&b, ANDROID);
    let (_, regs) = tablet_b.download(&[&pe], CLINIC_A);
    assert_eq!(regs.len(), 1);
    assert_eq!(regs[0]["completed"], true);
    let r = tablet_a.send(
        "DELETE",
        &format!("/api/completeDataSetRegistrations?ds={DS}&pe={pe}&ou={CLINIC_A}&cc={DEFAULT_COMBO}&cp={DEFAULT_OPTION}&multiOu=false"),
        None,
    );
    assert_eq!(r.status, 204, "{}", String::from_utf8_lossy(&r.body));

    // A second tablet downloads exactly that state.
    let expected = vec![
        (
            "cbDeAggMal1".to_string(),
            "cbCocFemale".to_string(),
            "9".to_string(),
            false,
        ),
        (
            "cbDeAggMal1".into(),
            "cbCocMale01".into(),
            "5".into(),
            false,
        ),
        (
            "cbDeAggOpd1".into(),
            "cbCocFemale".into(),
            "40".into(),
            false,
        ),
        (
            "cbDeAggOpd1".into(),
            "cbCocMale01".into(),
            "35".into(),
            false,
        ),
        (
            "cbDeAggRef1".into(),
            "cbCocFemale".into(),
            "3".into(),
            false,
        ),
        (
            "cbDeAggRef1".into(),
            "cbCocMale01".into(),
            "1".into(),
            false,
        ),
    ];
    let (values, regs) = tablet_b.download(&[&pe], CLINIC_A);
    assert_eq!(state(&values), expected);
    assert_eq!(regs.len(), 1);
    assert_eq!(regs[0]["completed"], false, "{regs:?}");
    assert_eq!(
        regs[0]["date"].as_str().map(str::len),
        Some(10),
        "yyyy-MM-dd"
    );
    // Approvals: none stored on the box, none served (the SDK's request).
    let r = tablet_b.send(
        "GET",
        &format!("/api/dataApprovals/multiple?fields=wf,ou,pe,aoc,state&wf=cbWfNone001&pe={pe}&ou={CLINIC_A}&aoc={DEFAULT_COC}"),
        None,
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!([]));

    // Power cut right after the acknowledgements; the box comes back with everything.
    let kept = b.kill();
    let b = BoxBuilder::demo_at(data.display().to_string()).start();
    let tablet_c = Tablet::new(&b, ANDROID);
    let (values, regs) = tablet_c.download(&[&pe], CLINIC_A);
    assert_eq!(state(&values), expected);
    assert_eq!(regs[0]["completed"], false);
    b.stop();
    drop(kept);
}

#[test]
fn a_nurse_of_another_clinic_cannot_write_to_this_clinic() {
    let b = BoxBuilder::demo().start();
    let admin = Tablet::new(&b, ADMIN);
    // The district adds a capture user for clinic B.
    let user = json!({"users": [{
        "id": "cbUserNrsB1", "username": NURSE_B.0, "password": NURSE_B.1, "firstName": "Nurse",
        "surname": "Bee", "userRoles": [{"id": "cbRoleCaptr"}], "organisationUnits": [{"id": CLINIC_B}],
        "dataViewOrganisationUnits": [{"id": CLINIC_B}], "teiSearchOrganisationUnits": [{"id": CLINIC_B}]
    }]});
    let r = admin.send("POST", "/api/metadata", Some(&user));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));

    let nurse_b = Tablet::new(&b, NURSE_B);
    let pe = current_month(&nurse_b);
    let (code, r) = nurse_b.upload(&pe, ["1", "2", "3", "4", "5", "6"]);
    assert_eq!(code, 409, "{r}");
    assert_eq!(counts(&r), [0, 0, 6, 0]);
    assert_eq!(r["response"]["conflicts"][0]["errorCode"], "E7617");
    let reg = json!({"completeDataSetRegistrations": [{
        "period": pe, "dataSet": DS, "organisationUnit": CLINIC_A, "attributeOptionCombo": DEFAULT_COC, "completed": true
    }]});
    let r = nurse_b.send("POST", "/api/completeDataSetRegistrations", Some(&reg));
    assert_eq!(r.status, 409);
    assert_eq!(r.json()["response"]["conflicts"][0]["errorCode"], "E7617");
    // Nothing reached clinic A.
    let (values, regs) = Tablet::new(&b, ANDROID).download(&[&pe], CLINIC_A);
    assert!(values.is_empty() && regs.is_empty(), "{values:?} {regs:?}");
    // The nurse's own clinic works.
    let r = nurse_b.send(
        "POST",
        "/api/dataValueSets",
        Some(&month(&pe, CLINIC_B, ["1", "2", "3", "4", "5", "6"])),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(counts(&r.json()), [6, 0, 0, 0]);
    b.stop();
}
