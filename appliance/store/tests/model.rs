//! Guards the store's semantics against a plain in-memory model: random sequences of puts,
//! deletes, tombstones, rejected closures and reopens must leave the store exactly equal to a
//! `BTreeMap` that applied the same accepted operations, with a change log of one entry per write.

use std::collections::BTreeMap;

use clinicbox_store::{Collection, NewKeySlot, Store, Unlock};

const COLLECTIONS: [Collection; 3] = [
    Collection::EVENTS,
    Collection::ENROLLMENTS,
    Collection::DATA_STORE,
];

#[derive(Clone, Debug, PartialEq)]
struct ModelRecord {
    body: Vec<u8>,
    deleted: bool,
}

#[derive(Clone, Debug)]
enum Op {
    Put(usize, String, Vec<u8>),
    Delete(usize, String),
    Tombstone(usize, String, Vec<u8>),
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn random_op(rng: &mut Rng) -> Op {
    let c = rng.below(3) as usize;
    let key = format!("k{:03}", rng.below(40));
    let body = format!("v{}", rng.next()).into_bytes();
    match rng.below(10) {
        0..=5 => Op::Put(c, key, body),
        6..=8 => Op::Delete(c, key),
        _ => Op::Tombstone(c, key, body),
    }
}

/// Applies `op` to the model; returns whether it counts as a write (gets a change-log entry).
fn apply_model(model: &mut BTreeMap<(usize, String), ModelRecord>, op: &Op) -> bool {
    match op {
        Op::Put(c, k, b) => {
            model.insert(
                (*c, k.clone()),
                ModelRecord {
                    body: b.clone(),
                    deleted: false,
                },
            );
            true
        }
        Op::Delete(c, k) => match model.get_mut(&(*c, k.clone())) {
            Some(r) if !r.deleted => {
                r.deleted = true;
                true
            }
            _ => false,
        },
        Op::Tombstone(c, k, b) => {
            model.insert(
                (*c, k.clone()),
                ModelRecord {
                    body: b.clone(),
                    deleted: true,
                },
            );
            true
        }
    }
}

fn check(store: &Store, model: &BTreeMap<(usize, String), ModelRecord>, writes: u64) {
    let r = store.read().expect("read");
    for (ci, c) in COLLECTIONS.iter().enumerate() {
        let got: Vec<(String, ModelRecord)> = r
            .scan(*c)
            .expect("scan")
            .map(|e| {
                let (k, rec) = e.expect("entry");
                (
                    k,
                    ModelRecord {
                        body: rec.body,
                        deleted: rec.deleted,
                    },
                )
            })
            .collect();
        let want: Vec<(String, ModelRecord)> = model
            .iter()
            .filter(|((mc, _), _)| *mc == ci)
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect();
        assert_eq!(got, want, "collection {c} differs from the model");
    }
    let log = r.changes_since(0, usize::MAX).expect("changes");
    assert_eq!(
        log.len() as u64,
        writes,
        "one change-log entry per accepted write"
    );
    assert!(
        log.windows(2)
            .all(|w| w[1].seq == w[0].seq + 1 && w[1].at_ms >= w[0].at_ms)
    );
}

#[test]
fn random_operations_match_a_btreemap_model() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let key = dir.path().join("k");
    let (mut store, _) = Store::create(
        &data,
        NewKeySlot::KeyFile {
            path: key.clone(),
            label: "m".into(),
            create: true,
        },
    )
    .expect("create");
    let mut model: BTreeMap<(usize, String), ModelRecord> = BTreeMap::new();
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let mut writes = 0u64;

    for round in 0..60 {
        // A closure of 1–8 operations, sometimes rejected after doing its writes.
        let ops: Vec<Op> = (0..1 + rng.below(8)).map(|_| random_op(&mut rng)).collect();
        let reject = rng.below(5) == 0;
        let ops2 = ops.clone();
        let result = store.write_blocking(move |ctx| {
            let mut n = 0u64;
            for op in &ops2 {
                match op {
                    Op::Put(c, k, b) => {
                        ctx.put(COLLECTIONS[*c], k, b.clone())?;
                        n += 1;
                    }
                    Op::Delete(c, k) => n += u64::from(ctx.delete(COLLECTIONS[*c], k)?),
                    Op::Tombstone(c, k, b) => {
                        ctx.put_tombstone(COLLECTIONS[*c], k, b.clone())?;
                        n += 1;
                    }
                }
            }
            if reject {
                Err(clinicbox_store::StoreError::InvalidKey(
                    "rejected on purpose".into(),
                ))
            } else {
                Ok(n)
            }
        });
        if reject {
            assert!(result.is_err());
        } else {
            result.expect("accepted write");
            // Several writes to one key inside a closure make one change-log entry.
            let mut touched = BTreeMap::new();
            for op in &ops {
                let key = match op {
                    Op::Put(c, k, _) | Op::Delete(c, k) | Op::Tombstone(c, k, _) => (*c, k.clone()),
                };
                if apply_model(&mut model, op) {
                    touched.insert(key, ());
                }
            }
            writes += touched.len() as u64;
        }
        if round % 15 == 14 {
            store.close().expect("close");
            drop(store);
            store = Store::open(&data, &Unlock::key_file(&key)).expect("reopen");
        }
        check(&store, &model, writes);
    }
}
