//! The accept loop: TCP (and TLS) in, HTTP/1.1 connections out.
//!
//! Written by hand rather than `axum::serve` for four things it needs:
//! the peer address on every request (per-IP limits), a header-read
//! timeout (a client that never finishes its request — slowloris — is cut
//! after `handshake_timeout`), TLS with rustls, and `EMFILE` handling that
//! logs once a minute and backs off instead of spinning.

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower_service::Service;

/// Serves `app` on `listener` until `stop` turns true. Upgraded connections
/// are detached and live on; plain HTTP connections are closed gracefully.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    handshake_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut last_fd_warning: Option<Instant> = None;
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    backoff_after_accept_error(&e, &mut last_fd_warning).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => break,
        };
        let _ = tcp.set_nodelay(true);
        let app = app.clone();
        let tls = tls.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            match tls {
                None => serve_connection(TokioIo::new(tcp), peer, app, handshake_timeout, stop).await,
                Some(acceptor) => match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => serve_connection(TokioIo::new(stream), peer, app, handshake_timeout, stop).await,
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                },
            }
        });
    }
}

async fn serve_connection<I>(
    io: I,
    peer: SocketAddr,
    app: Router,
    handshake_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        let mut app = app.clone();
        async move { app.call(req).await }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(handshake_timeout);
    let conn = builder.serve_connection(io, service).with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
            }
        }
        () = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(1), conn).await;
        }
    }
}

/// Resolves once `stop` is true (dropping the watch guard right away, so the
/// future stays `Send`).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// After a failed `accept`: out of file descriptors is logged at most once a
/// minute and backed off from for 100 ms (never a spin, never a 1 s stall of
/// the whole listener); per-connection errors are ignored.
async fn backoff_after_accept_error(e: &std::io::Error, last_warning: &mut Option<Instant>) {
    use std::io::ErrorKind::*;
    if matches!(e.kind(), ConnectionAborted | ConnectionReset | Interrupted | WouldBlock) {
        return;
    }
    // EMFILE (24) and ENFILE (23): the process or the system is out of file descriptors.
    let out_of_fds = matches!(e.raw_os_error(), Some(23 | 24));
    if last_warning.is_none_or(|at| at.elapsed() > Duration::from_secs(60)) {
        if out_of_fds {
            tracing::error!(error = %e, "out of file descriptors: refusing connections until some close (raise `ulimit -n` or lower max_connections)");
        } else {
            tracing::error!(error = %e, "accept failed");
        }
        *last_warning = Some(Instant::now());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// A rustls server config from PEM files (certificate chain and key).
pub fn tls_acceptor(cert: &std::path::Path, key: &std::path::Path) -> Result<tokio_rustls::TlsAcceptor, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| format!("cannot read the TLS certificate {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", cert.display()));
    }
    let key =
        PrivateKeyDer::from_pem_file(key).map_err(|e| format!("cannot read the TLS key {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("the TLS certificate and key do not fit together: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
