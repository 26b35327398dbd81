//! File resources as the box keeps them, who may use them, and how their bytes are served
//! (tracker and aggregate files alike).

use axum::http::{HeaderMap, HeaderValue, header};
use serde::{Deserialize, Serialize};

use crate::AuthUser;

/// A file resource's description as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredFile {
    pub name: String,
    pub content_type: String,
    pub content_length: u64,
    pub domain: String,
    #[serde(default)]
    pub created_by: Option<String>,
    /// The record whose value references the file, once one does (DHIS2's "assigned"): who may
    /// read the file follows that record from then on, and no other record may take it (E1009).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assigned_to: Option<FileOwner>,
}

/// The record a file resource belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "uid", rename_all = "camelCase")]
pub enum FileOwner {
    /// A file or image attribute of this tracked entity.
    TrackedEntity(String),
    /// A file or image data value of this event.
    Event(String),
}

/// What a user does with an unassigned file: read it (search scope over the uploader's clinic
/// is enough) or put it in a record (capture scope needed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    Read,
    Assign,
}

/// An unassigned file: a superuser, its uploader, or a user whose scope covers one of the
/// uploader's capture org units (search scope to read it, capture scope to put it in a record).
pub fn uploaded_in_scope(user: &AuthUser, f: &StoredFile, what: Use) -> bool {
    // A file with no uploader came to the box another way (stored before uploaders were
    // recorded): no clinic to hold it to.
    let Some(name) = f.created_by.as_deref() else {
        return true;
    };
    if user.is_superuser() || name == user.username {
        return true;
    }
    let Some(uploader) = user
        .snapshot
        .credential(name)
        .and_then(|c| AuthUser::load(&user.snapshot, &c.uid))
    else {
        return false;
    };
    uploader.scope.capture.iter().any(|ou| match what {
        Use::Read => user.scope.can_search(&ou.path),
        Use::Assign => user.scope.can_capture(&ou.path),
    })
}

/// The content type the box serves a file with, decided from its bytes, never from what the
/// uploader declared: a file that claims `text/html` and carries a script is served as bytes to
/// download, so it never runs on the box's origin (beside `/admin` and `/setup`).
pub fn content_type_of(bytes: &[u8]) -> &'static str {
    match bytes {
        [0x89, b'P', b'N', b'G', ..] => "image/png",
        [0xff, 0xd8, 0xff, ..] => "image/jpeg",
        [b'G', b'I', b'F', b'8', b'7' | b'9', b'a', ..] => "image/gif",
        [
            b'R',
            b'I',
            b'F',
            b'F',
            _,
            _,
            _,
            _,
            b'W',
            b'E',
            b'B',
            b'P',
            ..,
        ] => "image/webp",
        [b'%', b'P', b'D', b'F', b'-', ..] => "application/pdf",
        _ => "application/octet-stream",
    }
}

/// Whether `content_type` is one [`content_type_of`] decides: a stored type the box chose itself
/// (every upload since types are decided from the bytes) needs no second look at the bytes.
pub fn decided_by_the_box(content_type: &str) -> bool {
    matches!(
        content_type,
        "image/png"
            | "image/jpeg"
            | "image/gif"
            | "image/webp"
            | "application/pdf"
            | "application/octet-stream"
    )
}

/// The headers of a file download: the type from the bytes, images inline and anything else
/// as an attachment, no sniffing, and a sandbox in case a browser renders it anyway.
pub fn download_headers(h: &mut HeaderMap, name: &str, bytes: &[u8]) {
    let ct = content_type_of(bytes);
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .take(100)
        .collect();
    let kind = if ct.starts_with("image/") {
        "inline"
    } else {
        "attachment"
    };
    let name = if safe.is_empty() { "file" } else { &safe };
    if let Ok(v) = HeaderValue::from_str(&format!("{kind}; filename=\"{name}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; sandbox"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_type_comes_from_the_bytes_and_html_is_never_served_as_html() {
        assert_eq!(content_type_of(b"\x89PNG\r\n\x1a\n0000"), "image/png");
        assert_eq!(content_type_of(b"\xff\xd8\xff\xe0"), "image/jpeg");
        assert_eq!(content_type_of(b"%PDF-1.7"), "application/pdf");
        // Every type the box decides is recognised as its own.
        for bytes in [
            &b"\x89PNG"[..],
            b"\xff\xd8\xff",
            b"GIF89a",
            b"RIFF0000WEBP",
            b"%PDF-",
            b"<html>",
        ] {
            assert!(decided_by_the_box(content_type_of(bytes)));
        }
        assert!(!decided_by_the_box("text/html"));
        assert_eq!(
            content_type_of(b"<html><script>alert(1)</script>"),
            "application/octet-stream"
        );
        let mut h = HeaderMap::new();
        download_headers(&mut h, "x\"; evil.html", b"<script>");
        assert_eq!(h[header::CONTENT_TYPE], "application/octet-stream");
        assert_eq!(
            h[header::CONTENT_DISPOSITION],
            "attachment; filename=\"x___evil.html\""
        );
        download_headers(&mut h, "photo.jpg", b"\xff\xd8\xff\xe0");
        assert_eq!(
            h[header::CONTENT_DISPOSITION],
            "inline; filename=\"photo.jpg\""
        );
    }
}
