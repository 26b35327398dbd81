//! Counting a payload's objects before it is parsed: a request's cost must be bounded before
//! the box builds it in memory (300,000 empty `{}` fit in 900 KB of JSON and cost hundreds of MB
//! as structs). The count walks the JSON once and allocates nothing per object.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// How many elements the lists named `lists` hold in `json`, at any depth (a tracker payload
/// nests events in enrollments in tracked entities). A body that is not JSON counts as 0: the
/// parse that follows reports it.
pub fn objects(json: &[u8], lists: &[&str]) -> usize {
    let mut de = serde_json::Deserializer::from_slice(json);
    let mut n = 0;
    let _ = Counter(&mut n, lists).deserialize(&mut de);
    n
}

/// Counts the elements of the named lists inside one JSON value.
struct Counter<'a, 'l>(&'a mut usize, &'l [&'l str]);

impl<'de> DeserializeSeed<'de> for Counter<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Counter<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a tracker payload")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if self.1.contains(&key.as_ref()) {
                map.next_value_seed(List(&mut *self.0, self.1))?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
}

/// A list of objects: each element counts one, and is searched for nested lists.
struct List<'a, 'l>(&'a mut usize, &'l [&'l str]);

impl<'de> DeserializeSeed<'de> for List<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for List<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of tracker objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        loop {
            *self.0 += 1;
            if seq
                .next_element_seed(Counter(&mut *self.0, self.1))?
                .is_none()
            {
                *self.0 -= 1;
                return Ok(());
            }
        }
    }

    // Anything else where a list belongs is for the parse to refuse; it counts nothing.
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        Counter(self.0, self.1).visit_map(map)
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LISTS: &[&str] = &[
        "trackedEntities",
        "enrollments",
        "events",
        "notes",
        "attributes",
        "dataValues",
    ];
    fn objects(json: &[u8]) -> usize {
        super::objects(json, LISTS)
    }

    #[test]
    fn counts_flat_and_nested_objects_and_their_values() {
        assert_eq!(objects(br#"{"events": [{}, {}, {}]}"#), 3);
        let nested = br#"{"trackedEntities": [{"trackedEntity": "a",
            "attributes": [{"attribute": "x", "value": "1"}],
            "enrollments": [{"events": [{"dataValues": [{}, {}], "notes": [{}]}]}]}]}"#;
        // 1 entity + 1 attribute + 1 enrollment + 1 event + 2 data values + 1 note.
        assert_eq!(objects(nested), 7);
        assert_eq!(objects(b"not json"), 0);
        assert_eq!(objects(br#"{"events": "nonsense", "other": [1, 2]}"#), 0);
        let many = format!("{{\"events\": [{}]}}", vec!["{}"; 300_000].join(","));
        assert_eq!(objects(many.as_bytes()), 300_000);
    }
}
