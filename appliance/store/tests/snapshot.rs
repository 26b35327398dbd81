//! A snapshot taken while writers keep writing is one commit of the store, whole: every write
//! acknowledged before it is in the copy, nothing after its sequence number is, and the copy
//! opens with the same key.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use clinicbox_store::{Collection, NewKeySlot, Store, Unlock};

fn body(n: u64) -> Vec<u8> {
    format!("{{\"n\":{n}}}").into_bytes()
}

#[test]
fn a_snapshot_under_concurrent_writes_is_one_whole_commit_and_opens_with_the_same_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("store.key");
    let (store, _) = Store::create(
        &dir.path().join("data"),
        NewKeySlot::KeyFile {
            path: key.clone(),
            label: "test".into(),
            create: true,
        },
    )
    .expect("create");
    for n in 0..500u64 {
        let c = if n % 2 == 0 {
            Collection::EVENTS
        } else {
            Collection::TRACKED_ENTITIES
        };
        store
            .write_blocking(move |ctx| ctx.put(c, &format!("k{n:08}"), body(n)))
            .expect("write");
    }
    // Writers go on while the snapshot is taken; `acked` is the highest write acknowledged.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..2u64)
        .map(|w| {
            let (store, stop, acked) = (store.clone(), stop.clone(), acked.clone());
            std::thread::spawn(move || {
                for i in 0..2_000u64 {
                    if stop.load(Ordering::Acquire) {
                        break;
                    }
                    let n = 1_000 + w * 10_000 + i;
                    let c = store
                        .write_blocking(move |ctx| {
                            ctx.put(Collection::EVENTS, &format!("k{n:08}"), body(n))
                        })
                        .expect("write");
                    acked.fetch_max(c.commit.last_seq, Ordering::AcqRel);
                }
            })
        })
        .collect();
    while acked.load(Ordering::Acquire) < 600 {
        std::thread::yield_now();
    }
    let before = acked.load(Ordering::Acquire);
    let copy_dir = dir.path().join("copy");
    std::fs::create_dir(&copy_dir).expect("mkdir");
    let info = store
        .snapshot_to(&copy_dir.join(clinicbox_store::DB_FILE))
        .expect("snapshot");
    stop.store(true, Ordering::Release);
    for w in writers {
        w.join().expect("writer");
    }
    assert!(info.last_seq >= before, "{info:?} < {before}");
    assert!(!copy_dir.join("store.redb.partial").exists());

    let copy = Store::open(&copy_dir, &Unlock::key_file(&key)).expect("the copy opens");
    let (orig, snap) = (store.read().expect("read"), copy.read().expect("read"));
    assert_eq!(snap.last_seq().expect("seq"), info.last_seq);
    for c in [Collection::EVENTS, Collection::TRACKED_ENTITIES] {
        for item in orig.scan(c).expect("scan") {
            let (k, rec) = item.expect("record");
            let copied = snap.get(c, &k).expect("get");
            if rec.seq <= info.last_seq {
                assert_eq!(copied.map(|r| r.body), Some(rec.body), "{k} missing");
            } else {
                assert!(
                    copied.is_none(),
                    "{k} (seq {}) is after the snapshot",
                    rec.seq
                );
            }
        }
    }
    // The change log came along: the uplink resumes from the copy's positions.
    let changes = snap.changes_since(0, 100_000).expect("changes");
    assert_eq!(changes.len() as u64, info.last_seq);
    copy.close().expect("close");

    // A key the store does not know opens the copy no more than the store.
    let other = dir.path().join("other.key");
    std::fs::write(&other, [7u8; 32]).expect("key");
    assert!(Store::open(&copy_dir, &Unlock::key_file(&other)).is_err());
}
