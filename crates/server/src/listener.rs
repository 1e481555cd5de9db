//! The accept loop: TCP (and TLS) in, HTTP/1.1 connections out.
//!
//! Written by hand rather than `axum::serve` for five things it needs:
//! the client's address on every request ([`ClientAddr`], for per-address
//! limits) and a place in the per-peer count for every connection
//! ([`Gate`]), a header-read
//! timeout (a client that never finishes its request — slowloris — is cut
//! after `handshake_timeout`), TLS with rustls, `EMFILE` handling that
//! logs once a minute and backs off instead of spinning, and a way for a
//! handler to end its connection ([`Hangup`]).
//!
//! Invariant: a draining node keeps accepting plain HTTP until `run`
//! returns. The drain needs it: `/readyz` must answer 503 (a refused
//! connection reads as a crashed node), and long-polling clients collect
//! their `disconnect` on their next poll, often a new connection. New
//! sessions are refused by their handlers (`Node::is_draining`), not here.

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tower_service::Service;

use crate::admission::{Admission, SocketTicket};
use crate::client_addr::{ClientAddr, TrustedProxies};
use crate::metrics::Metrics;
use crate::workers::Workers;

/// How long open connections get to finish once the listener closes.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// Who may connect, and as whom.
#[derive(Clone)]
pub struct Gate {
    pub admission: Arc<Admission>,
    pub trusted: Arc<TrustedProxies>,
    pub metrics: Arc<Metrics>,
}

impl Gate {
    /// A place for a connection from `peer`: none needed for a trusted
    /// proxy (its connections carry many clients).
    fn admit(&self, peer: SocketAddr) -> Result<Option<SocketTicket>, crate::upgrade::Refusal> {
        if self.trusted.trusts(peer.ip()) {
            return Ok(None);
        }
        self.admission.hold_socket(peer.ip()).inspect_err(|refusal| {
            self.metrics.rejections.record(refusal, Instant::now());
        })
    }
}

/// Serves `app` on `listener`.
///
/// `stop` turning true means the node started draining: this returns, but
/// the accept loop it started goes on until the sender is dropped (`run`
/// returned), so the drain is served; then the listener closes and open
/// connections get [`CLOSE_WAIT`] to finish. Upgraded connections are
/// detached and live on until their sessions end.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    handshake_timeout: Duration,
    gate: Gate,
    workers: Workers,
    mut stop: watch::Receiver<bool>,
) {
    tokio::spawn(accept(listener, app, tls, handshake_timeout, gate, workers, stop.clone()));
    let _ = stop.wait_for(|s| *s).await;
}

/// Accepts until the sender of `stop` is dropped; each connection runs on
/// one of `workers`' runtimes.
async fn accept(
    listener: TcpListener,
    app: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    handshake_timeout: Duration,
    gate: Gate,
    workers: Workers,
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
            () = closed(&mut stop) => break,
        };
        let place = match gate.admit(peer) {
            Ok(place) => place,
            Err(refusal) => {
                tokio::spawn(refuse(tcp, refusal.to_http1(), tls.is_some()));
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let app = app.clone();
        let tls = tls.clone();
        let stop = stop.clone();
        let trusted = gate.trusted.clone();
        workers.spawn(tcp, move |tcp| async move {
            let _place = place;
            match tls {
                None => serve_connection(tcp, peer, trusted, app, handshake_timeout, stop).await,
                Some(acceptor) => match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => serve_connection(stream, peer, trusted, app, handshake_timeout, stop).await,
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                },
            }
        });
    }
}

/// Lets a handler end the connection its request came on, at once: for a
/// response that may never finish because the client stopped reading (an
/// event stream whose session ended), where waiting would keep the socket
/// and its buffers forever. Every request carries one in its extensions.
///
/// Use it only on a response marked `Connection: close`, so that nothing
/// else can be using the connection by the time it fires.
#[derive(Clone, Default)]
pub struct Hangup(Arc<Notify>);

impl Hangup {
    /// Ends the connection after `grace`, unless it ended before (then
    /// nothing happens).
    pub fn after(&self, grace: Duration) {
        let connection: Weak<Notify> = Arc::downgrade(&self.0);
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            if let Some(c) = connection.upgrade() {
                c.notify_one();
            }
        });
    }
}

/// A socket that can end with a reset: its unsent bytes are dropped and
/// its buffers freed at once, instead of waiting, orphaned, on a peer that
/// does not read.
trait Reset {
    fn reset_on_close(&self);
}

impl Reset for TcpStream {
    fn reset_on_close(&self) {
        let _ = self.set_zero_linger();
    }
}

impl Reset for tokio_rustls::server::TlsStream<TcpStream> {
    fn reset_on_close(&self) {
        self.get_ref().0.reset_on_close();
    }
}

/// Answers a connection refused at accept and closes it. Plain HTTP gets
/// the refusal's response (after which what the client sent is read and
/// dropped for up to a second, so closing does not reset the answer
/// away); TLS is just closed, as no handshake was made.
async fn refuse(mut tcp: TcpStream, response: Vec<u8>, tls: bool) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if tls {
        return;
    }
    let answered = async {
        tcp.write_all(&response).await?;
        tcp.shutdown().await?;
        let mut sink = [0u8; 1024];
        while tcp.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), answered).await;
}

async fn serve_connection<S>(
    io: S,
    peer: SocketAddr,
    trusted: Arc<TrustedProxies>,
    app: Router,
    handshake_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Reset + Unpin + Send + 'static,
{
    let hangup = Hangup::default();
    let service = hyper::service::service_fn({
        let hangup = hangup.clone();
        move |mut req: hyper::Request<Incoming>| {
            let client = ClientAddr { client: trusted.client_of(peer.ip(), req.headers()), peer: peer.ip() };
            req.extensions_mut().insert(client);
            req.extensions_mut().insert(hangup.clone());
            let mut app = app.clone();
            async move { app.call(req).await }
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(handshake_timeout);
    let mut conn = builder.serve_connection(TokioIo::new(io), service).with_upgrades();
    tokio::select! {
        result = &mut conn => {
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
            }
        }
        () = closed(&mut stop) => {
            std::pin::Pin::new(&mut conn).graceful_shutdown();
            let _ = tokio::time::timeout(CLOSE_WAIT, conn).await;
        }
        () = hangup.0.notified() => {
            tracing::debug!(%peer, "connection hung up: its response could not finish");
            if let Some(parts) = conn.into_parts() {
                parts.io.inner().reset_on_close();
            }
        }
    }
}

/// Resolves once the sender of `stop` is dropped (`run` returned).
async fn closed(stop: &mut watch::Receiver<bool>) {
    while stop.changed().await.is_ok() {}
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
