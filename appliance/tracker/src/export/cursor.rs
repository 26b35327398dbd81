//! Where a tablet's download stopped: the Android SDK pages through its download with
//! `page=1, 2, 3…` and nothing else changing, and without a cursor page N would walk past the
//! N−1 pages before it, making a full download cost the square of the data. A cursor says
//! where the next page starts in the catalog's creation order; it is used only while the
//! catalog is unchanged, so a page read through it is exactly the page read without it.

use std::collections::HashMap;
use std::sync::Mutex;

use clinicbox_dhis2::Uid;
use sha2::{Digest, Sha256};

/// Downloads remembered at once; an older one is forgotten (and its next page walks).
const MAX_CURSORS: usize = 64;

/// Where page `next_page` of one query starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub generation: u64,
    pub next_page: usize,
    /// The first entity of that page, in creation order (created ms, UID).
    pub from: (u64, Uid),
    /// Entities admitted before it.
    pub admitted: usize,
}

/// Which download a cursor continues: SHA-256 of the user and the query without its `page`,
/// so what is kept does not grow with the query a tablet sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CursorKey([u8; 32]);

impl CursorKey {
    pub fn new<'a>(user: &str, pairs: impl Iterator<Item = (&'a str, &'a str)>) -> CursorKey {
        let mut h = Sha256::new();
        h.update(user.as_bytes());
        for (k, v) in pairs {
            // Lengths first, so no two different queries hash the same bytes.
            for part in [k, v] {
                h.update((part.len() as u64).to_le_bytes());
                h.update(part.as_bytes());
            }
        }
        CursorKey(h.finalize().into())
    }
}

/// The cursors, by [`CursorKey`].
#[derive(Default)]
pub struct Cursors(Mutex<Kept>);

/// Each cursor with the count of `put`s when it was last put: the lowest is the least recent.
#[derive(Default)]
struct Kept {
    by_query: HashMap<CursorKey, (u64, Cursor)>,
    puts: u64,
}

impl Cursors {
    /// The cursor for page `page` of `query`, if it is still true of catalog `generation`.
    pub fn get(&self, query: &CursorKey, page: usize, generation: u64) -> Option<Cursor> {
        let kept = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let (_, c) = kept.by_query.get(query)?;
        (c.generation == generation && c.next_page == page).then_some(*c)
    }

    /// Remembers where the next page of `query` starts, forgetting the least recent cursor
    /// when there are too many.
    pub fn put(&self, query: CursorKey, cursor: Cursor) {
        let mut kept = self.0.lock().unwrap_or_else(|p| p.into_inner());
        kept.puts += 1;
        let used = kept.puts;
        let map = &mut kept.by_query;
        if map.len() >= MAX_CURSORS && !map.contains_key(&query) {
            let oldest = map.iter().min_by_key(|(_, (u, _))| *u).map(|(k, _)| *k);
            if let Some(k) = oldest {
                map.remove(&k);
            }
        }
        map.insert(query, (used, cursor));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cursor(generation: u64, next_page: usize) -> Cursor {
        let u = Uid::try_from("teCursor001").expect("uid");
        Cursor {
            generation,
            next_page,
            from: (5, u),
            admitted: 50,
        }
    }

    fn key(q: &str) -> CursorKey {
        CursorKey::new("user", [("q", q)].into_iter())
    }

    #[test]
    fn a_cursor_serves_only_its_next_page_of_an_unchanged_catalog() {
        let c = Cursors::default();
        c.put(key("q"), cursor(7, 2));
        assert_eq!(c.get(&key("q"), 2, 7), Some(cursor(7, 2)));
        assert_eq!(c.get(&key("q"), 3, 7), None, "another page");
        assert_eq!(c.get(&key("q"), 2, 8), None, "the catalog changed");
        assert_eq!(c.get(&key("other"), 2, 7), None, "another query");
        let other_user = CursorKey::new("someone", [("q", "q")].into_iter());
        assert_eq!(c.get(&other_user, 2, 7), None, "another user");
    }

    #[test]
    fn the_least_recent_cursor_is_forgotten_when_full() {
        let c = Cursors::default();
        for i in 0..MAX_CURSORS {
            c.put(key(&format!("q{i}")), cursor(1, 2));
        }
        c.put(key("q0"), cursor(1, 3));
        c.put(key("new"), cursor(1, 2));
        assert!(c.get(&key("q1"), 2, 1).is_none(), "the least recent went");
        assert!(
            c.get(&key("q0"), 3, 1).is_some(),
            "a cursor used again stays"
        );
        assert!(c.get(&key("new"), 2, 1).is_some());
    }
}
