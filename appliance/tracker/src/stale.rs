//! Stored values that refer to metadata national removed or changed: an option no longer in
//! its set, a data element no longer in its stage. The box keeps them (nothing is deleted
//! because metadata changed) and still sends them; this counts them for the admin page after
//! each metadata change.

use std::collections::{HashMap, HashSet};

use clinicbox_store::{Collection, StoreError};
use clinicbox_web::Snapshot;
use serde_json::Value;

use crate::Tracker;
use crate::model::{StoredEvent, StoredTrackedEntity};

fn ref_id<'a>(o: &'a serde_json::Map<String, Value>, field: &str) -> Option<&'a str> {
    o.get(field)?.get("id")?.as_str()
}

/// What the current metadata allows, for checking stored values.
struct Allowed {
    /// Option codes by option set.
    codes: HashMap<String, HashSet<String>>,
    /// The option set of each data element and attribute that has one.
    option_set: HashMap<String, String>,
    /// The data elements of each stage.
    stage_elements: HashMap<String, HashSet<String>>,
}

impl Allowed {
    fn new(snap: &Snapshot) -> Allowed {
        let mut codes: HashMap<String, HashSet<String>> = HashMap::new();
        for (_, o) in snap.objects("options") {
            if let (Some(set), Some(code)) = (
                ref_id(o, "optionSet"),
                o.get("code").and_then(Value::as_str),
            ) {
                codes
                    .entry(set.to_string())
                    .or_default()
                    .insert(code.to_string());
            }
        }
        let mut option_set = HashMap::new();
        for t in ["dataElements", "trackedEntityAttributes"] {
            for (id, o) in snap.objects(t) {
                if let Some(set) = ref_id(o, "optionSet") {
                    option_set.insert(id.to_string(), set.to_string());
                }
            }
        }
        let stage_elements = snap
            .objects("programStages")
            .map(|(id, s)| {
                let des = s
                    .get("programStageDataElements")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|p| {
                        p.get("dataElement")?
                            .get("id")?
                            .as_str()
                            .map(str::to_string)
                    })
                    .collect();
                (id.to_string(), des)
            })
            .collect();
        Allowed {
            codes,
            option_set,
            stage_elements,
        }
    }

    /// Whether `value` of `field` is still one of its set's options (true without a set).
    fn option_ok(&self, field: &str, value: &str) -> bool {
        self.option_set
            .get(field)
            .is_none_or(|set| self.codes.get(set).is_some_and(|c| c.contains(value)))
    }
}

impl Tracker {
    /// How many stored values refer to an option or a stage element the metadata no longer
    /// has.
    pub fn stale_values(&self) -> Result<u64, StoreError> {
        let snap = self.api().metadata().snapshot()?;
        let allowed = Allowed::new(&snap);
        let read = self.store().read()?;
        let mut stale = 0u64;
        for item in read.scan(Collection::EVENTS)? {
            let (_, rec) = item?;
            let Some(ev) = (!rec.deleted)
                .then(|| rec.json::<StoredEvent>().ok())
                .flatten()
            else {
                continue;
            };
            let stage = allowed.stage_elements.get(&ev.program_stage);
            for d in &ev.data_values {
                let in_stage = stage.is_none_or(|s| s.contains(&d.data_element));
                if !in_stage || !allowed.option_ok(&d.data_element, &d.value) {
                    stale += 1;
                }
            }
        }
        for item in read.scan(Collection::TRACKED_ENTITIES)? {
            let (_, rec) = item?;
            let Some(te) = (!rec.deleted)
                .then(|| rec.json::<StoredTrackedEntity>().ok())
                .flatten()
            else {
                continue;
            };
            stale += te
                .attributes
                .iter()
                .filter(|a| !allowed.option_ok(&a.attribute, &a.value))
                .count() as u64;
        }
        Ok(stale)
    }
}
