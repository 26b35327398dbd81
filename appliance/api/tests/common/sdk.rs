//! The Android SDK's query strings (field lists from its `*Fields.kt`, sent with raw `[ ] , :`)
//! and the request order of a login plus full metadata sync of the demo package (§4.1–4.2 of
//! the research note). Plain `std`: also included by the end-to-end test in `tests/`.
#![allow(dead_code)]

pub const IDENT: &str = "id,code,name,displayName,created,lastUpdated,deleted";
pub const NAMEABLE: &str = "id,code,name,displayName,created,lastUpdated,deleted,shortName,displayShortName,description,displayDescription";
pub const ACCESS_DATA_WRITE: &str = "access[data[write]]";
pub const STYLE: &str = "style[color,icon]";
pub const ATTRIBUTE_VALUES: &str =
    "attributeValues[value,attribute[id,code,name,displayName,created,lastUpdated,deleted]]";

pub fn user_login() -> String {
    let roles = format!("userRoles[{IDENT}]");
    format!(
        "id,code,name,displayName,created,lastUpdated,birthday,education,gender,jobTitle,surname,firstName,introduction,employer,interests,languages,email,phoneNumber,nationality,deleted,userGroups[{IDENT}],userCredentials[username,{roles}],username,{roles}"
    )
}

pub fn user_with_org_units() -> String {
    format!(
        "id,code,name,displayName,created,lastUpdated,birthday,education,gender,jobTitle,surname,firstName,introduction,employer,interests,languages,email,phoneNumber,nationality,deleted,userGroups[{IDENT}],username,userRoles[{IDENT}],organisationUnits[id,path],teiSearchOrganisationUnits[id,path]"
    )
}

pub const SYSTEM_INFO: &str =
    "serverDate,dateFormat,version,contextPath,systemName,serverTimeZoneId";

pub fn org_unit() -> String {
    format!(
        "{NAMEABLE},path,openingDate,closedDate,level,featureType,parent[id],programs[id],dataSets[id],ancestors[id,displayName],organisationUnitGroups[{NAMEABLE}]"
    )
}

pub fn data_element() -> String {
    format!(
        "{NAMEABLE},valueType,zeroIsSignificant,aggregationType,formName,domainType,displayFormName,optionSet[id],categoryCombo[id],fieldMask,{STYLE},access[read],legendSets[id],{ATTRIBUTE_VALUES}"
    )
}

pub fn program() -> String {
    let ptea = format!(
        "programTrackedEntityAttributes[{NAMEABLE},mandatory,trackedEntityAttribute[id],allowFutureDate,displayInList,program[id],sortOrder,searchable,renderType]"
    );
    let prv = format!(
        "programRuleVariables[{IDENT},useCodeForOptionSet,program[id],programStage[id],dataElement[id],trackedEntityAttribute[id],programRuleVariableSourceType,valueType]"
    );
    let sections = format!(
        "programSections[{IDENT},description,program[id],trackedEntityAttributes[id],sortOrder,sectionOrder,renderType,{STYLE}]"
    );
    format!(
        "{NAMEABLE},version,onlyEnrollOnce,displayIncidentDate,registration,selectEnrollmentDatesInFuture,dataEntryMethod,ignoreOverdueEvents,selectIncidentDatesInFuture,captureCoordinates,useFirstStageDuringRegistration,displayFrontPageList,programType,{ptea},relatedProgram[id],trackedEntityType[id],categoryCombo[id],{ACCESS_DATA_WRITE},{prv},{STYLE},expiryDays,completeEventsExpiryDays,expiryPeriodType,minAttributesRequiredToSearch,maxTeiCountToReturn,featureType,accessLevel,{sections},{ATTRIBUTE_VALUES},displayEnrollmentLabel,displayFollowUpLabel,displayOrgUnitLabel,displayRelationshipLabel,displayNoteLabel,displayTrackedEntityAttributeLabel,displayProgramStageLabel,displayEventLabel,enrollmentCategoryCombo[id],displayEnrollmentDateLabel,displayIncidentDateLabel"
    )
}

pub fn program_stage() -> String {
    let psde = format!(
        "programStageDataElements[{IDENT},displayInReports,compulsory,allowProvidedElsewhere,sortOrder,allowFutureDate,renderType,dataElement[{}],programStage[id]]",
        data_element()
    );
    format!(
        "{IDENT},description,displayDescription,displayExecutionDateLabel,displayDueDateLabel,allowGenerateNextVisit,validCompleteOnly,reportDateToUse,openAfterEnrollment,repeatable,captureCoordinates,featureType,formType,displayGenerateEventBox,generatedByEnrollmentDate,autoGenerateEvent,sortOrder,hideDueDate,blockEntryForm,minDaysFromStart,standardInterval,periodType,program,remindCompleted,validationStrategy,enableUserAssignment,displayProgramStageLabel,displayEventLabel,programStageSections[{IDENT},sortOrder,programIndicators[id],dataElements[id],renderType],{psde},{STYLE},{ATTRIBUTE_VALUES},{ACCESS_DATA_WRITE}"
    )
}

pub fn tracked_entity_type() -> String {
    format!(
        "{NAMEABLE},trackedEntityTypeAttributes[trackedEntityType[id],trackedEntityAttribute[id],displayInList,mandatory,searchable],{STYLE},featureType,{ACCESS_DATA_WRITE},allowAuditLog,minAttributesRequiredToSearch,maxTeiCountToReturn"
    )
}

pub fn tracked_entity_attribute() -> String {
    format!(
        "{NAMEABLE},pattern,sortOrderInListNoProgram,valueType,expression,programScope,displayInListNoProgram,generated,displayOnVisitSchedule,orgunitScope,unique,inherit,fieldMask,optionSet[id],{STYLE},access[read],formName,displayFormName,legendSets[id],aggregationType,confidential,{ATTRIBUTE_VALUES}"
    )
}

pub fn program_rule() -> String {
    format!(
        "{IDENT},priority,condition,program[id],programStage[id],programRuleActions[{IDENT},data,content,location,trackedEntityAttribute[id],programIndicator[id],programStageSection[id],programRuleActionType,programStage[id],dataElement[id],option[id],optionGroup[id],displayContent]"
    )
}

pub fn relationship_type() -> String {
    let constraint = "[relationshipEntity,trackedEntityType[id],program[id],programStage[id],trackerDataView[attributes,dataElements]]";
    format!(
        "{IDENT},fromToName,toFromName,bidirectional,fromConstraint{constraint},toConstraint{constraint},{ACCESS_DATA_WRITE}"
    )
}

pub fn option_set() -> String {
    format!("{IDENT},version,valueType")
}

pub fn option() -> String {
    format!("{IDENT},sortOrder,optionSet[id],{STYLE},{ATTRIBUTE_VALUES}")
}

pub fn option_group() -> String {
    format!("{IDENT},optionSet[id],options[id]")
}

pub fn data_set() -> String {
    format!(
        "{NAMEABLE},periodType,categoryCombo[id],mobile,version,expiryDays,timelyDays,notifyCompletingUser,openFuturePeriods,fieldCombinationRequired,validCompleteOnly,noValueRequiresComment,skipOffline,dataElementDecoration,renderAsTabs,renderHorizontally,displayOptions,workflow[id],dataSetElements[dataSet[id],dataElement[id],categoryCombo[id]],indicators[id],sections[{IDENT},description,sortOrder,dataSet[id],showRowTotals,showColumnTotals,dataElements[id],greyedFields[id,deleted,dataElement[id],categoryOptionCombo[id]],indicators[id],displayOptions],compulsoryDataElementOperands[id,dataElement[id],categoryOptionCombo[id]],dataInputPeriods[period[id],openingDate,closingDate],{ACCESS_DATA_WRITE},{STYLE}"
    )
}

pub fn category_combo() -> String {
    format!("{IDENT},isDefault,categories[id],categoryOptionCombos[{IDENT},categoryOptions[id]]")
}

pub fn category() -> String {
    format!("{IDENT},categoryOptions[id],dataDimensionType")
}

pub fn category_option() -> String {
    format!("{NAMEABLE},startDate,endDate,access[data[read,write]]")
}

/// The requests of one tablet's login and full metadata sync of the demo package (§4.1–4.2),
/// in order, with the SDK's query strings and the ids a sync of the demo discovers.
pub fn sync_sequence() -> Vec<String> {
    let pids = "cbPrgHealth,cbPrgOpd001";
    let mut v = vec![
        "/api/loginConfig".to_string(),
        format!("/api/me?fields={}", user_login()),
        "/api/dataStore/ANDROID_SETTINGS_APP/info".into(),
        "/api/dataStore/ANDROID_SETTINGS_APP/generalSettings".into(),
        format!("/api/system/info?fields={}", SYSTEM_INFO),
        // metadata sync
        "/api/dataStore/ANDROID_SETTINGS_APP/info".into(),
        "/api/dataStore/ANDROID_SETTINGS_APP/generalSettings".into(),
        format!("/api/system/info?fields={}", SYSTEM_INFO),
        "/api/loginConfig".into(),
        "/api/dataStore/ANDROID_SETTINGS_APP/generalSettings".into(),
        "/api/dataStore/ANDROID_SETTINGS_APP/synchronization".into(),
        "/api/dataStore/ANDROID_SETTINGS_APP/appearance".into(),
        "/api/dataStore/ANDROID_SETTINGS_APP/analytics".into(),
        "/api/userSettings?fields=keyUiLocale,keyDbLocale".into(),
        "/api/systemSettings?key=keyFlag,keyStyle,keyCustomColorMobile,keyDefaultBaseMap,analyticsFinancialYearStart,analyticsWeeklyStart".into(),
        format!("/api/constants?fields={},value&paging=false", NAMEABLE),
        format!("/api/categoryCombos?fields={}&filter=isDefault:eq:true&paging=false", category_combo()),
        format!("/api/me?fields={}", user_with_org_units()),
        "/api/me/authorization".into(),
        format!("/api/organisationUnitLevels?fields={},level&paging=false", IDENT),
        format!("/api/organisationUnits?fields={}&filter=path:like:cbClinicA01&order=id:asc&paging=true&pageSize=500&page=1", org_unit()),
        format!("/api/programs?fields={}&filter=id:in:[{pids}]&filter=access.data.read:eq:true&paging=false", program()),
        format!("/api/programStages?fields={}&filter=program.id:in:[{pids}]&filter=access.data.read:eq:true&paging=false", program_stage()),
        format!("/api/trackedEntityTypes?fields={}&filter=id:in:[cbTetPerson]&filter=access.data.read:eq:true&paging=false", tracked_entity_type()),
        format!("/api/trackedEntityAttributes?fields={}&filter=id:in:[cbAttrPatId,cbAttrFirst,cbAttrLastN,cbAttrSex01,cbAttrDob01,cbAttrPhone]&paging=false", tracked_entity_attribute()),
        format!("/api/programRules?fields={}&filter=program.id:in:[{pids}]&paging=false", program_rule()),
        format!("/api/relationshipTypes?fields={}&filter=access.data.read:eq:true&paging=false", relationship_type()),
        format!("/api/optionSets?fields={}&filter=id:in:[cbOsSex0001,cbOsTriage1,cbOsDiag001]&paging=false", option_set()),
        format!("/api/options?fields={}&filter=optionSet.id:in:[cbOsSex0001,cbOsTriage1,cbOsDiag001]&paging=true&page=1&pageSize=5000", option()),
        format!("/api/optionGroups?fields={}&filter=optionSet.id:in:[cbOsSex0001,cbOsTriage1,cbOsDiag001]&paging=false", option_group()),
        format!("/api/trackedEntityInstanceFilters?fields=*&filter=program.id:in:[{pids}]&filter=access.read:eq:true&paging=false"),
        format!("/api/eventFilters?fields=*&filter=program:in:[{pids}]&filter=access.read:eq:true&paging=false"),
        format!("/api/programStageWorkingLists?fields=*&filter=program.id:in:[{pids}]&filter=access.read:eq:true&paging=false"),
        format!("/api/dataSets?fields={}&filter=id:in:[cbDsOpdMon1]&filter=access.data.read:eq:true&paging=false", data_set()),
        format!("/api/dataElements?fields={}&filter=id:in:[cbDeAggOpd1,cbDeAggMal1,cbDeAggRef1]&filter=access.read:eq:true&paging=false", data_element()),
        "/api/validationRules?dataSet=cbDsOpdMon1&fields=id&paging=false".into(),
        format!("/api/validationRules?fields={}&filter=id:in:[cbVrMalOpd1]&paging=false", NAMEABLE),
        format!("/api/categoryCombos?fields={}&filter=id:in:[bjDvmb4bfuf,cbComboSex1]&paging=false", category_combo()),
        format!("/api/categories?fields={}&filter=id:in:[GLevLNI9wkl,cbCatSex001]&paging=false", category()),
        format!("/api/categoryOptions?fields={}&filter=categories.id:in:[GLevLNI9wkl,cbCatSex001]&filter=access.data.read:eq:true&paging=false", category_option()),
        "/api/categoryOptions/orgUnits?categoryOptions=xYerKDKCefk,cbOptFemale,cbOptMale01".into(),
        format!("/api/programIndicators?fields={}&filter=displayInForm:eq:true&filter=program.id:in:[{pids}]&paging=false", NAMEABLE),
        format!("/api/programIndicators?fields={}&filter=id:in:[cbPiAvgTemp]&paging=false", NAMEABLE),
        format!("/api/indicators?fields={},indicatorType[id],numerator,denominator&filter=id:in:[cbIndMalShr]&paging=false", NAMEABLE),
        format!("/api/indicatorTypes?fields={},number,factor&filter=id:in:[cbIndTypPct]&paging=false", IDENT),
        format!("/api/legendSets?fields={},symbolizer,legends[{},startValue,endValue,color]&filter=id:in:[cbLegTemp01]&paging=false", IDENT, IDENT),
        "/api/icons?fields=key,fileResource[id],href&keys=outpatient_positive&type=CUSTOM&paging=false".into(),
        "/api/externalMapLayers?fields=*&filter=mapLayerPosition:eq:BASEMAP&paging=false".into(),
    ];
    v.shrink_to_fit();
    v
}
