//! Record bodies deflated before they are sealed (ciphertext does not compress).
//!
//! A record is a small JSON document, so on its own deflate finds little to reuse; most of its
//! bytes are field names every record shares. A preset dictionary of those names lets the
//! first occurrence in a record already be a back-reference. The dictionary is part of the
//! on-disk format: records written with it must stay readable, so it is never edited. A better
//! one would be a new flag value in the record header, with this one kept for reading.
//!
//! Compression runs on the writer thread and decompression on readers; each thread keeps its
//! own (de)compressor, because building one allocates zlib's tables every time.

use std::cell::RefCell;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// Field names and fragments of the DHIS2 JSON the box stores, the most frequent last (deflate
/// reaches the end of its window most cheaply).
const DICTIONARY_1: &[u8] = br#"{"relationshipType":"","from":{"trackedEntity":"","bidirectional":false,"period":"","categoryOptionCombo":"","comment":"","followup":false,"lastUpdatedMs":,"geometry":{"type":"Point","coordinates":[],"scheduledAt":"","assignedUser":{"uid":"","username":"","firstName":"","surname":""},"inactive":false,"potentialDuplicate":false,"fromNational":true,"attributeCategoryOptions":"","updatedBy":"","trackedEntityType":"","programOwners":[{"program":"","orgUnit":""}],"enrolledAt":"","status":"ACTIVE","completedAt":"","completedBy":"","followUp":false,"notes":[{"note":"","value":"","storedMs":,"storedBy":"","createdBy":""}],"enrollment":"","trackedEntity":"","program":"","programStage":"","orgUnit":"","status":"COMPLETED","occurredAt":"","attributeOptionCombo":"","createdAtClient":"","updatedAtClient":"","createdBy":"","attributes":[{"attribute":"","value":"","createdMs":,"updatedMs":,"storedBy":""}],"dataValues":[{"dataElement":"","value":"","providedElsewhere":true,"createdMs":,"updatedMs":,"storedBy":""},{"dataElement":""#;

/// Smaller bodies gain nothing once the length prefix is paid; larger ones are files, already
/// compressed or not worth the writer's time.
const MIN_BODY: usize = 48;
const MAX_BODY: usize = 256 * 1024;

thread_local! {
    static DEFLATE: RefCell<Option<Compress>> = const { RefCell::new(None) };
    static INFLATE: RefCell<Option<Decompress>> = const { RefCell::new(None) };
}

/// `body` deflated with the dictionary, when that is smaller; `None` to store it as it is.
pub(crate) fn deflate(body: &[u8]) -> Option<Vec<u8>> {
    if !(MIN_BODY..=MAX_BODY).contains(&body.len()) {
        return None;
    }
    DEFLATE.with(|cell| {
        let mut cell = cell.borrow_mut();
        let c = cell.get_or_insert_with(|| Compress::new(Compression::new(6), false));
        c.reset();
        c.set_dictionary(DICTIONARY_1).ok()?;
        // Anything not smaller than the body is not worth keeping.
        let mut out = Vec::with_capacity(body.len());
        match c.compress_vec(body, &mut out, FlushCompress::Finish) {
            Ok(Status::StreamEnd) if c.total_in() == body.len() as u64 => Some(out),
            _ => None,
        }
    })
}

/// Inflates what [`deflate`] made, to exactly `len` bytes; `None` if it does not.
pub(crate) fn inflate(data: &[u8], len: usize) -> Option<Vec<u8>> {
    if len > MAX_BODY {
        return None;
    }
    INFLATE.with(|cell| {
        let mut cell = cell.borrow_mut();
        let d = cell.get_or_insert_with(|| Decompress::new(false));
        d.reset(false);
        d.set_dictionary(DICTIONARY_1).ok()?;
        // One byte of room past `len` tells a longer stream from an exact one.
        let mut out = Vec::with_capacity(len + 1);
        match d.decompress_vec(data, &mut out, FlushDecompress::Finish) {
            Ok(Status::StreamEnd) if out.len() == len && d.total_in() == data.len() as u64 => {
                Some(out)
            }
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENT: &[u8] = br#"{"enrollment":"enABCDEFGH1","trackedEntity":"teABCDEFGH1","program":"cbPrgOpd001","programStage":"cbStgTriage","orgUnit":"cbClinicA01","status":"COMPLETED","occurredAt":"2026-12-01T09:05:00.000","dataValues":[{"dataElement":"cbDeWeight1","value":"61.5","createdMs":1796000000123,"updatedMs":1796000000123,"storedBy":"nurse"}],"notes":[],"createdBy":"nurse"}"#;

    #[test]
    fn a_record_comes_back_byte_for_byte_and_smaller() {
        let packed = deflate(EVENT).expect("a JSON record compresses");
        assert!(
            packed.len() * 2 < EVENT.len(),
            "{} of {}",
            packed.len(),
            EVENT.len()
        );
        assert_eq!(inflate(&packed, EVENT.len()).as_deref(), Some(EVENT));
    }

    #[test]
    fn a_wrong_length_or_a_damaged_stream_is_refused() {
        let packed = deflate(EVENT).expect("compresses");
        assert!(inflate(&packed, EVENT.len() - 1).is_none());
        assert!(inflate(&packed, EVENT.len() + 1).is_none());
        assert!(inflate(&packed[..packed.len() - 2], EVENT.len()).is_none());
        assert!(inflate(&packed, MAX_BODY + 1).is_none());
    }

    #[test]
    fn tiny_huge_and_incompressible_bodies_stay_as_they_are() {
        assert!(deflate(b"{}").is_none());
        assert!(deflate(&vec![b'a'; MAX_BODY + 1]).is_none());
        let mut noise = vec![0u8; 4096];
        getrandom::fill(&mut noise).expect("random");
        assert!(deflate(&noise).is_none());
    }
}
