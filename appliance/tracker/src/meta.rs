//! Reading the metadata the tracker needs from the API's snapshot: programs, stages, attributes,
//! data elements, option sets, relationship types and sharing.

use std::collections::{HashMap, HashSet};

use clinicbox_web::snapshot::ref_ids;
use clinicbox_web::{AuthUser, Snapshot};
use serde_json::{Map, Value};

type Obj = Map<String, Value>;

pub fn ref_id(v: Option<&Value>) -> Option<String> {
    v.and_then(|v| v.get("id"))
        .and_then(Value::as_str)
        .map(str::to_string)
}

pub fn str_of<'a>(o: &'a Obj, key: &str) -> Option<&'a str> {
    o.get(key).and_then(Value::as_str)
}

pub fn bool_of(o: &Obj, key: &str) -> bool {
    o.get(key).and_then(Value::as_bool).unwrap_or(false)
}

/// A program attribute or stage data element with its flags.
#[derive(Debug, Clone)]
pub struct Member {
    pub uid: String,
    pub mandatory: bool,
    pub searchable: bool,
}

/// Metadata lookups for one request, with per-request caches.
pub struct Meta<'a> {
    pub snap: &'a Snapshot,
    options: HashMap<String, HashSet<String>>,
}

impl<'a> Meta<'a> {
    pub fn new(snap: &'a Snapshot) -> Meta<'a> {
        Meta {
            snap,
            options: HashMap::new(),
        }
    }

    pub fn program(&self, uid: &str) -> Option<&'a Obj> {
        self.snap.get("programs", uid)
    }
    pub fn stage(&self, uid: &str) -> Option<&'a Obj> {
        self.snap.get("programStages", uid)
    }
    pub fn tet(&self, uid: &str) -> Option<&'a Obj> {
        self.snap.get("trackedEntityTypes", uid)
    }
    pub fn attribute(&self, uid: &str) -> Option<&'a Obj> {
        self.snap.get("trackedEntityAttributes", uid)
    }
    pub fn data_element(&self, uid: &str) -> Option<&'a Obj> {
        self.snap.get("dataElements", uid)
    }
    pub fn org_unit_exists(&self, uid: &str) -> bool {
        self.snap.contains("organisationUnits", uid)
    }
    pub fn relationship_type(&self, uid: &str) -> Option<&'a Obj> {
        self.snap.get("relationshipTypes", uid)
    }

    /// `WITH_REGISTRATION` programs are tracker programs.
    pub fn is_tracker_program(p: &Obj) -> bool {
        str_of(p, "programType") == Some("WITH_REGISTRATION")
    }

    pub fn program_tet(p: &Obj) -> Option<String> {
        ref_id(p.get("trackedEntityType"))
    }

    pub fn program_attributes(p: &Obj) -> Vec<Member> {
        members(
            p,
            "programTrackedEntityAttributes",
            "trackedEntityAttribute",
            "mandatory",
        )
    }

    pub fn tet_attributes(t: &Obj) -> Vec<Member> {
        members(
            t,
            "trackedEntityTypeAttributes",
            "trackedEntityAttribute",
            "mandatory",
        )
    }

    pub fn stage_data_elements(s: &Obj) -> Vec<Member> {
        members(s, "programStageDataElements", "dataElement", "compulsory")
    }

    pub fn program_of_stage(s: &Obj) -> Option<String> {
        ref_id(s.get("program"))
    }

    /// Whether the program is assigned to the org unit.
    pub fn program_in_org_unit(&self, program: &str, org_unit: &str) -> bool {
        self.snap
            .programs_of_org_unit(org_unit)
            .iter()
            .any(|p| p == program)
    }

    /// `OPEN`, `AUDITED`, `PROTECTED` or `CLOSED`.
    pub fn access_level(p: &Obj) -> &str {
        str_of(p, "accessLevel").unwrap_or("OPEN")
    }

    /// Codes of the options in an option set.
    pub fn option_codes(&mut self, option_set: &str) -> &HashSet<String> {
        let snap = self.snap;
        self.options
            .entry(option_set.to_string())
            .or_insert_with(|| {
                let mut codes = HashSet::new();
                if let Some(os) = snap.get("optionSets", option_set) {
                    for id in ref_ids(os.get("options")) {
                        if let Some(code) = snap.get("options", &id).and_then(|o| str_of(o, "code"))
                        {
                            codes.insert(code.to_string());
                        }
                    }
                }
                for (_, o) in snap.objects("options") {
                    if ref_id(o.get("optionSet")).as_deref() == Some(option_set) {
                        if let Some(code) = str_of(o, "code") {
                            codes.insert(code.to_string());
                        }
                    }
                }
                codes
            })
    }

    /// The default category option combo (`isDefault` or named `default`).
    pub fn default_coc(&self) -> Option<String> {
        self.snap
            .objects("categoryOptionCombos")
            .find(|(_, o)| bool_of(o, "isDefault") || str_of(o, "name") == Some("default"))
            .map(|(id, _)| id.clone())
    }

    /// Category option combos of a category combo.
    pub fn combos_of(&self, category_combo: &str) -> Vec<String> {
        let mut out = self
            .snap
            .get("categoryCombos", category_combo)
            .map(|c| ref_ids(c.get("categoryOptionCombos")))
            .unwrap_or_default();
        for (id, o) in self.snap.objects("categoryOptionCombos") {
            if ref_id(o.get("categoryCombo")).as_deref() == Some(category_combo)
                && !out.contains(id)
            {
                out.push(id.clone());
            }
        }
        out
    }
}

fn members(o: &Obj, list: &str, inner: &str, flag: &str) -> Vec<Member> {
    let Some(Value::Array(items)) = o.get(list) else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|i| {
            let uid = ref_id(i.get(inner))?;
            Some(Member {
                uid,
                mandatory: i.get(flag).and_then(Value::as_bool).unwrap_or(false),
                searchable: i
                    .get("searchable")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            })
        })
        .collect()
}

/// Data read/write rights of the user on a shareable metadata object.
pub fn data_write(user: &AuthUser, o: &Obj) -> bool {
    user.access_to(o).data.write
}

pub fn data_read(user: &AuthUser, o: &Obj) -> bool {
    user.access_to(o).data.read
}
