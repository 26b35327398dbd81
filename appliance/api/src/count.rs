//! Counting a payload's items before it is parsed: a request's cost must be bounded before the
//! box builds it in memory (300,000 empty `{}` fit in 900 KB of JSON and cost hundreds of MB as
//! structs). Every array element at any depth counts — objects, values, notes, program owners,
//! geometry coordinates — so no list a payload may carry escapes the bound. The count walks the
//! JSON once and allocates nothing per item.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// How many array elements `json` holds, at any depth. A body that is not JSON counts what was
/// read before the error: the parse that follows reports it.
pub fn items(json: &[u8]) -> usize {
    let mut de = serde_json::Deserializer::from_slice(json);
    let mut n = 0;
    let _ = Counter(&mut n).deserialize(&mut de);
    n
}

/// Counts the array elements inside one JSON value.
struct Counter<'a>(&'a mut usize);

impl<'de> DeserializeSeed<'de> for Counter<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Counter<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("JSON")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_key::<serde::de::IgnoredAny>()?.is_some() {
            map.next_value_seed(Counter(&mut *self.0))?;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        loop {
            *self.0 += 1;
            if seq.next_element_seed(Counter(&mut *self.0))?.is_none() {
                *self.0 -= 1;
                return Ok(());
            }
        }
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
    use super::items;

    #[test]
    fn counts_every_array_element_at_any_depth() {
        assert_eq!(items(br#"{"events": [{}, {}, {}]}"#), 3);
        let nested = br#"{"trackedEntities": [{"trackedEntity": "a",
            "attributes": [{"attribute": "x", "value": "1"}],
            "programOwners": [{}, {}],
            "geometry": {"type": "Point", "coordinates": [1.5, 2.5]},
            "enrollments": [{"events": [{"dataValues": [{}, {}], "notes": [{}]}]}]}]}"#;
        // 1 entity + 1 attribute + 2 owners + 2 coordinates + 1 enrollment + 1 event
        // + 2 data values + 1 note.
        assert_eq!(items(nested), 11);
        assert_eq!(items(b"not json"), 0);
        assert_eq!(items(br#"{"events": "nonsense"}"#), 0);
        let many = format!("{{\"events\": [{}]}}", vec!["{}"; 300_000].join(","));
        assert_eq!(items(many.as_bytes()), 300_000);
    }
}
