//! Serving the app on a socket, HTTP or HTTPS, with the same connection rules for both: a
//! client that sends half a header is cut off, and one graceful handle stops every listener.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum_server::Handle;
use hyper_util::rt::TokioTimer;
use rustls::ServerConfig;

/// Binds a listener (non-blocking, for axum-server).
pub fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let l = std::net::TcpListener::bind(addr)?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Connection limits shared by HTTP and HTTPS.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// A request's header must be in within this: a slow-header client holds no connection
    /// (nor a shutdown) for longer.
    pub header_timeout: Duration,
}

fn configure<A>(server: &mut axum_server::Server<SocketAddr, A>, limits: ConnectionLimits) {
    server
        .http_builder()
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
}

/// Serves `app` over plain HTTP on `listener` until `handle` is told to shut down.
pub async fn serve_http(
    listener: std::net::TcpListener,
    app: Router,
    handle: Handle<SocketAddr>,
    limits: ConnectionLimits,
) -> io::Result<()> {
    let mut server = axum_server::from_tcp(listener)?.handle(handle);
    configure(&mut server, limits);
    server
        .serve(app.into_make_service_with_connect_info::<SocketAddr>())
        .await
}

/// Serves `app` over TLS on `listener` until `handle` is told to shut down.
pub async fn serve_https(
    listener: std::net::TcpListener,
    config: Arc<ServerConfig>,
    app: Router,
    handle: Handle<SocketAddr>,
    limits: ConnectionLimits,
) -> io::Result<()> {
    let tls = axum_server::tls_rustls::RustlsConfig::from_config(config);
    let mut server = axum_server::from_tcp_rustls(listener, tls)?.handle(handle);
    configure(&mut server, limits);
    server
        .serve(app.into_make_service_with_connect_info::<SocketAddr>())
        .await
}
