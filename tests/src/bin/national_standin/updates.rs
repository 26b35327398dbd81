//! An update mirror beside national (`--updates DIR`): the TUF repository in `DIR` served as
//! static files under `/updates/`, with `Range` as nginx answers it (206 from an offset,
//! 416 past the end), so the uplink's resumed downloads meet a real server. Each request is
//! in the ledger (`update_requests`: path, `Range`, and whether it was answered). The fault
//! `cut_update_downloads` cuts the next N release downloads after a third of their bytes, as
//! an LTE link drops; `hold_update_chunks_after` answers N chunks and then holds the rest
//! unanswered until the fault is lifted (or the box is gone), as a link that goes quiet.

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
    /// False while a held request waits (and for good if the box went away meanwhile).
    pub answered: bool,
    /// It waited for the hold to be lifted: answered, if at all, to a box that may have gone.
    pub held: bool,
}

/// How often a held request looks whether its fault was lifted.
const HOLD_POLL: std::time::Duration = std::time::Duration::from_millis(200);

pub async fn file(
    State(app): State<App>,
    UrlPath(path): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (root, cut, entry) = {
        let mut i = app.lock();
        i.data.update_requests.push(UpdateRequest {
            path: path.clone(),
            range: range.clone(),
            answered: false,
            held: false,
        });
        let entry = i.data.update_requests.len() - 1;
        let is_target = path.starts_with("targets/");
        let cut = is_target && i.faults.cut_update_downloads > 0;
        if cut {
            i.faults.cut_update_downloads -= 1;
        }
        (app.updates.clone(), cut, entry)
    };
    let held = path.starts_with("targets/chunks/") && hold_while_quiet(&app).await;
    if let Some(r) = app.lock().data.update_requests.get_mut(entry) {
        r.answered = true;
        r.held = held;
    }
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

/// Spends one of the chunks `hold_update_chunks_after` still lets through, or waits while it
/// is at 0 (the request's connection stays open, unanswered); whether it waited.
async fn hold_while_quiet(app: &App) -> bool {
    let mut waited = false;
    loop {
        {
            let mut i = app.lock();
            match &mut i.faults.hold_update_chunks_after {
                None => return waited,
                Some(n) if *n > 0 => {
                    *n -= 1;
                    return waited;
                }
                Some(_) => {}
            }
        }
        waited = true;
        tokio::time::sleep(HOLD_POLL).await;
    }
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
