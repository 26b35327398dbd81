//! A transport that keeps a copy of every metadata file it fetched: the uplink verifies a
//! mirror's repository over HTTPS and leaves, beside the target it downloads, the exact
//! metadata it verified, so `clinicbox update` (no network) verifies the same repository again
//! from a folder, as it would a USB stick's.

use std::path::PathBuf;

use futures_util::StreamExt;
use tough::{Transport, TransportError, TransportErrorKind, TransportStream};
use url::Url;

use crate::MAX_METADATA_BYTES;

/// Fetches through `inner` and writes each file, whole, into `into` under its name.
#[derive(Debug, Clone)]
pub struct Recording<T> {
    inner: T,
    into: PathBuf,
}

impl<T> Recording<T> {
    pub fn new(inner: T, into: PathBuf) -> Recording<T> {
        Recording { inner, into }
    }
}

#[tough::async_trait]
impl<T: Transport + Clone + 'static> Transport for Recording<T> {
    async fn fetch(&self, url: Url) -> Result<TransportStream, TransportError> {
        let other = |e: String| TransportError::new_with_cause(TransportErrorKind::Other, &url, e);
        let name = url
            .path_segments()
            .and_then(|mut s| s.next_back())
            .filter(|n| !n.is_empty() && !n.starts_with('.'))
            .map(str::to_owned)
            .ok_or_else(|| other("no file name".into()))?;
        let mut stream = self.inner.fetch(url.clone()).await?;
        let mut body = Vec::new();
        while let Some(chunk) = stream.next().await {
            body.extend_from_slice(&chunk?);
            if body.len() > MAX_METADATA_BYTES {
                return Err(other(format!("larger than {MAX_METADATA_BYTES} bytes")));
            }
        }
        let path = self.into.join(&name);
        clinicbox_process::write_atomic(&path, &body, 0o644)
            .map_err(|e| other(format!("keeping {}: {e}", path.display())))?;
        let once = futures_util::stream::once(async move { Ok(tough::Bytes::from(body)) });
        Ok(Box::pin(once))
    }
}
