//! The DHIS2 metadata types the box stores and serves: collection keys (as in `/api/metadata`
//! and as list keys of `/api/<type>`), Java klass names (as in import reports), and which
//! properties reference which other types. Facts about the format only; checking and serving
//! live in `clinicbox-api`.

/// Whether a reference property holds one `{id}` or an array of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cardinality {
    One,
    Many,
}

/// A reference from a property to objects of another metadata type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reference {
    /// Dotted path from the object: `categoryCombo`, or `programStageDataElements.dataElement`
    /// (through an embedded array).
    pub path: &'static str,
    /// Collection key of the referenced type.
    pub target: &'static str,
    pub cardinality: Cardinality,
}

/// One metadata type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schema {
    /// Collection key and endpoint name, e.g. `programStages`.
    pub plural: &'static str,
    /// Singular property name, e.g. `programStage`.
    pub singular: &'static str,
    /// DHIS2 Java class, e.g. `org.hisp.dhis.program.ProgramStage`.
    pub klass: &'static str,
    /// Has `shortName`/`description` (DHIS2 "nameable").
    pub nameable: bool,
    /// Carries `sharing` (DHIS2 metadata sharing).
    pub shareable: bool,
    /// Sharing includes data read/write (programs, stages, data sets, …).
    pub data_shareable: bool,
    pub references: &'static [Reference],
}

const fn one(path: &'static str, target: &'static str) -> Reference {
    Reference {
        path,
        target,
        cardinality: Cardinality::One,
    }
}

const fn many(path: &'static str, target: &'static str) -> Reference {
    Reference {
        path,
        target,
        cardinality: Cardinality::Many,
    }
}

macro_rules! schema {
    ($plural:literal, $singular:literal, $klass:literal, $nameable:expr, $share:expr, $data:expr, [$($r:expr),* $(,)?]) => {
        Schema {
            plural: $plural,
            singular: $singular,
            klass: $klass,
            nameable: $nameable,
            shareable: $share,
            data_shareable: $data,
            references: &[$($r),*],
        }
    };
}

/// Every supported type, in dependency order (a type comes after the types it needs), which is
/// also the order of `typeReports` in an import report.
pub static SCHEMAS: &[Schema] = &[
    schema!(
        "attributes",
        "attribute",
        "org.hisp.dhis.attribute.Attribute",
        false,
        true,
        false,
        [one("optionSet", "optionSets")]
    ),
    schema!(
        "constants",
        "constant",
        "org.hisp.dhis.constant.Constant",
        true,
        true,
        false,
        []
    ),
    schema!(
        "userRoles",
        "userRole",
        "org.hisp.dhis.user.UserRole",
        false,
        true,
        false,
        []
    ),
    schema!(
        "organisationUnitLevels",
        "organisationUnitLevel",
        "org.hisp.dhis.organisationunit.OrganisationUnitLevel",
        false,
        false,
        false,
        []
    ),
    schema!(
        "organisationUnits",
        "organisationUnit",
        "org.hisp.dhis.organisationunit.OrganisationUnit",
        true,
        false,
        false,
        [one("parent", "organisationUnits")]
    ),
    schema!(
        "organisationUnitGroups",
        "organisationUnitGroup",
        "org.hisp.dhis.organisationunit.OrganisationUnitGroup",
        true,
        true,
        false,
        [many("organisationUnits", "organisationUnits")]
    ),
    schema!(
        "organisationUnitGroupSets",
        "organisationUnitGroupSet",
        "org.hisp.dhis.organisationunit.OrganisationUnitGroupSet",
        true,
        true,
        false,
        [many("organisationUnitGroups", "organisationUnitGroups")]
    ),
    schema!(
        "userGroups",
        "userGroup",
        "org.hisp.dhis.user.UserGroup",
        false,
        true,
        false,
        []
    ),
    schema!(
        "users",
        "user",
        "org.hisp.dhis.user.User",
        false,
        false,
        false,
        [
            many("userRoles", "userRoles"),
            many("userGroups", "userGroups"),
            many("organisationUnits", "organisationUnits"),
            many("teiSearchOrganisationUnits", "organisationUnits"),
            many("dataViewOrganisationUnits", "organisationUnits"),
        ]
    ),
    schema!(
        "legendSets",
        "legendSet",
        "org.hisp.dhis.legend.LegendSet",
        false,
        true,
        false,
        []
    ),
    schema!(
        "options",
        "option",
        "org.hisp.dhis.option.Option",
        false,
        false,
        false,
        [one("optionSet", "optionSets")]
    ),
    schema!(
        "optionSets",
        "optionSet",
        "org.hisp.dhis.option.OptionSet",
        false,
        true,
        false,
        [many("options", "options")]
    ),
    schema!(
        "optionGroups",
        "optionGroup",
        "org.hisp.dhis.option.OptionGroup",
        true,
        true,
        false,
        [one("optionSet", "optionSets"), many("options", "options")]
    ),
    schema!(
        "categoryOptions",
        "categoryOption",
        "org.hisp.dhis.category.CategoryOption",
        true,
        true,
        true,
        [many("organisationUnits", "organisationUnits")]
    ),
    schema!(
        "categories",
        "category",
        "org.hisp.dhis.category.Category",
        true,
        true,
        false,
        [many("categoryOptions", "categoryOptions")]
    ),
    schema!(
        "categoryCombos",
        "categoryCombo",
        "org.hisp.dhis.category.CategoryCombo",
        false,
        true,
        false,
        [many("categories", "categories")]
    ),
    schema!(
        "categoryOptionCombos",
        "categoryOptionCombo",
        "org.hisp.dhis.category.CategoryOptionCombo",
        true,
        false,
        false,
        [
            one("categoryCombo", "categoryCombos"),
            many("categoryOptions", "categoryOptions"),
        ]
    ),
    schema!(
        "categoryOptionGroups",
        "categoryOptionGroup",
        "org.hisp.dhis.category.CategoryOptionGroup",
        true,
        true,
        true,
        [many("categoryOptions", "categoryOptions")]
    ),
    schema!(
        "dataElements",
        "dataElement",
        "org.hisp.dhis.dataelement.DataElement",
        true,
        true,
        false,
        [
            one("categoryCombo", "categoryCombos"),
            one("optionSet", "optionSets"),
            one("commentOptionSet", "optionSets"),
            many("legendSets", "legendSets"),
        ]
    ),
    schema!(
        "dataElementGroups",
        "dataElementGroup",
        "org.hisp.dhis.dataelement.DataElementGroup",
        true,
        true,
        false,
        [many("dataElements", "dataElements")]
    ),
    schema!(
        "indicatorTypes",
        "indicatorType",
        "org.hisp.dhis.indicator.IndicatorType",
        false,
        false,
        false,
        []
    ),
    schema!(
        "indicators",
        "indicator",
        "org.hisp.dhis.indicator.Indicator",
        true,
        true,
        false,
        [
            one("indicatorType", "indicatorTypes"),
            many("legendSets", "legendSets"),
        ]
    ),
    schema!(
        "dataApprovalLevels",
        "dataApprovalLevel",
        "org.hisp.dhis.dataapproval.DataApprovalLevel",
        false,
        true,
        false,
        []
    ),
    schema!(
        "dataApprovalWorkflows",
        "dataApprovalWorkflow",
        "org.hisp.dhis.dataapproval.DataApprovalWorkflow",
        false,
        true,
        true,
        [
            many("dataApprovalLevels", "dataApprovalLevels"),
            one("categoryCombo", "categoryCombos"),
        ]
    ),
    schema!(
        "dataSets",
        "dataSet",
        "org.hisp.dhis.dataset.DataSet",
        true,
        true,
        true,
        [
            one("categoryCombo", "categoryCombos"),
            many("organisationUnits", "organisationUnits"),
            one("workflow", "dataApprovalWorkflows"),
            one("dataSetElements.dataElement", "dataElements"),
            one("dataSetElements.categoryCombo", "categoryCombos"),
            many("indicators", "indicators"),
            many("legendSets", "legendSets"),
        ]
    ),
    schema!(
        "sections",
        "section",
        "org.hisp.dhis.dataset.Section",
        false,
        false,
        false,
        [
            one("dataSet", "dataSets"),
            many("dataElements", "dataElements"),
            many("indicators", "indicators"),
        ]
    ),
    schema!(
        "validationRules",
        "validationRule",
        "org.hisp.dhis.validation.ValidationRule",
        true,
        true,
        false,
        []
    ),
    schema!(
        "trackedEntityAttributes",
        "trackedEntityAttribute",
        "org.hisp.dhis.trackedentity.TrackedEntityAttribute",
        true,
        true,
        false,
        [
            one("optionSet", "optionSets"),
            many("legendSets", "legendSets"),
        ]
    ),
    schema!(
        "trackedEntityTypes",
        "trackedEntityType",
        "org.hisp.dhis.trackedentity.TrackedEntityType",
        true,
        true,
        true,
        [one(
            "trackedEntityTypeAttributes.trackedEntityAttribute",
            "trackedEntityAttributes"
        ),]
    ),
    schema!(
        "programs",
        "program",
        "org.hisp.dhis.program.Program",
        true,
        true,
        true,
        [
            one("trackedEntityType", "trackedEntityTypes"),
            one("categoryCombo", "categoryCombos"),
            many("organisationUnits", "organisationUnits"),
            many("programStages", "programStages"),
            one(
                "programTrackedEntityAttributes.trackedEntityAttribute",
                "trackedEntityAttributes"
            ),
            many("programRuleVariables", "programRuleVariables"),
            many("programSections", "programSections"),
            many("programIndicators", "programIndicators"),
            one("relatedProgram", "programs"),
        ]
    ),
    schema!(
        "programStages",
        "programStage",
        "org.hisp.dhis.program.ProgramStage",
        true,
        true,
        true,
        [
            one("program", "programs"),
            one("programStageDataElements.dataElement", "dataElements"),
            many("programStageSections", "programStageSections"),
        ]
    ),
    schema!(
        "programStageSections",
        "programStageSection",
        "org.hisp.dhis.program.ProgramStageSection",
        false,
        false,
        false,
        [
            one("programStage", "programStages"),
            many("dataElements", "dataElements"),
        ]
    ),
    schema!(
        "programSections",
        "programSection",
        "org.hisp.dhis.program.ProgramSection",
        false,
        false,
        false,
        [
            one("program", "programs"),
            many("trackedEntityAttributes", "trackedEntityAttributes"),
        ]
    ),
    schema!(
        "programIndicators",
        "programIndicator",
        "org.hisp.dhis.program.ProgramIndicator",
        true,
        true,
        false,
        [one("program", "programs"), many("legendSets", "legendSets"),]
    ),
    schema!(
        "programRuleVariables",
        "programRuleVariable",
        "org.hisp.dhis.programrule.ProgramRuleVariable",
        false,
        false,
        false,
        [
            one("program", "programs"),
            one("programStage", "programStages"),
            one("dataElement", "dataElements"),
            one("trackedEntityAttribute", "trackedEntityAttributes"),
        ]
    ),
    schema!(
        "programRuleActions",
        "programRuleAction",
        "org.hisp.dhis.programrule.ProgramRuleAction",
        false,
        false,
        false,
        [
            one("programRule", "programRules"),
            one("dataElement", "dataElements"),
            one("trackedEntityAttribute", "trackedEntityAttributes"),
            one("programStage", "programStages"),
            one("programStageSection", "programStageSections"),
            one("programIndicator", "programIndicators"),
            one("option", "options"),
            one("optionGroup", "optionGroups"),
        ]
    ),
    schema!(
        "programRules",
        "programRule",
        "org.hisp.dhis.programrule.ProgramRule",
        false,
        false,
        false,
        [
            one("program", "programs"),
            one("programStage", "programStages"),
            many("programRuleActions", "programRuleActions"),
        ]
    ),
    schema!(
        "relationshipTypes",
        "relationshipType",
        "org.hisp.dhis.relationship.RelationshipType",
        false,
        true,
        true,
        [
            one("fromConstraint.trackedEntityType", "trackedEntityTypes"),
            one("fromConstraint.program", "programs"),
            one("fromConstraint.programStage", "programStages"),
            one("toConstraint.trackedEntityType", "trackedEntityTypes"),
            one("toConstraint.program", "programs"),
            one("toConstraint.programStage", "programStages"),
        ]
    ),
    schema!(
        "trackedEntityInstanceFilters",
        "trackedEntityInstanceFilter",
        "org.hisp.dhis.trackedentityfilter.TrackedEntityInstanceFilter",
        false,
        true,
        false,
        [one("program", "programs")]
    ),
    // `program`/`programStage` of an event filter are plain UID strings, not `{id}` objects.
    schema!(
        "eventFilters",
        "eventFilter",
        "org.hisp.dhis.programstagefilter.EventFilter",
        false,
        true,
        false,
        []
    ),
    schema!(
        "programStageWorkingLists",
        "programStageWorkingList",
        "org.hisp.dhis.programstageworkinglist.ProgramStageWorkingList",
        false,
        true,
        false,
        [
            one("program", "programs"),
            one("programStage", "programStages"),
        ]
    ),
    schema!(
        "expressionDimensionItems",
        "expressionDimensionItem",
        "org.hisp.dhis.expressiondimensionitem.ExpressionDimensionItem",
        true,
        true,
        false,
        []
    ),
    schema!(
        "visualizations",
        "visualization",
        "org.hisp.dhis.visualization.Visualization",
        false,
        true,
        false,
        []
    ),
    schema!(
        "eventVisualizations",
        "eventVisualization",
        "org.hisp.dhis.eventvisualization.EventVisualization",
        false,
        true,
        false,
        []
    ),
    schema!(
        "externalMapLayers",
        "externalMapLayer",
        "org.hisp.dhis.mapping.ExternalMapLayer",
        false,
        true,
        false,
        []
    ),
];

/// Looks a type up by its collection key (`programs`).
pub fn by_plural(plural: &str) -> Option<&'static Schema> {
    SCHEMAS.iter().find(|s| s.plural == plural)
}

/// Looks a type up by its singular name (`program`).
pub fn by_singular(singular: &str) -> Option<&'static Schema> {
    SCHEMAS.iter().find(|s| s.singular == singular)
}

/// The type a property name usually refers to when no schema says otherwise, used to expand
/// `{id}` references in `fields` (e.g. `parent`, `ancestors`, `children` → org units).
pub fn target_of_property(property: &str) -> Option<&'static str> {
    let t = match property {
        "parent"
        | "ancestors"
        | "children"
        | "teiSearchOrganisationUnits"
        | "dataViewOrganisationUnits"
        | "organisationUnit"
        | "orgUnit" => "organisationUnits",
        "createdBy" | "lastUpdatedBy" | "user" | "users" => "users",
        "workflow" => "dataApprovalWorkflows",
        "commentOptionSet" => "optionSets",
        "relatedProgram" => "programs",
        "legendSet" => "legendSets",
        "attribute" => "attributes",
        _ => {
            if let Some(s) = by_plural(property) {
                s.plural
            } else {
                by_singular(property)?.plural
            }
        }
    };
    Some(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reference_targets_a_known_type() {
        for s in SCHEMAS {
            for r in s.references {
                assert!(by_plural(r.target).is_some(), "{}.{}", s.plural, r.path);
            }
        }
    }

    #[test]
    fn names_are_unique_and_klasses_qualified() {
        let mut seen = std::collections::HashSet::new();
        for s in SCHEMAS {
            assert!(seen.insert(s.plural), "{}", s.plural);
            assert!(seen.insert(s.singular), "{}", s.singular);
            assert!(s.klass.starts_with("org.hisp.dhis."), "{}", s.klass);
        }
    }

    #[test]
    fn infers_reference_targets() {
        assert_eq!(target_of_property("dataElement"), Some("dataElements"));
        assert_eq!(target_of_property("ancestors"), Some("organisationUnits"));
        assert_eq!(
            target_of_property("categoryOptionCombos"),
            Some("categoryOptionCombos")
        );
        assert_eq!(target_of_property("displayName"), None);
    }

    #[test]
    fn the_sdk_download_list_is_covered() {
        for t in [
            "constants",
            "categoryCombos",
            "organisationUnitLevels",
            "organisationUnits",
            "programs",
            "programStages",
            "trackedEntityTypes",
            "trackedEntityAttributes",
            "programRules",
            "relationshipTypes",
            "optionSets",
            "options",
            "optionGroups",
            "trackedEntityInstanceFilters",
            "eventFilters",
            "programStageWorkingLists",
            "dataSets",
            "dataElements",
            "validationRules",
            "categories",
            "categoryOptions",
            "programIndicators",
            "indicators",
            "indicatorTypes",
            "legendSets",
            "attributes",
            "expressionDimensionItems",
            "visualizations",
            "eventVisualizations",
            "externalMapLayers",
        ] {
            assert!(by_plural(t).is_some(), "{t}");
        }
    }
}
