//! The daemon's app as a client meets it: every error is a WebMessage under `/api` and a page
//! elsewhere, bounded in size; a stalled body is refused without holding the write gate; the
//! security headers are on every answer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use clinicbox::app::{AppParts, RequestLimits, router, status_without_presence};
use clinicbox::lifecycle::{BodyLimits, Lifecycle};
use clinicbox_store::{NewKeySlot, Store};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

const ANDROID: &str = "Basic YW5kcm9pZDpBbmRyb2lkMTIz"; // android:Android123

async fn app(dir: &tempfile::TempDir, bodies: BodyLimits) -> Router {
    let (store, _) = Store::create(
        &dir.path().join("data"),
        NewKeySlot::KeyFile {
            path: dir.path().join("key"),
            label: "test".into(),
            create: true,
        },
    )
    .unwrap();
    let api = clinicbox_api::ApiState::new(store.clone(), Default::default())
        .await
        .unwrap();
    clinicbox_api::demo::load_demo(&api).await.unwrap();
    let tracker = clinicbox_tracker::Tracker::start(api.clone(), Default::default())
        .await
        .unwrap();
    router(AppParts {
        lifecycle: Lifecycle::new(store.clone(), 120, bodies),
        api,
        tracker,
        status: status_without_presence(&store),
        limits: RequestLimits {
            max_uri_bytes: 4096,
        },
    })
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

async fn send(app: &Router, req: Request<Body>) -> Answer {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    Answer {
        status,
        headers,
        body,
    }
}

fn get(uri: &str) -> Request<Body> {
    Request::builder()
        .uri(uri)
        .header(header::AUTHORIZATION, ANDROID)
        .body(Body::empty())
        .unwrap()
}

#[tokio::test]
async fn errors_are_web_messages_under_api_and_pages_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(&dir, BodyLimits::default()).await;

    // A target past the limit: 414, as a WebMessage naming the limit, echoing nothing.
    let long = format!("/api/me?fields={}", "id,".repeat(3000));
    let a = send(&app, get(&long)).await;
    assert_eq!(a.status, StatusCode::URI_TOO_LONG);
    let msg = a.json();
    assert_eq!(msg["httpStatusCode"], 414);
    assert!(msg["message"].as_str().unwrap().contains("4096"), "{msg}");
    assert!(a.body.len() < 400);
    // Outside /api, the same as a page.
    let a = send(&app, get(&format!("/setup?x={}", "y".repeat(5000)))).await;
    assert_eq!(a.status, StatusCode::URI_TOO_LONG);
    assert!(
        a.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );

    // A multipart upload that is not multipart: a WebMessage, not axum's plain text.
    let a = send(
        &app,
        Request::builder()
            .method(Method::POST)
            .uri("/api/fileResources")
            .header(header::AUTHORIZATION, ANDROID)
            .header(header::CONTENT_TYPE, "multipart/form-data; boundary=zz")
            .body(Body::from("not multipart at all"))
            .unwrap(),
    )
    .await;
    assert!(a.status.is_client_error(), "{}", a.status);
    assert_eq!(a.json()["httpStatusCode"], a.status.as_u16());

    // An unknown page outside /api: a page; under /api: a WebMessage.
    let a = send(&app, get("/no/such/page")).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    let a = send(&app, get("/api/noSuchEndpoint")).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(a.json()["httpStatusCode"], 404);

    // Every answer carries the box's security headers.
    for uri in ["/", "/api/me", "/api/noSuchEndpoint", "/setup"] {
        let a = send(&app, get(uri)).await;
        assert_eq!(a.headers["x-content-type-options"], "nosniff", "{uri}");
        assert_eq!(a.headers["x-frame-options"], "DENY", "{uri}");
        let csp = a.headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.contains("frame-ancestors 'none'"), "{uri}: {csp}");
    }
}

#[tokio::test]
async fn an_oversized_or_stalled_body_is_refused_without_holding_the_write_gate() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(
        &dir,
        BodyLimits {
            idle: Duration::from_millis(300),
            max_bytes: 1024,
        },
    )
    .await;
    let post = |body: Body| {
        Request::builder()
            .method(Method::POST)
            .uri("/api/tracker?async=false")
            .header(header::AUTHORIZATION, ANDROID)
            .header(header::CONTENT_TYPE, "application/json")
            .body(body)
            .unwrap()
    };
    let a = send(&app, post(Body::from(vec![b' '; 4096]))).await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(a.json()["message"].as_str().unwrap().contains("1024"));

    // One chunk, then nothing: refused once the body has been idle for the limit.
    let stalled = futures_stalled();
    let a = send(&app, post(Body::from_stream(stalled))).await;
    assert_eq!(a.status, StatusCode::REQUEST_TIMEOUT, "{}", a.text());
    assert_eq!(a.json()["httpStatusCode"], 408);
}

/// A body stream that sends `{"trac` and then never anything again.
fn futures_stalled()
-> impl futures_util::Stream<Item = Result<axum::body::Bytes, std::io::Error>> + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<axum::body::Bytes, std::io::Error>>(1);
    tokio::spawn(async move {
        let _ = tx
            .send(Ok(axum::body::Bytes::from_static(b"{\"trac")))
            .await;
        // Keep the sender alive (the stream stays open) well past the test's idle limit.
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(tx);
    });
    tokio_stream_from(rx)
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
