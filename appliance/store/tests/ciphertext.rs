//! Guards against patient data reaching the disk in the clear: a distinctive name written
//! through the store must not appear in any file of the data directory, in any common encoding.

use clinicbox_store::{Collection, NewKeySlot, Store};

const NAME: &str = "Nomvula Zanele Okonkwo-Mbeki";

fn encodings(s: &str) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for variant in [
        s.to_owned(),
        s.to_lowercase(),
        s.to_uppercase(),
        "Nomvula".to_owned(),
        "Okonkwo".to_owned(),
    ] {
        out.push((format!("utf8 {variant}"), variant.as_bytes().to_vec()));
        let le: Vec<u8> = variant.encode_utf16().flat_map(u16::to_le_bytes).collect();
        let be: Vec<u8> = variant.encode_utf16().flat_map(u16::to_be_bytes).collect();
        out.push((format!("utf16le {variant}"), le));
        out.push((format!("utf16be {variant}"), be));
    }
    out
}

fn files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("read_dir") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            out.extend(files(&p))
        } else {
            out.push(p)
        }
    }
    out
}

#[test]
fn patient_names_never_reach_the_disk_in_the_clear() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let (store, _) = Store::create(
        &data,
        NewKeySlot::KeyFile {
            path: dir.path().join("store.key"),
            label: "t".into(),
            create: true,
        },
    )
    .expect("create");
    let te = serde_json::json!({
        "trackedEntity": "Kj6vYde4LHh",
        "attributes": [{"attribute": "w75KJ2mc4zz", "value": NAME}],
    });
    store
        .write_blocking(move |ctx| {
            ctx.put_json(Collection::TRACKED_ENTITIES, "Kj6vYde4LHh", &te)?;
            ctx.index_add("te.name", &NAME.to_lowercase(), "Kj6vYde4LHh")
        })
        .expect("write");
    // A tombstone keeps its body: it must be sealed too.
    store
        .write_blocking(|ctx| ctx.delete(Collection::TRACKED_ENTITIES, "Kj6vYde4LHh"))
        .expect("delete");
    store.close().expect("close");
    drop(store);

    let files = files(&data);
    assert!(!files.is_empty());
    for f in files {
        let bytes = std::fs::read(&f).expect("read");
        for (what, needle) in encodings(NAME) {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_slice()),
                "{what} found in {}",
                f.display()
            );
        }
    }
    // The test can fail: the same scan finds the name in a file that holds it.
    let control = dir.path().join("control.bin");
    std::fs::write(
        &control,
        NAME.encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect::<Vec<u8>>(),
    )
    .expect("w");
    let bytes = std::fs::read(&control).expect("read");
    assert!(
        encodings(NAME)
            .iter()
            .any(|(_, n)| bytes.windows(n.len()).any(|w| w == n.as_slice()))
    );
}
