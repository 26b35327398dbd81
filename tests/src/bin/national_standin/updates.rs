//! An update mirror beside national (`--updates DIR`): the TUF repository in `DIR` served as
//! static files under `/updates/`, with `Range` as nginx answers it (206 from an offset,
//! 416 past the end), so the uplink's resumed downloads meet a real server. Each request is
//! in the ledger (`update_requests`: path and `Range`), and the fault `cut_update_downloads`
//! cuts the next N release downloads after a third of their bytes, as an LTE link drops.

use std::path::{Component, Path, PathBuf};

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::App;

/// One request to the mirror, as the ledger keeps it.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct UpdateRequest {
    pub path: String,
    pub range: Option<String>,
}

pub async fn file(
    State(app): State<App>,
    UrlPath(path): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (root, cut) = {
        let mut i = app.lock();
        i.data.update_requests.push(UpdateRequest {
            path: path.clone(),
            range: range.clone(),
        });
        let is_target = path.starts_with("targets/");
        let cut = is_target && i.faults.cut_update_downloads > 0;
        if cut {
            i.faults.cut_update_downloads -= 1;
        }
        (app.updates.clone(), cut)
    };
    let Some(file) = root.as_deref().and_then(|r| inside(r, &path)) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let Ok(bytes) = tokio::fs::read(&file).await else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let (status, body) = match range.as_deref().map(|r| from_offset(r, bytes.len())) {
        None => (StatusCode::OK, bytes),
        Some(Some(n)) => (StatusCode::PARTIAL_CONTENT, bytes[n..].to_vec()),
        Some(None) => return StatusCode::RANGE_NOT_SATISFIABLE.into_response(),
    };
    if cut {
        return (status, cut_body(body)).into_response();
    }
    (status, body).into_response()
}

/// `DIR/path`, only if `path` stays inside `DIR`.
fn inside(root: &Path, path: &str) -> Option<PathBuf> {
    let rel = Path::new(path);
    rel.components()
        .all(|c| matches!(c, Component::Normal(_)))
        .then(|| root.join(rel))
}

/// The offset of `bytes=N-` when it is inside a file of `len` bytes.
fn from_offset(range: &str, len: usize) -> Option<usize> {
    let n: usize = range
        .strip_prefix("bytes=")?
        .strip_suffix('-')?
        .parse()
        .ok()?;
    (n < len).then_some(n)
}

/// The head and a third of the body go out, then the connection breaks.
fn cut_body(body: Vec<u8>) -> Body {
    let keep = body[..body.len() / 3].to_vec();
    let parts: Vec<Result<Vec<u8>, std::io::Error>> =
        vec![Ok(keep), Err(std::io::Error::other("the link dropped"))];
    let paced = futures_util::StreamExt::then(futures_util::stream::iter(parts), |p| async {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        p
    });
    Body::from_stream(paced)
}
