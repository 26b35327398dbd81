//! The tablet contract: the Android SDK's login sequence and full metadata sync, replayed in
//! order with its query strings against the router over a real store, plus import, auth and
//! scope behaviour. (The end-to-end variant against the started binary lives in `tests/`.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;

use axum::http::{Method, StatusCode};
use clinicbox_api::ApiConfig;
use common::{ADMIN, ANDROID, Box, assert_dhis2_date, basic, basic_latin1, ids, sdk};
use serde_json::{Value, json};

const CLINIC_A: &str = "cbClinicA01";
const CLINIC_B: &str = "cbClinicB01";
const OPD: &str = "cbPrgOpd001";

#[tokio::test]
async fn sdk_login_sequence() {
    let b = Box::demo().await;
    // 1. URL screen: loginConfig without credentials (ping as the fallback).
    let r = b.call(Method::GET, "/api/loginConfig", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.content_type().starts_with("application/json"));
    let lc = r.json();
    assert!(["DEFAULT", "SIDEBAR", "CUSTOM"].contains(&lc["loginPageLayout"].as_str().unwrap()));
    assert!(lc["apiVersion"].as_str().unwrap().starts_with("2.42"));
    for ping in ["/api/ping", "/api/system/ping"] {
        let r = b.call(Method::GET, ping, None, None).await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "{ping} needs no login, as in DHIS2"
        );
    }
    // 2. api/me with the login field list and an explicit Basic header (ISO-8859-1 encoded).
    let uri = format!("/api/me?fields={}", sdk::user_login());
    let r = b
        .call(
            Method::GET,
            &uri,
            Some(basic_latin1(ANDROID.0, ANDROID.1)),
            None,
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.bytes)
    );
    assert!(r.headers.get("set-cookie").is_none());
    let me = r.json();
    assert_eq!(me["id"], "cbUserAndro");
    assert_eq!(me["username"], "android");
    assert_eq!(me["userCredentials"]["username"], "android");
    assert_eq!(me["userRoles"][0]["id"], "cbRoleCaptr");
    assert_eq!(me["userRoles"][0]["name"], "Clinic data capture");
    assert_eq!(me["userGroups"][0]["id"], "cbUgClinicA");
    assert_dhis2_date(&me["created"], "me.created");
    assert!(me.get("password").is_none() && me.get("passwordHash").is_none());
    // 3. Settings app info and general settings.
    let info = b
        .get_ok("/api/dataStore/ANDROID_SETTINGS_APP/info", ANDROID)
        .await;
    assert!(["1.1", "2.0"].contains(&info["dataStoreVersion"].as_str().unwrap()));
    let gs = b
        .get_ok(
            "/api/dataStore/ANDROID_SETTINGS_APP/generalSettings",
            ANDROID,
        )
        .await;
    assert!(gs["encryptDB"].is_boolean());
    // 4. system/info → version gate.
    let si = b
        .get_ok(
            &format!("/api/system/info?fields={}", sdk::SYSTEM_INFO),
            ANDROID,
        )
        .await;
    assert!(si["version"].as_str().unwrap().starts_with("2.42"));
    assert_dhis2_date(&si["serverDate"], "serverDate");
    assert_eq!(si["contextPath"], "http://10.0.0.1:8080");
    assert_eq!(si["serverTimeZoneId"], "Etc/UTC");
    assert!(si["dateFormat"].is_string() && si["systemName"].is_string());
    assert!(
        si.get("calendar").is_none(),
        "fields must restrict system/info"
    );
}

/// §4.2 in order, as `Dhis2MockServer.enqueueMetadataResponses()` lists it.
#[tokio::test]
async fn sdk_full_metadata_sync() {
    let b = Box::demo().await;
    let u = ANDROID;
    // 1–3: settings, system info, authenticated loginConfig.
    b.get_ok("/api/dataStore/ANDROID_SETTINGS_APP/info", u)
        .await;
    b.get_ok("/api/dataStore/ANDROID_SETTINGS_APP/generalSettings", u)
        .await;
    let si = b
        .get_ok(&format!("/api/system/info?fields={}", sdk::SYSTEM_INFO), u)
        .await;
    let server_date = si["serverDate"].as_str().unwrap().to_string();
    b.get_ok("/api/loginConfig", u).await;
    // 4: settings namespaces (customIntents is not configured: a 404 WebMessage is fine).
    for k in [
        "generalSettings",
        "synchronization",
        "appearance",
        "analytics",
    ] {
        b.get_ok(&format!("/api/dataStore/ANDROID_SETTINGS_APP/{k}"), u)
            .await;
    }
    let sync = b
        .get_ok("/api/dataStore/ANDROID_SETTINGS_APP/synchronization", u)
        .await;
    assert_eq!(sync["trackerImporterVersion"], "V2");
    b.get("/api/dataStore/ANDROID_SETTINGS_APP/customIntents", u)
        .await
        .assert_web_message(404);
    let us = b
        .get_ok("/api/userSettings?fields=keyUiLocale,keyDbLocale", u)
        .await;
    assert_eq!(us.as_object().unwrap().len(), 2, "{us}");
    let ss = b
        .get_ok("/api/systemSettings?key=keyFlag,keyStyle,keyCustomColorMobile,keyDefaultBaseMap,analyticsFinancialYearStart,analyticsWeeklyStart", u)
        .await;
    assert!(
        ss.as_object()
            .unwrap()
            .keys()
            .all(|k| k.starts_with("key") || k.starts_with("analytics"))
    );
    b.get("/api/dataStore/APK_DISTRIBUTION/versions", u)
        .await
        .assert_web_message(404);
    // 5: use cases.
    b.get("/api/dataStore/USE_CASES/stockUseCases", u)
        .await
        .assert_web_message(404);
    // 6: constants.
    let c = b
        .get_ok(
            &format!("/api/constants?fields={},value&paging=false", sdk::NAMEABLE),
            u,
        )
        .await;
    assert_eq!(c["constants"][0]["value"], 39);
    // 7: default category combo.
    let cc = b
        .get_ok(
            &format!(
                "/api/categoryCombos?fields={}&filter=isDefault:eq:true&paging=false",
                sdk::category_combo()
            ),
            u,
        )
        .await;
    assert_eq!(ids(&cc, "categoryCombos"), vec!["bjDvmb4bfuf"]);
    assert_eq!(cc["categoryCombos"][0]["isDefault"], true);
    assert_eq!(
        cc["categoryCombos"][0]["categoryOptionCombos"][0]["id"],
        "HllvX50cXC0"
    );
    assert_eq!(
        cc["categoryCombos"][0]["categoryOptionCombos"][0]["categoryOptions"][0]["id"],
        "xYerKDKCefk"
    );
    // 9: me with org units, authorities.
    let me = b
        .get_ok(&format!("/api/me?fields={}", sdk::user_with_org_units()), u)
        .await;
    assert_eq!(
        me["organisationUnits"],
        json!([{"id": CLINIC_A, "path": "/cbCountry01/cbDistrct01/cbClinicA01"}])
    );
    assert!(
        me.get("userCredentials").is_none(),
        "fields must restrict me"
    );
    let auth = b.get_ok("/api/me/authorization", u).await;
    assert!(auth.as_array().unwrap().iter().all(Value::is_string));
    assert!(
        auth.as_array()
            .unwrap()
            .contains(&json!("F_TEI_CASCADE_DELETE"))
    );
    // 10: levels, then org units paged per root by 500 with order=id:asc.
    let lv = b
        .get_ok(
            &format!(
                "/api/organisationUnitLevels?fields={},level&paging=false",
                sdk::IDENT
            ),
            u,
        )
        .await;
    assert_eq!(lv["organisationUnitLevels"].as_array().unwrap().len(), 3);
    let ous = b
        .get_ok(&format!("/api/organisationUnits?fields={}&filter=path:like:{CLINIC_A}&order=id:asc&paging=true&pageSize=500&page=1", sdk::org_unit()), u)
        .await;
    assert_eq!(ids(&ous, "organisationUnits"), vec![CLINIC_A]);
    let ou = &ous["organisationUnits"][0];
    assert_eq!(ou["level"], 3);
    assert_eq!(ou["parent"], json!({"id": "cbDistrct01"}));
    assert_eq!(
        ou["ancestors"][1],
        json!({"id": "cbDistrct01", "displayName": "Riverside District"})
    );
    assert_dhis2_date(&ou["openingDate"], "openingDate");
    let program_ids: BTreeSet<String> = ids(ou, "programs").into_iter().collect();
    let data_set_ids: Vec<String> = ids(ou, "dataSets");
    assert_eq!(
        program_ids,
        ["cbPrgHealth", OPD].iter().map(|s| s.to_string()).collect()
    );
    assert_eq!(data_set_ids, vec!["cbDsOpdMon1"]);
    // 11: programs → stages → TETs → attributes → rules → relationship types → option sets →
    // options → option groups → filters → working lists.
    let pids = program_ids.iter().cloned().collect::<Vec<_>>().join(",");
    let progs = b
        .get_ok(&format!("/api/programs?fields={}&filter=id:in:[{pids}]&filter=access.data.read:eq:true&paging=false", sdk::program()), u)
        .await;
    assert_eq!(progs["programs"].as_array().unwrap().len(), 2);
    let opd = progs["programs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == OPD)
        .unwrap();
    assert_eq!(opd["programType"], "WITH_REGISTRATION");
    assert_eq!(opd["access"], json!({"data": {"write": true}}));
    assert_eq!(opd["trackedEntityType"], json!({"id": "cbTetPerson"}));
    assert_eq!(
        opd["programTrackedEntityAttributes"]
            .as_array()
            .unwrap()
            .len(),
        6
    );
    assert_eq!(
        opd["programRuleVariables"][0]["programRuleVariableSourceType"],
        "DATAELEMENT_NEWEST_EVENT_PROGRAM_STAGE"
    );
    assert_eq!(opd["style"]["color"], "#1E88E5");
    assert_dhis2_date(&opd["lastUpdated"], "program.lastUpdated");
    let stages = b
        .get_ok(&format!("/api/programStages?fields={}&filter=program.id:in:[{pids}]&filter=access.data.read:eq:true&paging=false", sdk::program_stage()), u)
        .await;
    let stage_names: BTreeSet<&str> = stages["programStages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        stage_names,
        ["Consultation", "Health session", "Pharmacy", "Triage"]
            .into_iter()
            .collect()
    );
    let triage = stages["programStages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "cbStgTriage")
        .unwrap();
    let temp = &triage["programStageDataElements"][1]["dataElement"];
    assert_eq!(temp["valueType"], "NUMBER");
    assert_eq!(temp["legendSets"], json!([{"id": "cbLegTemp01"}]));
    assert_eq!(temp["access"], json!({"read": true}));
    assert_eq!(triage["program"], json!({"id": OPD}));
    let tet = b
        .get_ok(&format!("/api/trackedEntityTypes?fields={}&filter=id:in:[cbTetPerson]&filter=access.data.read:eq:true&paging=false", sdk::tracked_entity_type()), u)
        .await;
    assert_eq!(ids(&tet, "trackedEntityTypes"), vec!["cbTetPerson"]);
    let attr_ids: Vec<String> = opd["programTrackedEntityAttributes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            p["trackedEntityAttribute"]["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let attrs = b
        .get_ok(
            &format!(
                "/api/trackedEntityAttributes?fields={}&filter=id:in:[{}]&paging=false",
                sdk::tracked_entity_attribute(),
                attr_ids.join(",")
            ),
            u,
        )
        .await;
    assert_eq!(
        attrs["trackedEntityAttributes"].as_array().unwrap().len(),
        6
    );
    let pat = attrs["trackedEntityAttributes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == "cbAttrPatId")
        .unwrap();
    assert_eq!(pat["generated"], true);
    assert_eq!(pat["pattern"], "\"OPD-\" + SEQUENTIAL(######)");
    let rules = b
        .get_ok(
            &format!(
                "/api/programRules?fields={}&filter=program.id:in:[{pids}]&paging=false",
                sdk::program_rule()
            ),
            u,
        )
        .await;
    assert_eq!(rules["programRules"].as_array().unwrap().len(), 2);
    assert!(
        rules["programRules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["programRuleActions"][0]["programRuleActionType"] == "SHOWWARNING")
    );
    let rts = b
        .get_ok(
            &format!(
                "/api/relationshipTypes?fields={}&filter=access.data.read:eq:true&paging=false",
                sdk::relationship_type()
            ),
            u,
        )
        .await;
    assert_eq!(
        rts["relationshipTypes"][0]["fromConstraint"]["trackedEntityType"]["id"],
        "cbTetPerson"
    );
    // The incremental variant: nothing changed since serverDate.
    let rts = b
        .get_ok(&format!("/api/relationshipTypes?fields={}&filter=access.data.read:eq:true&filter=lastUpdated:gt:{server_date}&paging=false", sdk::relationship_type()), u)
        .await;
    assert_eq!(rts["relationshipTypes"], json!([]));
    let os = b
        .get_ok(&format!("/api/optionSets?fields={}&filter=id:in:[cbOsSex0001,cbOsTriage1,cbOsDiag001]&paging=false", sdk::option_set()), u)
        .await;
    assert_eq!(os["optionSets"].as_array().unwrap().len(), 3);
    let opts = b
        .get_ok(&format!("/api/options?fields={}&filter=optionSet.id:in:[cbOsTriage1]&paging=true&page=1&pageSize=5000", sdk::option()), u)
        .await;
    let codes: Vec<&str> = opts["options"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["code"].as_str().unwrap())
        .collect();
    assert_eq!(
        codes,
        vec!["RED", "YELLOW", "GREEN"],
        "options in sortOrder"
    );
    let og = b
        .get_ok(
            &format!(
                "/api/optionGroups?fields={}&filter=optionSet.id:in:[cbOsTriage1]&paging=false",
                sdk::option_group()
            ),
            u,
        )
        .await;
    assert_eq!(
        og["optionGroups"][0]["options"].as_array().unwrap().len(),
        2
    );
    let tf = b
        .get_ok(&format!("/api/trackedEntityInstanceFilters?fields=*&filter=program.id:in:[{pids}]&filter=access.read:eq:true&paging=false"), u)
        .await;
    assert_eq!(
        ids(&tf, "trackedEntityInstanceFilters"),
        vec!["cbTeiFltAct"]
    );
    let ef = b
        .get_ok(&format!("/api/eventFilters?fields=*&filter=program:in:[{pids}]&filter=access.read:eq:true&paging=false"), u)
        .await;
    assert_eq!(ids(&ef, "eventFilters"), vec!["cbEvFltTdy1"]);
    let wl = b
        .get_ok(&format!("/api/programStageWorkingLists?fields=*&filter=program.id:in:[{pids}]&filter=access.read:eq:true&paging=false"), u)
        .await;
    assert!(wl["programStageWorkingLists"][0]["programStageQueryCriteria"].is_object());
    // 12: data sets → data elements → validation rules.
    let ds = b
        .get_ok(&format!("/api/dataSets?fields={}&filter=id:in:[cbDsOpdMon1]&filter=access.data.read:eq:true&paging=false", sdk::data_set()), u)
        .await;
    let d = &ds["dataSets"][0];
    assert_eq!(d["periodType"], "Monthly");
    assert_eq!(d["dataSetElements"].as_array().unwrap().len(), 3);
    assert_eq!(
        d["sections"][0]["dataElements"].as_array().unwrap().len(),
        3
    );
    assert_eq!(d["access"]["data"]["write"], true);
    let de_ids: Vec<String> = d["dataSetElements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["dataElement"]["id"].as_str().unwrap().to_string())
        .collect();
    let des = b
        .get_ok(&format!("/api/dataElements?fields={}&filter=id:in:[{}]&filter=access.read:eq:true&paging=false", sdk::data_element(), de_ids.join(",")), u)
        .await;
    assert_eq!(des["dataElements"].as_array().unwrap().len(), 3);
    assert!(
        des["dataElements"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["categoryCombo"]["id"] == "cbComboSex1")
    );
    let vr_ids = b
        .get_ok(
            "/api/validationRules?dataSet=cbDsOpdMon1&fields=id&paging=false",
            u,
        )
        .await;
    assert_eq!(ids(&vr_ids, "validationRules"), vec!["cbVrMalOpd1"]);
    let vr = b
        .get_ok(&format!("/api/validationRules?fields={},instruction,importance,operator,periodType,skipFormValidation,leftSide[expression,description,missingValueStrategy],rightSide[expression,description,missingValueStrategy],organisationUnitLevels&filter=id:in:[cbVrMalOpd1]&paging=false", sdk::NAMEABLE), u)
        .await;
    assert_eq!(
        vr["validationRules"][0]["leftSide"]["expression"],
        "#{cbDeAggMal1}"
    );
    // 13: category combos → categories → options → option org units.
    let combos = b
        .get_ok(
            &format!(
                "/api/categoryCombos?fields={}&filter=id:in:[bjDvmb4bfuf,cbComboSex1]&paging=false",
                sdk::category_combo()
            ),
            u,
        )
        .await;
    assert_eq!(combos["categoryCombos"].as_array().unwrap().len(), 2);
    let cats = b
        .get_ok(
            &format!(
                "/api/categories?fields={}&filter=id:in:[GLevLNI9wkl,cbCatSex001]&paging=false",
                sdk::category()
            ),
            u,
        )
        .await;
    assert_eq!(cats["categories"].as_array().unwrap().len(), 2);
    let copts = b
        .get_ok(&format!("/api/categoryOptions?fields={}&filter=categories.id:in:[GLevLNI9wkl,cbCatSex001]&filter=access.data.read:eq:true&paging=false", sdk::category_option()), u)
        .await;
    // categories.id is a reverse link the box does not index on options: DHIS2 resolves it
    // through the category's options, and so must we.
    assert_eq!(
        copts["categoryOptions"].as_array().unwrap().len(),
        3,
        "{copts}"
    );
    let coou = b
        .get_ok(
            "/api/categoryOptions/orgUnits?categoryOptions=xYerKDKCefk,cbOptFemale,cbOptMale01",
            u,
        )
        .await;
    assert_eq!(coou, json!({}));
    // 14–20: visualizations (none), program indicators ×2, indicators, types, legends,
    // attributes, expression dimension items, icons.
    b.get(
        "/api/visualizations/Aaaaaaaaaaa?fields=*&filter=access.read:eq:true&paging=false",
        u,
    )
    .await
    .assert_web_message(404);
    let pi = b
        .get_ok(&format!("/api/programIndicators?fields={},displayInForm,expression,dimensionItem,filter,decimals,aggregationType,analyticsType,program[id],legendSets[id]&filter=displayInForm:eq:true&filter=program.id:in:[{pids}]&paging=false", sdk::NAMEABLE), u)
        .await;
    assert_eq!(ids(&pi, "programIndicators"), vec!["cbPiAvgTemp"]);
    b.get_ok(
        &format!(
            "/api/programIndicators?fields={}&filter=id:in:[cbPiAvgTemp]&paging=false",
            sdk::NAMEABLE
        ),
        u,
    )
    .await;
    let ind = b
        .get_ok(&format!("/api/indicators?fields={},annualized,indicatorType[id],numerator,denominator,legendSets[id],decimals&filter=id:in:[cbIndMalShr]&paging=false", sdk::NAMEABLE), u)
        .await;
    assert_eq!(ind["indicators"][0]["indicatorType"]["id"], "cbIndTypPct");
    b.get_ok(
        &format!(
            "/api/indicatorTypes?fields={},number,factor&filter=id:in:[cbIndTypPct]&paging=false",
            sdk::IDENT
        ),
        u,
    )
    .await;
    let ls = b
        .get_ok(&format!("/api/legendSets?fields={},symbolizer,legends[{},startValue,endValue,color]&filter=id:in:[cbLegTemp01]&paging=false", sdk::IDENT, sdk::IDENT), u)
        .await;
    assert_eq!(ls["legendSets"][0]["legends"].as_array().unwrap().len(), 3);
    let at = b
        .get_ok(
            &format!(
                "/api/attributes?fields={}&filter=id:in:[]&paging=false",
                sdk::IDENT
            ),
            u,
        )
        .await;
    assert_eq!(at["attributes"], json!([]));
    b.get_ok(
        "/api/expressionDimensionItems?fields=id,name,expression&filter=id:in:[]&paging=false",
        u,
    )
    .await;
    b.get_ok(
        "/api/icons?fields=key,fileResource[id],href&keys=a,b&type=CUSTOM&paging=false",
        u,
    )
    .await;
    b.get_ok(
        "/api/externalMapLayers?fields=*&filter=mapLayerPosition:eq:BASEMAP&paging=false",
        u,
    )
    .await;
    // Every metadata list carries ids and strict dates.
    for (path, key) in [
        ("programs", "programs"),
        ("dataElements", "dataElements"),
        ("options", "options"),
    ] {
        let v = b
            .get_ok(
                &format!("/api/{path}?fields=id,created,lastUpdated&paging=false"),
                ADMIN,
            )
            .await;
        for o in v[key].as_array().unwrap() {
            assert!(o["id"].is_string());
            assert_dhis2_date(&o["created"], "created");
            assert_dhis2_date(&o["lastUpdated"], "lastUpdated");
        }
    }
}

#[tokio::test]
async fn filters_really_filter() {
    let b = Box::demo().await;
    let n = |v: &Value, k: &str| v[k].as_array().unwrap().len();
    let all = b.get_ok("/api/dataElements?paging=false", ADMIN).await;
    let agg = b
        .get_ok(
            "/api/dataElements?paging=false&filter=domainType:eq:AGGREGATE",
            ADMIN,
        )
        .await;
    assert!(n(&agg, "dataElements") == 3 && n(&all, "dataElements") == 13);
    let like = b
        .get_ok(
            "/api/dataElements?paging=false&filter=name:ilike:TEMP",
            ADMIN,
        )
        .await;
    assert_eq!(ids(&like, "dataElements"), vec!["cbDeTemp001"]);
    let two = b.get_ok("/api/dataElements?paging=false&filter=domainType:eq:AGGREGATE&filter=name:$like:Malaria", ADMIN).await;
    assert_eq!(ids(&two, "dataElements"), vec!["cbDeAggMal1"]);
    let or = b.get_ok("/api/dataElements?paging=false&filter=id:eq:cbDeAggMal1&filter=id:eq:cbDeAggOpd1&rootJunction=OR", ADMIN).await;
    assert_eq!(n(&or, "dataElements"), 2);
    let none = b
        .get_ok(
            "/api/programs?paging=false&filter=id:in:[Xxxxxxxxxxx]",
            ADMIN,
        )
        .await;
    assert_eq!(n(&none, "programs"), 0);
    let nested = b.get_ok("/api/programStages?paging=false&filter=programStageDataElements.dataElement.id:eq:cbDeDrug001", ADMIN).await;
    assert_eq!(ids(&nested, "programStages"), vec!["cbStgPharma"]);
    let ne = b
        .get_ok(
            "/api/programs?paging=false&filter=programType:!eq:WITH_REGISTRATION",
            ADMIN,
        )
        .await;
    assert_eq!(ids(&ne, "programs"), vec!["cbPrgHealth"]);
    b.get("/api/programs?filter=name:bogus:x", ADMIN)
        .await
        .assert_web_message(400);
    b.get("/api/programs?fields=id,name[", ADMIN)
        .await
        .assert_web_message(400);
    b.get("/api/programs?page=0", ADMIN)
        .await
        .assert_web_message(400);
}

#[tokio::test]
async fn paging_is_stable_and_complete() {
    let b = Box::demo().await;
    let full = b.get_ok("/api/options?fields=id&paging=false", ADMIN).await;
    let full = ids(&full, "options");
    assert_eq!(full.len(), 10);
    for page_size in [1usize, 3, 4, 7] {
        let mut seen = Vec::new();
        for page in 1.. {
            let v = b
                .get_ok(
                    &format!("/api/options?fields=id&paging=true&page={page}&pageSize={page_size}"),
                    ADMIN,
                )
                .await;
            assert_eq!(v["pager"]["total"], 10);
            let got = ids(&v, "options");
            seen.extend(got.iter().cloned());
            if got.len() < page_size {
                break;
            }
        }
        assert_eq!(seen, full, "pageSize {page_size}");
    }
    // Default paging: 50 per page, with a pager.
    let v = b.get_ok("/api/options", ADMIN).await;
    assert_eq!(v["pager"]["pageSize"], 50);
    assert_eq!(
        v["options"][0].as_object().unwrap().len(),
        2,
        "default fields id,displayName"
    );
    let desc = b
        .get_ok(
            "/api/options?fields=id,name&paging=false&order=name:desc",
            ADMIN,
        )
        .await;
    let names: Vec<&str> = desc["options"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    let mut sorted = names.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(names, sorted);
}

#[tokio::test]
async fn import_and_reimport_are_idempotent() {
    let b = Box::demo().await;
    let before = b
        .get_ok("/api/programs/cbPrgOpd001?fields=lastUpdated", ADMIN)
        .await;
    let package: Value = serde_json::from_str(clinicbox_api::demo::DEMO_METADATA).unwrap();
    let r = b
        .call(
            Method::POST,
            "/api/metadata",
            Some(basic(ADMIN.0, ADMIN.1)),
            Some(package.clone()),
        )
        .await;
    let msg = r.assert_web_message(200);
    assert_eq!(msg["status"], "OK");
    let report = &msg["response"];
    assert_eq!(report["responseType"], "ImportReport");
    assert_eq!(report["status"], "OK");
    assert_eq!(report["stats"]["created"], 0);
    assert_eq!(report["stats"]["ignored"], 0);
    assert!(report["stats"]["updated"].as_u64().unwrap() >= 70);
    let after = b
        .get_ok("/api/programs/cbPrgOpd001?fields=lastUpdated", ADMIN)
        .await;
    assert_eq!(before, after, "an unchanged object must not be rewritten");
    // Passwords still work after re-import (hash kept).
    b.get_ok("/api/me?fields=id", ANDROID).await;
    // A real change is written and moves lastUpdated.
    let change = json!({"constants": [{"id": "cbConstFev1", "name": "Fever threshold (°C)", "shortName": "Fever", "value": 38.5}]});
    let r = b
        .call(
            Method::POST,
            "/api/metadata",
            Some(basic(ADMIN.0, ADMIN.1)),
            Some(change),
        )
        .await;
    assert_eq!(r.assert_web_message(200)["response"]["stats"]["updated"], 1);
    assert_eq!(
        b.get_ok("/api/constants/cbConstFev1?fields=value", ANDROID)
            .await["value"],
        38.5
    );
}

#[tokio::test]
async fn broken_package_is_rejected_atomically() {
    let b = Box::demo().await;
    let package = json!({
        "optionSets": [{"id": "cbOsNew0001", "name": "New set", "valueType": "TEXT"}],
        "programs": [{"id": "cbPrgBroken", "name": "Broken", "shortName": "Broken", "programType": "WITH_REGISTRATION",
            "trackedEntityType": {"id": "Missing0001"}, "organisationUnits": [{"id": CLINIC_A}]}]
    });
    let r = b
        .call(
            Method::POST,
            "/api/metadata",
            Some(basic(ADMIN.0, ADMIN.1)),
            Some(package.clone()),
        )
        .await;
    let msg = r.assert_web_message(409);
    assert_eq!(msg["status"], "WARNING");
    assert_eq!(msg["response"]["status"], "ERROR");
    let errs: Vec<&Value> = msg["response"]["typeReports"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["objectReports"].as_array().unwrap())
        .flat_map(|o| o["errorReports"].as_array().unwrap())
        .collect();
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0]["errorCode"], "E5002");
    assert_eq!(errs[0]["errorProperty"], "trackedEntityType");
    assert_eq!(msg["response"]["stats"]["created"], 0);
    b.get("/api/optionSets/cbOsNew0001", ADMIN)
        .await
        .assert_web_message(404);
    b.get("/api/programs/cbPrgBroken", ADMIN)
        .await
        .assert_web_message(404);
    // atomicMode=NONE keeps the valid object.
    let r = b
        .call(
            Method::POST,
            "/api/metadata?atomicMode=NONE",
            Some(basic(ADMIN.0, ADMIN.1)),
            Some(package),
        )
        .await;
    let msg = r.assert_web_message(409);
    assert_eq!(msg["response"]["status"], "WARNING");
    assert_eq!(msg["response"]["stats"]["created"], 1);
    b.get_ok("/api/optionSets/cbOsNew0001", ADMIN).await;
    // Deleting something still referenced is refused; CREATE over an existing object too.
    let del = json!({"optionSets": [{"id": "cbOsSex0001"}]});
    let r = b
        .call(
            Method::POST,
            "/api/metadata?importStrategy=DELETE",
            Some(basic(ADMIN.0, ADMIN.1)),
            Some(del),
        )
        .await;
    assert_eq!(
        r.assert_web_message(409)["response"]["typeReports"][0]["objectReports"][0]["errorReports"]
            [0]["errorCode"],
        "E4030"
    );
    let dup = json!({"constants": [{"id": "cbConstFev1", "name": "x"}]});
    let r = b
        .call(
            Method::POST,
            "/api/metadata?importStrategy=CREATE",
            Some(basic(ADMIN.0, ADMIN.1)),
            Some(dup),
        )
        .await;
    r.assert_web_message(409);
    // Garbage bodies and non-admins.
    let r = b
        .call(
            Method::POST,
            "/api/metadata",
            Some(basic(ANDROID.0, ANDROID.1)),
            Some(json!({})),
        )
        .await;
    r.assert_web_message(403);
    let req = axum::http::Request::builder()
        .method(Method::POST)
        .uri("/api/metadata")
        .header("authorization", basic(ADMIN.0, ADMIN.1))
        .header("content-type", "application/json")
        .body(axum::body::Body::from("{not json"))
        .unwrap();
    let resp = tower::ServiceExt::oneshot(b.app.clone(), req)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn wrong_password_is_a_webmessage_401_and_never_account_disabled() {
    let b = Box::demo().await;
    let r = b.get("/api/me", ("android", "wrong")).await;
    let v = r.assert_web_message(401);
    assert_eq!(v["status"], "ERROR");
    assert_ne!(v["message"], "Account disabled");
    assert!(r.headers.get("location").is_none() && r.headers.get("set-cookie").is_none());
    let r = b.call(Method::GET, "/api/me", None, None).await;
    r.assert_web_message(401);
    let r = b.get("/api/me", ("nobody", "whatever")).await;
    assert_ne!(r.assert_web_message(401)["message"], "Account disabled");
    // Unknown path: 401 without credentials, 404 with; outside /api simply 404.
    b.call(Method::GET, "/nothing", None, None)
        .await
        .assert_web_message(404);
    b.call(Method::GET, "/api/nothingHere", None, None)
        .await
        .assert_web_message(401);
    b.get("/api/nothingHere", ANDROID)
        .await
        .assert_web_message(404);
    b.call(
        Method::DELETE,
        "/api/me",
        Some(basic(ANDROID.0, ANDROID.1)),
        None,
    )
    .await
    .assert_web_message(405);
    // A disabled account says so, but only to the right password.
    clinicbox_api::admin::set_disabled(b.state.metadata(), "android", true)
        .await
        .unwrap();
    assert_eq!(
        b.get("/api/me", ANDROID).await.assert_web_message(401)["message"],
        "Account disabled"
    );
    assert_eq!(
        b.get("/api/me", ("android", "wrong"))
            .await
            .assert_web_message(401)["message"],
        "Unauthorized"
    );
    clinicbox_api::admin::set_disabled(b.state.metadata(), "android", false)
        .await
        .unwrap();
    b.get_ok("/api/me?fields=id", ANDROID).await;
}

/// A stranger on the LAN guessing a nurse's password slows guessing down, but the nurse's
/// tablets (addresses that logged in as her before) keep logging in, even with the
/// verification cache gone (a restart, a changed password).
#[tokio::test]
async fn failed_logins_slow_strangers_down_but_never_lock_staff_out() {
    let b = Box::with_config(ApiConfig {
        failed_logins_per_user: 3,
        failed_logins_per_address: 1000,
        credential_cache_secs: 0,
        ..ApiConfig::default()
    })
    .await;
    const TABLET: [u8; 4] = [10, 0, 0, 21];
    const STRANGER: [u8; 4] = [10, 0, 0, 66];
    const NEW_TABLET: [u8; 4] = [10, 0, 0, 22];
    assert_eq!(
        b.get_from("/api/me?fields=id", ANDROID, TABLET)
            .await
            .status,
        StatusCode::OK
    );
    let mut refused_fast = 0;
    for _ in 0..20 {
        let r = b.get_from("/api/me", ("android", "guess"), STRANGER).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        if r.json()["message"] == "Account locked" {
            refused_fast += 1;
        }
    }
    // After 3 failures the stranger gets one try per slow-down interval, no more.
    assert!(
        refused_fast >= 16,
        "only {refused_fast} of 20 guesses were slowed down"
    );
    // The nurse's own tablet logs in at once, every time.
    for _ in 0..3 {
        let r = b.get_from("/api/me?fields=id", ANDROID, TABLET).await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "{}",
            String::from_utf8_lossy(&r.bytes)
        );
    }
    // A device that never logged in as her is slowed down (the stranger used this interval's
    // one attempt): "Account locked", which the app shows, for now.
    assert_eq!(
        b.get_from("/api/me", ANDROID, NEW_TABLET).await.json()["message"],
        "Account locked"
    );
    // Other staff are not affected at all.
    assert_eq!(
        b.get_from("/api/me?fields=id", ADMIN, STRANGER)
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn latin1_and_utf8_passwords_both_work() {
    let b = Box::demo().await;
    let new = clinicbox_api::admin::NewUser {
        username: "jose".into(),
        password: "pässwörd1".into(),
        first_name: "José".into(),
        surname: "Mwangi".into(),
        roles: vec!["Clinic data capture".into()],
        org_units: vec![CLINIC_B.into()],
        ..Default::default()
    };
    clinicbox_api::admin::add_user(b.state.metadata(), &new)
        .await
        .unwrap();
    for auth in [
        basic("jose", "pässwörd1"),
        common::basic_latin1("jose", "pässwörd1"),
    ] {
        let r = b
            .call(Method::GET, "/api/me?fields=username", Some(auth), None)
            .await;
        assert_eq!(r.status, StatusCode::OK);
    }
    // passwd: the old password stops working at once, the new one works.
    clinicbox_api::admin::set_password(b.state.metadata(), "jose", "n3w-password")
        .await
        .unwrap();
    b.get("/api/me", ("jose", "pässwörd1"))
        .await
        .assert_web_message(401);
    b.get_ok("/api/me?fields=id", ("jose", "n3w-password"))
        .await;
    let list = clinicbox_api::admin::list_users(b.state.metadata()).unwrap();
    let names: Vec<&str> = list.iter().map(|u| u.username.as_str()).collect();
    assert_eq!(names, vec!["admin", "android", "jose"]);
    assert_eq!(list[2].org_units, vec!["Hillside Clinic B"]);
    assert!(
        clinicbox_api::admin::add_user(b.state.metadata(), &new)
            .await
            .is_err(),
        "duplicate username"
    );
}

#[tokio::test]
async fn a_user_outside_a_clinic_does_not_see_its_org_units() {
    let b = Box::demo().await;
    let v = b
        .get_ok("/api/organisationUnits?fields=id&paging=false", ANDROID)
        .await;
    assert_eq!(ids(&v, "organisationUnits"), vec![CLINIC_A]);
    b.get(&format!("/api/organisationUnits/{CLINIC_B}"), ANDROID)
        .await
        .assert_web_message(404);
    let v = b
        .get_ok(
            &format!("/api/organisationUnits?fields=id&filter=path:like:{CLINIC_B}&paging=false"),
            ANDROID,
        )
        .await;
    assert_eq!(ids(&v, "organisationUnits"), Vec::<String>::new());
    let v = b
        .get_ok("/api/organisationUnits?fields=id&paging=false", ADMIN)
        .await;
    assert_eq!(ids(&v, "organisationUnits").len(), 4);
    // Users: a capture user sees only itself.
    let v = b
        .get_ok("/api/users?fields=id,username&paging=false", ANDROID)
        .await;
    assert_eq!(ids(&v, "users"), vec!["cbUserAndro"]);
    assert!(v["users"][0].get("password").is_none());
}

#[tokio::test]
async fn data_store_crud_is_dhis2_shaped() {
    let b = Box::demo().await;
    let admin = Some(basic(ADMIN.0, ADMIN.1));
    let r = b
        .call(
            Method::POST,
            "/api/dataStore/clinic/config",
            admin.clone(),
            Some(json!({"a": 1})),
        )
        .await;
    assert_eq!(
        r.assert_web_message(201)["message"],
        "Key created: 'config'"
    );
    b.call(
        Method::POST,
        "/api/dataStore/clinic/config",
        admin.clone(),
        Some(json!({"a": 2})),
    )
    .await
    .assert_web_message(409);
    b.call(
        Method::PUT,
        "/api/dataStore/clinic/config",
        admin.clone(),
        Some(json!({"a": 3})),
    )
    .await
    .assert_web_message(200);
    b.call(
        Method::PUT,
        "/api/dataStore/clinic/nope",
        admin.clone(),
        Some(json!(1)),
    )
    .await
    .assert_web_message(404);
    b.call(
        Method::POST,
        "/api/dataStore/clinic/x",
        Some(basic(ANDROID.0, ANDROID.1)),
        Some(json!(1)),
    )
    .await
    .assert_web_message(403);
    assert_eq!(
        b.get_ok("/api/dataStore/clinic/config", ANDROID).await,
        json!({"a": 3})
    );
    assert_eq!(
        b.get_ok("/api/dataStore/clinic", ANDROID).await,
        json!(["config"])
    );
    let paged = b
        .get_ok("/api/dataStore/clinic?fields=.&page=1&pageSize=50", ANDROID)
        .await;
    assert_eq!(
        paged["entries"],
        json!([{"key": "config", "value": {"a": 3}}])
    );
    assert!(
        b.get_ok("/api/dataStore", ANDROID)
            .await
            .as_array()
            .unwrap()
            .contains(&json!("ANDROID_SETTINGS_APP"))
    );
    b.call(
        Method::DELETE,
        "/api/dataStore/clinic/config",
        admin.clone(),
        None,
    )
    .await
    .assert_web_message(200);
    b.get("/api/dataStore/clinic/config", ANDROID)
        .await
        .assert_web_message(404);
    b.get("/api/dataStore/clinic", ANDROID)
        .await
        .assert_web_message(404);
}

#[tokio::test]
async fn metadata_export_and_single_objects() {
    let b = Box::demo().await;
    let v = b
        .get_ok("/api/metadata?dataElements:fields=id&categoryOptionCombos:fields=id&organisationUnits:fields=id&trackedEntityTypes:fields=id&trackedEntityAttributes:fields=id&programs:fields=id", ANDROID)
        .await;
    assert_eq!(v["programs"].as_array().unwrap().len(), 2);
    assert_eq!(v["organisationUnits"].as_array().unwrap().len(), 1);
    let p = b.get_ok("/api/programs/cbPrgOpd001", ANDROID).await;
    assert_eq!(p["name"], "Outpatient visit");
    assert_eq!(p["access"]["data"]["write"], true);
    assert!(
        p.get("programTrackedEntityAttributes").is_some(),
        "single objects default to *"
    );
    let s = b.get_ok("/api/programStages/cbStgTriage?fields=id,programStageDataElements[dataElement[id,name]]", ANDROID).await;
    assert_eq!(
        s["programStageDataElements"][0]["dataElement"]["name"],
        "Weight (kg)"
    );
}
