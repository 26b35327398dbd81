//! Record envelopes and change-log entries, in their plaintext byte layouts (sealed before
//! they reach redb).
//!
//! Record: `[seq u64 LE][created_ms u64 LE][updated_ms u64 LE][flags u8][body…]`, flag bit 0 =
//! deleted (a tombstone keeps its last body, as DHIS2 keeps soft-deleted objects); flag bit 1 =
//! the body is `[length u32 LE][deflate stream]` ([`crate::compress`]). Records written before
//! bit 1 existed are read as they are, and are compressed when next written.
//! Change:  `[at_ms u64 LE][flags u8][collection length u8][collection][key]`.

use serde::de::DeserializeOwned;

use crate::StoreError;

const HEADER: usize = 8 + 8 + 8 + 1;
const DELETED: u8 = 1;
const DEFLATED: u8 = 2;

/// One stored record as a reader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The change-log sequence number of the commit that last wrote it.
    pub seq: u64,
    /// Server time (ms since the Unix epoch) it was first written.
    pub created_ms: u64,
    /// Server time of its last write, from the store's clock (the one tablets get as serverDate).
    pub updated_ms: u64,
    /// True for a tombstone.
    pub deleted: bool,
    /// The payload; JSON by convention.
    pub body: Vec<u8>,
}

impl Record {
    /// Parses the body as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let packed = crate::compress::deflate(&self.body);
        let mut flags = if self.deleted { DELETED } else { 0 };
        let mut out = Vec::with_capacity(HEADER + self.body.len());
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.extend_from_slice(&self.created_ms.to_le_bytes());
        out.extend_from_slice(&self.updated_ms.to_le_bytes());
        match packed {
            Some(packed) => {
                flags |= DEFLATED;
                out.push(flags);
                // `deflate` takes at most 256 KiB, so the length fits.
                out.extend_from_slice(&(self.body.len() as u32).to_le_bytes());
                out.extend_from_slice(&packed);
            }
            None => {
                out.push(flags);
                out.extend_from_slice(&self.body);
            }
        }
        out
    }

    pub(crate) fn decode(collection: &str, key: &str, bytes: &[u8]) -> Result<Record, StoreError> {
        let bad = |reason: &str| StoreError::Malformed {
            collection: collection.to_owned(),
            key: key.to_owned(),
            reason: reason.into(),
        };
        if bytes.len() < HEADER || bytes[24] & !(DELETED | DEFLATED) != 0 {
            return Err(bad("bad record header"));
        }
        let flags = bytes[24];
        let rest = &bytes[HEADER..];
        let body = if flags & DEFLATED == 0 {
            rest.to_vec()
        } else {
            let (len, packed) = rest.split_at_checked(4).ok_or_else(|| bad("bad length"))?;
            let len = u32::from_le_bytes(len.try_into().map_err(|_| bad("bad length"))?);
            crate::compress::inflate(packed, len as usize)
                .ok_or_else(|| bad("bad compressed body"))?
        };
        Ok(Record {
            seq: u64_at(bytes, 0),
            created_ms: u64_at(bytes, 8),
            updated_ms: u64_at(bytes, 16),
            deleted: flags & DELETED != 0,
            body,
        })
    }
}

/// One entry of the change log: which record a commit wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub seq: u64,
    pub at_ms: u64,
    pub collection: String,
    pub key: String,
    pub deleted: bool,
}

impl Change {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let c = self.collection.as_bytes();
        let mut out = Vec::with_capacity(10 + c.len() + self.key.len());
        out.extend_from_slice(&self.at_ms.to_le_bytes());
        out.push(u8::from(self.deleted));
        out.push(u8::try_from(c.len()).expect("collection names are at most 48 bytes"));
        out.extend_from_slice(c);
        out.extend_from_slice(self.key.as_bytes());
        out
    }

    pub(crate) fn decode(seq: u64, bytes: &[u8]) -> Result<Change, StoreError> {
        let bad = || StoreError::Malformed {
            collection: "_changelog".into(),
            key: seq.to_string(),
            reason: "bad change entry".into(),
        };
        if bytes.len() < 10 {
            return Err(bad());
        }
        let clen = usize::from(bytes[9]);
        let rest = bytes.get(10..).ok_or_else(bad)?;
        if rest.len() < clen {
            return Err(bad());
        }
        let (c, k) = rest.split_at(clen);
        Ok(Change {
            seq,
            at_ms: u64_at(bytes, 0),
            deleted: bytes[8] == 1,
            collection: String::from_utf8(c.to_vec()).map_err(|_| bad())?,
            key: String::from_utf8(k.to_vec()).map_err(|_| bad())?,
        })
    }
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips() {
        let r = Record {
            seq: 7,
            created_ms: 1,
            updated_ms: 2,
            deleted: true,
            body: b"{}".to_vec(),
        };
        assert_eq!(Record::decode("c", "k", &r.encode()).expect("decode"), r);
        assert!(Record::decode("c", "k", &[0u8; 5]).is_err());
    }

    #[test]
    fn a_json_body_is_stored_deflated_and_read_back() {
        let body = br#"{"trackedEntityType":"cbTetPerson","orgUnit":"cbClinicA01","attributes":[{"attribute":"cbAttrPatId","value":"OPD-0000001","createdMs":1,"updatedMs":1}]}"#;
        let r = Record {
            seq: 1,
            created_ms: 1,
            updated_ms: 1,
            deleted: false,
            body: body.to_vec(),
        };
        let encoded = r.encode();
        assert_eq!(encoded[24], DEFLATED);
        assert!(encoded.len() < HEADER + body.len() / 2, "{}", encoded.len());
        assert_eq!(Record::decode("c", "k", &encoded).expect("decode"), r);
    }

    #[test]
    fn a_record_written_before_compression_reads_as_it_did() {
        // The exact bytes an earlier release sealed: header, flags 0, the JSON as it is.
        let body =
            br#"{"trackedEntityType":"cbTetPerson","orgUnit":"cbClinicA01","attributes":[]}"#;
        let mut old = Vec::new();
        old.extend_from_slice(&5u64.to_le_bytes());
        old.extend_from_slice(&10u64.to_le_bytes());
        old.extend_from_slice(&20u64.to_le_bytes());
        old.push(0);
        old.extend_from_slice(body);
        let r = Record::decode("c", "k", &old).expect("an old record");
        assert_eq!(
            (r.seq, r.created_ms, r.updated_ms, r.deleted),
            (5, 10, 20, false)
        );
        assert_eq!(r.body, body);
        old[24] = 4;
        assert!(
            Record::decode("c", "k", &old).is_err(),
            "an unknown flag is refused"
        );
    }

    #[test]
    fn change_round_trips() {
        let c = Change {
            seq: 3,
            at_ms: 99,
            collection: "events".into(),
            key: "a/b".into(),
            deleted: false,
        };
        assert_eq!(Change::decode(3, &c.encode()).expect("decode"), c);
    }
}
