//! Behaviour of the store through its public API.

use clinicbox_store::{
    Collection, DataValueKey, KeySlotKind, NewKeySlot, PinCost, Store, StoreError, Unlock,
    UnlockError, WriteError, Zeroizing,
};

fn key_file_store() -> (tempfile::TempDir, Store, std::path::PathBuf) {
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
    (dir, store, key)
}

#[test]
fn writes_are_readable_after_reopen() {
    let (dir, store, key) = key_file_store();
    store
        .write_blocking(|ctx| {
            ctx.put(Collection::EVENTS, "ev000000001", b"{\"a\":1}".to_vec())?;
            ctx.put_json(
                Collection::METADATA,
                "programs/IpHINAT79UW",
                &serde_json::json!({"name": "x"}),
            )
        })
        .expect("write");
    store.close().expect("close");
    drop(store);
    let store = Store::open(&dir.path().join("data"), &Unlock::key_file(&key)).expect("open");
    let r = store.read().expect("read");
    let ev = r
        .get(Collection::EVENTS, "ev000000001")
        .expect("get")
        .expect("present");
    assert_eq!(ev.body, b"{\"a\":1}");
    assert!(!ev.deleted);
    assert_eq!(ev.seq, 1);
    let md: serde_json::Value = r
        .get(Collection::METADATA, "programs/IpHINAT79UW")
        .expect("get")
        .expect("present")
        .json()
        .expect("json");
    assert_eq!(md["name"], "x");
}

#[test]
fn a_rejected_closure_changes_nothing_and_others_in_its_group_commit() {
    let (_dir, store, _) = key_file_store();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        let mut tasks = Vec::new();
        for i in 0..50u32 {
            let s = store.clone();
            tasks.push(tokio::spawn(async move {
                s.write(move |ctx| {
                    ctx.put(Collection::EVENTS, &format!("ev{i:09}"), vec![1])
                        .map_err(|_| "store")?;
                    if i % 5 == 0 {
                        Err("odd one out")
                    } else {
                        Ok(i)
                    }
                })
                .await
            }));
        }
        for (i, t) in tasks.into_iter().enumerate() {
            match t.await.expect("join") {
                Ok(c) => assert_eq!(c.value as usize, i),
                Err(WriteError::Rejected(m)) => assert_eq!((i % 5, m), (0, "odd one out")),
                Err(e) => panic!("unexpected {e}"),
            }
        }
    });
    let r = store.read().expect("read");
    assert_eq!(r.count(Collection::EVENTS).expect("count"), 40);
    assert!(
        r.get(Collection::EVENTS, "ev000000005")
            .expect("get")
            .is_none()
    );
    let stats = store.stats().expect("stats");
    assert_eq!(stats.writes, 40);
    assert!(
        stats.commits <= 40,
        "group commit took several writers per commit or one each"
    );
}

#[test]
fn reads_inside_a_write_see_the_same_groups_earlier_writes() {
    let (_dir, store, _) = key_file_store();
    store
        .write_blocking(|ctx| ctx.put(Collection::EVENTS, "ev000000001", b"1".to_vec()))
        .expect("w");
    let seen = store
        .write_blocking(|ctx| {
            ctx.put(Collection::EVENTS, "ev000000001", b"2".to_vec())?;
            ctx.get(Collection::EVENTS, "ev000000001")
        })
        .expect("w");
    assert_eq!(seen.value.expect("present").body, b"2");
}

#[test]
fn deletes_leave_tombstones_in_the_change_log() {
    let (_dir, store, _) = key_file_store();
    let first = store
        .write_blocking(|ctx| ctx.put(Collection::EVENTS, "ev000000001", b"x".to_vec()))
        .expect("w");
    let del = store
        .write_blocking(|ctx| ctx.delete(Collection::EVENTS, "ev000000001"))
        .expect("w");
    assert!(del.value);
    assert!(
        !store
            .write_blocking(|ctx| ctx.delete(Collection::EVENTS, "ev000000001"))
            .expect("w")
            .value
    );
    let r = store.read().expect("read");
    let rec = r
        .get(Collection::EVENTS, "ev000000001")
        .expect("get")
        .expect("tombstone kept");
    assert!(rec.deleted);
    assert_eq!(rec.body, b"x");
    assert!(rec.updated_ms >= first.commit.at_ms);
    let changes = r.changes_since(0, 10).expect("changes");
    assert_eq!(changes.len(), 2);
    assert_eq!((changes[0].seq, changes[0].deleted), (1, false));
    assert_eq!((changes[1].seq, changes[1].deleted), (2, true));
    assert!(changes[0].at_ms <= changes[1].at_ms);
    assert_eq!(r.changes_since(1, 10).expect("changes").len(), 1);
}

#[test]
fn change_log_answers_updated_after_queries() {
    let (_dir, store, _) = key_file_store();
    store
        .write_blocking(|ctx| ctx.put(Collection::EVENTS, "old00000001", b"x".to_vec()))
        .expect("w");
    // `updatedAfter` is inclusive (>=): a commit in the same millisecond as the serverDate read
    // comes back again, which is harmless. Step past the old write's millisecond first.
    std::thread::sleep(std::time::Duration::from_millis(3));
    let server_date = store.server_time_ms();
    std::thread::sleep(std::time::Duration::from_millis(3));
    store
        .write_blocking(|ctx| {
            ctx.put(Collection::EVENTS, "new00000001", b"y".to_vec())?;
            ctx.put(Collection::ENROLLMENTS, "enr00000001", b"z".to_vec())
        })
        .expect("w");
    let r = store.read().expect("read");
    let keys = r
        .keys_changed_since(Collection::EVENTS, server_date)
        .expect("keys");
    assert_eq!(keys, vec!["new00000001".to_owned()]);
    let all = r.keys_changed_since(Collection::EVENTS, 0).expect("keys");
    assert_eq!(all.len(), 2);
    // Inclusive at the boundary: asking from the old commit's own time returns it.
    let old_ms = r
        .get(Collection::EVENTS, "old00000001")
        .expect("get")
        .expect("present")
        .updated_ms;
    assert!(
        r.keys_changed_since(Collection::EVENTS, old_ms)
            .expect("keys")
            .contains(&"old00000001".to_owned())
    );
}

#[test]
fn server_time_never_goes_back_after_reopen() {
    let (dir, store, key) = key_file_store();
    let c = store
        .write_blocking(|ctx| ctx.put(Collection::EVENTS, "ev000000001", b"x".to_vec()))
        .expect("w");
    store.close().expect("close");
    drop(store);
    let store = Store::open(&dir.path().join("data"), &Unlock::key_file(&key)).expect("open");
    assert!(store.server_time_ms() >= c.commit.at_ms);
    let c2 = store
        .write_blocking(|ctx| ctx.put(Collection::EVENTS, "ev000000002", b"x".to_vec()))
        .expect("w");
    assert!(c2.commit.at_ms >= c.commit.at_ms);
    assert_eq!(c2.commit.last_seq, 2);
}

#[test]
fn blind_index_finds_keys_without_storing_the_value() {
    let (_dir, store, _) = key_file_store();
    store
        .write_blocking(|ctx| {
            ctx.index_add("te.name", "amina", "te000000001")?;
            ctx.index_add("te.name", "amina", "te000000002")?;
            ctx.index_add("te.name", "joseph", "te000000003")
        })
        .expect("w");
    let r = store.read().expect("read");
    assert_eq!(
        r.index_lookup("te.name", "amina").expect("lookup"),
        vec!["te000000001", "te000000002"]
    );
    assert!(
        r.index_lookup("te.name", "amin")
            .expect("lookup")
            .is_empty()
    );
    store
        .write_blocking(|ctx| {
            ctx.index_remove("te.name", "amina", "te000000001");
            Ok::<_, StoreError>(())
        })
        .expect("w");
    let r = store.read().expect("read");
    assert_eq!(
        r.index_lookup("te.name", "amina").expect("lookup"),
        vec!["te000000002"]
    );
}

#[test]
fn scan_prefix_stays_inside_its_prefix() {
    let (_dir, store, _) = key_file_store();
    store
        .write_blocking(|ctx| {
            for (ns, k) in [
                ("ANDROID_SETTINGS_APP", "general"),
                ("ANDROID_SETTINGS_APP", "sync"),
                ("USE_CASES", "x"),
            ] {
                ctx.put(Collection::DATA_STORE, &format!("{ns}/{k}"), b"{}".to_vec())?;
            }
            let dv = DataValueKey {
                data_element: "de000000001".into(),
                period: "202611".into(),
                org_unit: "ou000000001".into(),
                category_option_combo: "coc00000001".into(),
                attribute_option_combo: "aoc00000001".into(),
            };
            ctx.put(Collection::DATA_VALUES, &dv.to_key(), b"5".to_vec())
        })
        .expect("w");
    let r = store.read().expect("read");
    let keys: Vec<String> = r
        .scan_prefix(Collection::DATA_STORE, "ANDROID_SETTINGS_APP/")
        .expect("scan")
        .map(|e| e.expect("entry").0)
        .collect();
    assert_eq!(
        keys,
        ["ANDROID_SETTINGS_APP/general", "ANDROID_SETTINGS_APP/sync"]
    );
    assert_eq!(r.scan(Collection::DATA_VALUES).expect("scan").count(), 1);
    let stats = store.stats().expect("stats");
    assert!(stats.records.contains(&("dataStore".to_owned(), 3)));
}

#[test]
fn a_wrong_key_is_refused_and_changes_nothing() {
    let (dir, store, _key) = key_file_store();
    store
        .write_blocking(|ctx| ctx.put(Collection::EVENTS, "ev000000001", b"x".to_vec()))
        .expect("w");
    store.close().expect("close");
    drop(store);
    let db = dir.path().join("data").join(clinicbox_store::DB_FILE);
    let before = std::fs::read(&db).expect("read db");
    let wrong = dir.path().join("wrong.key");
    std::fs::write(&wrong, [5u8; 32]).expect("write");
    let err = Store::open(&dir.path().join("data"), &Unlock::key_file(&wrong))
        .err()
        .expect("refused");
    assert!(
        matches!(err, StoreError::Unlock(UnlockError::WrongKey("key file"))),
        "{err}"
    );
    let err = Store::open(&dir.path().join("data"), &Unlock::pin("000000"))
        .err()
        .expect("refused");
    assert!(
        matches!(err, StoreError::Unlock(UnlockError::WrongKey("PIN"))),
        "{err}"
    );
    assert!(
        std::fs::read(&db).expect("read db") == before,
        "a failed unlock modified the database file"
    );
}

#[test]
fn key_slots_are_managed_without_reencrypting_data() {
    let (dir, store, key) = key_file_store();
    store
        .write_blocking(|ctx| ctx.put(Collection::EVENTS, "ev000000001", b"kept".to_vec()))
        .expect("w");
    let (pin_slot, _) = store
        .add_key_slot(NewKeySlot::Pin {
            pin: Zeroizing::new("123456".into()),
            label: "lead".into(),
            cost: PinCost::INSECURE_FOR_TESTS,
        })
        .expect("add pin");
    let (_, recovery) = store
        .add_key_slot(NewKeySlot::Recovery {
            label: "printed".into(),
        })
        .expect("add recovery");
    let recovery = recovery.expect("recovery key shown once");
    let new_pin = store
        .change_pin(
            pin_slot.id,
            Zeroizing::new("654321".into()),
            PinCost::INSECURE_FOR_TESTS,
        )
        .expect("change pin");
    let kinds: Vec<KeySlotKind> = store
        .key_slots()
        .expect("slots")
        .iter()
        .map(|s| s.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            KeySlotKind::KeyFile,
            KeySlotKind::Recovery,
            KeySlotKind::Pin
        ]
    );
    store.remove_key_slot(0).expect("remove key-file slot");
    store.close().expect("close");
    drop(store);
    let data = dir.path().join("data");
    assert!(Store::open(&data, &Unlock::key_file(&key)).is_err());
    assert!(Store::open(&data, &Unlock::pin("123456")).is_err());
    let s = Store::open(&data, &Unlock::pin("654321")).expect("new pin opens");
    assert_eq!(s.unlocked_slot(), new_pin.id);
    assert_eq!(
        s.read()
            .expect("r")
            .get(Collection::EVENTS, "ev000000001")
            .expect("g")
            .expect("p")
            .body,
        b"kept"
    );
    let rid = s
        .key_slots()
        .expect("slots")
        .iter()
        .find(|k| k.kind == KeySlotKind::Recovery)
        .expect("r")
        .id;
    s.remove_key_slot(new_pin.id).expect("remove pin");
    assert!(matches!(
        s.remove_key_slot(rid),
        Err(StoreError::KeySlot(
            clinicbox_store::KeySlotError::LastSlot(_)
        ))
    ));
    s.close().expect("close");
    drop(s);
    Store::open(&data, &Unlock::recovery_key(recovery.as_str())).expect("recovery key opens");
}

#[test]
fn a_second_process_cannot_open_an_open_store() {
    let (dir, _store, key) = key_file_store();
    let err = Store::open(&dir.path().join("data"), &Unlock::key_file(&key))
        .err()
        .expect("locked");
    assert!(matches!(err, StoreError::Locked { .. }), "{err}");
}

#[test]
fn writes_after_close_are_refused() {
    let (_dir, store, _) = key_file_store();
    store.close().expect("close");
    let r = store.write_blocking(|ctx| ctx.put(Collection::EVENTS, "ev000000001", b"x".to_vec()));
    assert!(matches!(r, Err(WriteError::Store(StoreError::Closed))));
}

#[test]
fn a_closed_store_resumes_writes() {
    let (_dir, store, _) = key_file_store();
    store
        .write_blocking(|ctx| ctx.put(Collection::EVENTS, "ev000000001", b"x".to_vec()))
        .expect("w");
    store.close().expect("close");
    assert!(store.is_healthy());
    assert!(
        store
            .write_blocking(|ctx| ctx.put(Collection::EVENTS, "ev000000002", b"x".to_vec()))
            .is_err()
    );
    store.resume().expect("resume");
    let c = store
        .write_blocking(|ctx| ctx.put(Collection::EVENTS, "ev000000002", b"x".to_vec()))
        .expect("w");
    assert_eq!(c.commit.last_seq, 2);
    assert!(store.is_healthy());
}

/// The benchmarks' slow-sync backend (what it costs is measured by `clinicbox-bench tablets`):
/// writes are read back after a reopen, and the file stays locked against a second opener as
/// redb's own backend keeps it.
#[test]
fn a_store_with_a_sync_delay_keeps_its_writes_and_its_lock() {
    let (dir, store, key) = key_file_store();
    store.close().expect("close");
    drop(store);
    let data = dir.path().join("data");
    let options = clinicbox_store::StoreOptions {
        sync_delay: std::time::Duration::from_millis(30),
        ..clinicbox_store::StoreOptions::default()
    };
    let slow = Store::open_with(&data, &Unlock::key_file(&key), options).expect("open");
    slow.write_blocking(|ctx| ctx.put(Collection::EVENTS, "ev000000001", b"{}".to_vec()))
        .expect("write");
    let err = Store::open(&data, &Unlock::key_file(&key))
        .err()
        .expect("locked");
    assert!(matches!(err, StoreError::Locked { .. }), "{err}");
    slow.close().expect("close");
    drop(slow);
    let again = Store::open(&data, &Unlock::key_file(&key)).expect("reopen");
    assert!(
        again
            .read()
            .expect("read")
            .get(Collection::EVENTS, "ev000000001")
            .expect("get")
            .is_some()
    );
}

fn put_with_index(store: &Store, key: &'static str, index: &'static str, value: &'static str) {
    store
        .write_blocking(move |ctx| {
            ctx.put(Collection::EVENTS, key, b"{}".to_vec())?;
            ctx.index_add(index, value, key)
        })
        .map_err(WriteError::flatten)
        .expect("write");
}

/// What an older build leaves: it moves `lastSeq` and knows nothing of `derivedThrough`.
fn as_written_by_an_older_build(data: &std::path::Path) {
    const META: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("_meta");
    let db = redb::Database::open(data.join("store.redb")).expect("redb");
    let txn = db.begin_write().expect("txn");
    txn.open_table(META)
        .expect("meta")
        .remove("derivedThrough")
        .expect("remove");
    txn.commit().expect("commit");
}

#[test]
fn derived_data_is_owed_after_an_older_build_wrote_until_a_commit_rebuilds_it() {
    let (dir, store, key) = key_file_store();
    let data = dir.path().join("data");
    assert!(store.derived_current(), "a new store");
    put_with_index(&store, "ev000000001", "kept", "a");
    put_with_index(&store, "ev000000002", "rebuilt", "a");
    store.close().expect("close");
    drop(store);
    let reopen = || Store::open(&data, &Unlock::key_file(&key)).expect("open");
    let current_at_open = || {
        let store = reopen();
        let current = store.derived_current();
        store.close().expect("close");
        current
    };
    assert!(current_at_open(), "written by this build only");

    as_written_by_an_older_build(&data);
    let store = reopen();
    assert!(!store.derived_current());
    // An ordinary commit does not pay the debt, even across a restart.
    put_with_index(&store, "ev000000003", "kept", "b");
    store.close().expect("close");
    drop(store);
    assert!(!current_at_open(), "still owed after a restart");
    let store = reopen();
    // The rebuild: clear one index, file again, mark.
    store
        .write_blocking(|ctx| {
            ctx.index_clear("rebuilt");
            ctx.index_add("rebuilt", "z", "ev000000002")?;
            ctx.mark_derived_current();
            Ok::<_, StoreError>(())
        })
        .map_err(WriteError::flatten)
        .expect("rebuild");
    assert!(store.derived_current());
    let read = store.read().expect("read");
    assert!(
        read.index_lookup("rebuilt", "a")
            .expect("lookup")
            .is_empty()
    );
    assert_eq!(
        read.index_lookup("rebuilt", "z").expect("lookup"),
        ["ev000000002"]
    );
    assert_eq!(
        read.index_lookup("kept", "a").expect("lookup"),
        ["ev000000001"],
        "another index is untouched"
    );
    assert_eq!(
        read.index_lookup("kept", "b").expect("lookup"),
        ["ev000000003"]
    );
    drop(read);
    store.close().expect("close");
    drop(store);
    assert!(current_at_open(), "the mark is on disk");
}
