//! How the box serves a stored file's bytes (tracker and aggregate files alike).

use axum::http::{HeaderMap, HeaderValue, header};

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
