//! What the metadata says about aggregate data entry: a data set's elements, period type,
//! attribute combo, org units and its locks (`openFuturePeriods`, `expiryDays`,
//! `dataInputPeriods`, approval workflow), plus category option combo lookups. The same rules
//! the SDK applies on the tablet (`DataSetInstanceServiceImpl`) and DHIS2 on import.

use std::collections::{HashMap, HashSet};

use clinicbox_dhis2::aggregate::ConflictCode;
use clinicbox_dhis2::{Dhis2Timestamp, Period, PeriodType};
use clinicbox_web::AuthUser;
use clinicbox_web::snapshot::{Snapshot, ref_ids};
use serde_json::{Map, Value};

use crate::periods::{self, Now};

/// The authority that lets a user write data after `expiryDays` (DHIS2 `F_EDIT_EXPIRED`).
pub const F_EDIT_EXPIRED: &str = "F_EDIT_EXPIRED";

/// One `dataInputPeriods` entry.
#[derive(Debug, Clone)]
pub struct InputPeriod {
    pub period: String,
    pub opening_ms: Option<i64>,
    pub closing_ms: Option<i64>,
}

/// A data set as the aggregate rules need it.
#[derive(Debug, Clone)]
pub struct DataSetRules {
    pub id: String,
    pub period_type: Option<PeriodType>,
    pub open_future_periods: i32,
    /// 0 = never expires.
    pub expiry_days: f64,
    pub input_periods: Vec<InputPeriod>,
    pub workflow: Option<String>,
    /// The attribute category combo (`categoryCombo` of the data set).
    pub attribute_combo: String,
    /// Data element → category combo override from `dataSetElements`.
    pub elements: HashMap<String, Option<String>>,
    pub org_units: HashSet<String>,
}

/// A lock that stops data entry for a period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lock {
    /// After `openFuturePeriods` (E7641); holds the latest open period.
    Future(String),
    /// Past `expiryDays` (E7640).
    Expired,
    /// Not in an open `dataInputPeriods` window (E7643).
    InputClosed,
}

impl Lock {
    pub fn code(&self) -> ConflictCode {
        match self {
            Lock::Future(_) => ConflictCode::E7641,
            Lock::Expired => ConflictCode::E7640,
            Lock::InputClosed => ConflictCode::E7643,
        }
    }
}

fn num(obj: &Map<String, Value>, key: &str) -> Option<f64> {
    match obj.get(key)? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn ref_id<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    obj.get(key)?.get("id")?.as_str()
}

impl DataSetRules {
    /// Reads data set `id` from the snapshot.
    pub fn load(snap: &Snapshot, id: &str, now: &Now, default_combo: &str) -> Option<Self> {
        let ds = snap.get("dataSets", id)?;
        let period_type = ds
            .get("periodType")
            .and_then(Value::as_str)
            .and_then(PeriodType::from_name);
        let elements = match ds.get("dataSetElements") {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|e| {
                    let e = e.as_object()?;
                    let de = ref_id(e, "dataElement")?.to_string();
                    Some((de, ref_id(e, "categoryCombo").map(str::to_string)))
                })
                .collect(),
            _ => HashMap::new(),
        };
        let stamp = |v: Option<&Value>| {
            let s = v?.as_str()?;
            Dhis2Timestamp::parse_lenient(s)
                .ok()?
                .to_epoch_ms(&now.zone)
                .ok()
        };
        let input_periods = match ds.get("dataInputPeriods") {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|p| {
                    let p = p.as_object()?;
                    Some(InputPeriod {
                        period: ref_id(p, "period")
                            .or_else(|| p.get("period")?.as_str())?
                            .to_string(),
                        opening_ms: stamp(p.get("openingDate")),
                        closing_ms: stamp(p.get("closingDate")),
                    })
                })
                .collect(),
            _ => Vec::new(),
        };
        Some(DataSetRules {
            id: id.to_string(),
            period_type,
            open_future_periods: num(ds, "openFuturePeriods").map_or(0, |n| n as i32),
            expiry_days: num(ds, "expiryDays").unwrap_or(0.0).max(0.0),
            input_periods,
            workflow: ref_id(ds, "workflow").map(str::to_string),
            attribute_combo: ref_id(ds, "categoryCombo")
                .unwrap_or(default_combo)
                .to_string(),
            elements,
            org_units: ref_ids(ds.get("organisationUnits")).into_iter().collect(),
        })
    }

    /// The latest period open for entry: the current one shifted by `openFuturePeriods - 1`
    /// (0 means the current period is not open yet, as in DHIS2 and the SDK).
    pub fn latest_open_period(&self, now: &Now) -> Option<Period> {
        let current = now.current(self.period_type?)?;
        periods::offset(&current, self.open_future_periods - 1)
    }

    /// Why `period` is locked for `user` now, if it is.
    pub fn lock(&self, period: &Period, now: &Now, user: &AuthUser) -> Option<Lock> {
        if self.expiry_days > 0.0 && !user.has_authority(F_EDIT_EXPIRED) {
            if let Some(end) = now.midnight_ms(period.end_date()) {
                let deadline = end.saturating_add((self.expiry_days * 86_400_000.0) as i64);
                if i64::try_from(now.ms).unwrap_or(i64::MAX) > deadline {
                    return Some(Lock::Expired);
                }
            }
        }
        if let Some(latest) = self.latest_open_period(now) {
            if period.start_date() > latest.end_date() {
                return Some(Lock::Future(latest.id().to_string()));
            }
        }
        if !self.input_periods.is_empty() {
            let now_ms = i64::try_from(now.ms).unwrap_or(i64::MAX);
            let open = self.input_periods.iter().any(|p| {
                p.period == period.id()
                    && p.opening_ms.is_none_or(|o| now_ms >= o)
                    && p.closing_ms.is_none_or(|c| now_ms <= c)
            });
            if !open {
                return Some(Lock::InputClosed);
            }
        }
        None
    }
}

/// Category lookups shared by every check of one request.
pub struct Categories<'a> {
    snap: &'a Snapshot,
    pub default_combo: String,
    pub default_coc: String,
    combo_cocs: HashMap<String, HashSet<String>>,
}

impl<'a> Categories<'a> {
    pub fn new(snap: &'a Snapshot) -> Categories<'a> {
        let default_combo = snap
            .objects("categoryCombos")
            .find(|(_, c)| c.get("isDefault").and_then(Value::as_bool) == Some(true))
            .map(|(id, _)| id.clone())
            .unwrap_or_default();
        let default_coc = snap
            .objects("categoryOptionCombos")
            .find(|(_, c)| ref_id(c, "categoryCombo") == Some(default_combo.as_str()))
            .map(|(id, _)| id.clone())
            .unwrap_or_default();
        Categories {
            snap,
            default_combo,
            default_coc,
            combo_cocs: HashMap::new(),
        }
    }

    pub fn exists(&self, coc: &str) -> bool {
        self.snap.contains("categoryOptionCombos", coc)
    }

    /// Whether `coc` belongs to category combo `combo`.
    pub fn in_combo(&mut self, combo: &str, coc: &str) -> bool {
        let snap = self.snap;
        self.combo_cocs
            .entry(combo.to_string())
            .or_insert_with(|| {
                snap.objects("categoryOptionCombos")
                    .filter(|(_, c)| ref_id(c, "categoryCombo") == Some(combo))
                    .map(|(id, _)| id.clone())
                    .collect()
            })
            .contains(coc)
    }

    /// The category options of `coc`.
    pub fn options(&self, coc: &str) -> Vec<String> {
        self.snap
            .get("categoryOptionCombos", coc)
            .map(|c| ref_ids(c.get("categoryOptions")))
            .unwrap_or_default()
    }

    /// The combo in `combo` whose options are exactly `options` (DELETE's `cc` + `cp`).
    pub fn find(&mut self, combo: &str, options: &[String]) -> Option<String> {
        let wanted: HashSet<&str> = options.iter().map(String::as_str).collect();
        let ids: Vec<String> = self
            .snap
            .objects("categoryOptionCombos")
            .filter(|(_, c)| ref_id(c, "categoryCombo") == Some(combo))
            .map(|(id, _)| id.clone())
            .collect();
        ids.into_iter().find(|id| {
            let opts = self.options(id);
            opts.len() == wanted.len() && opts.iter().all(|o| wanted.contains(o.as_str()))
        })
    }

    /// The first category option of `coc` the user may not write data for. Options without
    /// any sharing in the package are open (a package from national always carries sharing).
    pub fn unwritable_option(&self, coc: &str, user: &AuthUser) -> Option<String> {
        self.options(coc).into_iter().find(|o| {
            self.snap.get("categoryOptions", o).is_some_and(|obj| {
                (obj.contains_key("sharing") || obj.contains_key("publicAccess"))
                    && !user.access_to(obj).data.write
            })
        })
    }

    /// A category option date or org-unit restriction of `aoc` that excludes `period`/`ou`.
    pub fn aoc_restriction(
        &self,
        aoc: &str,
        period: &Period,
        ou_path: &str,
    ) -> Option<ConflictCode> {
        for o in self.options(aoc) {
            let Some(obj) = self.snap.get("categoryOptions", &o) else {
                continue;
            };
            let date = |k: &str| {
                let s = obj.get(k)?.as_str()?;
                Some(Dhis2Timestamp::parse_lenient(s).ok()?.datetime().date())
            };
            if date("startDate").is_some_and(|s| s > period.end_date())
                || date("endDate").is_some_and(|e| e < period.start_date())
            {
                return Some(ConflictCode::E7638);
            }
            let ous = ref_ids(obj.get("organisationUnits"));
            if !ous.is_empty()
                && !ous.iter().any(|u| {
                    self.snap
                        .org_unit_path(u)
                        .is_some_and(|p| ou_path == p || ou_path.starts_with(&format!("{p}/")))
                })
            {
                return Some(ConflictCode::E7639);
            }
        }
        None
    }
}

/// The category combo of data element `de` in data set `ds` (its override, else its own).
pub fn element_combo(
    snap: &Snapshot,
    rules: Option<&DataSetRules>,
    de: &Map<String, Value>,
    de_id: &str,
    default_combo: &str,
) -> String {
    rules
        .and_then(|r| r.elements.get(de_id).cloned().flatten())
        .or_else(|| ref_id(de, "categoryCombo").map(str::to_string))
        .filter(|c| snap.contains("categoryCombos", c))
        .unwrap_or_else(|| default_combo.to_string())
}

/// Option codes of an option set.
pub fn option_codes(snap: &Snapshot, option_set: &str) -> HashSet<String> {
    snap.get("optionSets", option_set)
        .map(|os| ref_ids(os.get("options")))
        .unwrap_or_default()
        .iter()
        .filter_map(|o| {
            snap.get("options", o)?
                .get("code")?
                .as_str()
                .map(str::to_string)
        })
        .collect()
}

/// Org units at or below `roots` (by path), for `children=true` and `multiOu`.
pub fn with_descendants(snap: &Snapshot, roots: &[String]) -> HashSet<String> {
    let paths: Vec<String> = roots
        .iter()
        .filter_map(|r| snap.org_unit_path(r).map(str::to_string))
        .collect();
    let mut out: HashSet<String> = roots.iter().cloned().collect();
    for (id, ou) in snap.objects("organisationUnits") {
        if let Some(p) = ou.get("path").and_then(Value::as_str) {
            if paths.iter().any(|r| p.starts_with(&format!("{r}/"))) {
                out.insert(id.clone());
            }
        }
    }
    out
}

/// Data sets in `snap` containing data element `de` and assigned to org unit `ou`.
pub fn data_sets_for(snap: &Snapshot, de: &str, ou: &str) -> Vec<String> {
    let mut out: Vec<String> = snap
        .data_sets_of_org_unit(ou)
        .iter()
        .filter(|ds| {
            snap.get("dataSets", ds)
                .is_some_and(|d| match d.get("dataSetElements") {
                    Some(Value::Array(items)) => items.iter().any(|e| {
                        e.get("dataElement")
                            .and_then(|x| x.get("id"))
                            .and_then(Value::as_str)
                            == Some(de)
                    }),
                    _ => false,
                })
        })
        .cloned()
        .collect();
    out.sort();
    out
}
