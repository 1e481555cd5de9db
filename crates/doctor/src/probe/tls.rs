//! The TLS layer of the probe: the client config (with the verifier that
//! records what the server sent), the handshake as a stage, and what a
//! failed handshake means.

use super::*;

/// The client config, with the verifier that records what the server
/// sent (see [`crate::certificate`]).
fn tls_config(args: &DoctorArgs) -> Result<(rustls::ClientConfig, Arc<TrustingVerifier>), String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    let mut user = Vec::new();
    if let Some(path) = &args.ca_file {
        let certs: Vec<CertificateDer> = CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("cannot read --ca-file {}: {e}", path.display()))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("--ca-file {}: {e}", path.display()))?;
        for cert in certs {
            roots.add(cert.clone()).map_err(|e| format!("--ca-file {}: {e}", path.display()))?;
            user.push(cert);
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| e.to_string())?;
    let verifier = Arc::new(TrustingVerifier::new(webpki, user));
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((config, verifier))
}

pub(crate) async fn tls_connect(
    args: &DoctorArgs,
    target: &Target,
    tcp: TcpStream,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, (std::io::Error, Option<Tls>)> {
    let (config, verifier) = tls_config(args).map_err(|e| (std::io::Error::other(e), None))?;
    let name = rustls::pki_types::ServerName::try_from(target.host.clone())
        .map_err(|e| (std::io::Error::other(format!("{}: {e}", target.host)), None))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let e = match timeout(args.timeout, connector.connect(name, tcp)).await {
        Ok(Ok(stream)) => return Ok(stream),
        Ok(Err(e)) => e,
        Err(_) => std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out"),
    };
    // A refused certificate is named from the certificate itself.
    let chain = verifier.seen.lock().expect("seen lock poisoned").clone();
    let trusted = *verifier.trusted.lock().expect("trusted lock poisoned");
    let refused = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>());
    let named = match (refused, trusted) {
        (Some(rustls::Error::InvalidCertificate(_)), Some(trusted)) if !chain.is_empty() => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            Some(certificate::diagnose(&chain, &target.host, now, trusted, &e.to_string()))
        }
        _ => None,
    };
    Err((e, named))
}

pub(super) async fn tls_handshake(
    run: &mut Run<'_>,
    target: &Target,
    tcp: TcpStream,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ()> {
    let t = Instant::now();
    match tls_connect(run.args, target, tcp).await {
        Ok(stream) => {
            let (_, conn) = stream.get_ref();
            let version = conn.protocol_version().map(|v| format!("{v:?}")).unwrap_or_default().replace('_', ".");
            let alpn = conn.alpn_protocol().map(|a| String::from_utf8_lossy(a).into_owned());
            let leaf = conn.peer_certificates().and_then(|c| c.first()).cloned();
            let (expires_in_days, subject) = leaf.map(|c| leaf_facts(&c)).unwrap_or((None, String::new()));
            let mut detail = format!("{version}, ALPN {}", alpn.as_deref().unwrap_or("none"));
            if !subject.is_empty() {
                detail.push_str(&format!(", certificate {subject}"));
            }
            let status = match expires_in_days {
                Some(d) if d < 14 => {
                    detail.push_str(&format!(", EXPIRES in {d} days"));
                    Status::Warn
                }
                Some(d) => {
                    detail.push_str(&format!(", expires in {d} days"));
                    Status::Ok
                }
                None => Status::Ok,
            };
            run.stage("tls", status, t, detail);
            run.o.tls = Some(Tls::Ok { version, alpn, expires_in_days });
            Ok(stream)
        }
        Err((e, named)) => {
            let tls = named.unwrap_or_else(|| classify_tls_error(&e));
            let detail = match &tls {
                Tls::Untrusted(d) | Tls::NameMismatch(d) | Tls::Expired(d) => d.clone(),
                _ => e.to_string(),
            };
            run.stage("tls", Status::Failed, t, detail);
            run.o.tls = Some(tls);
            Err(())
        }
    }
}

fn leaf_facts(cert: &rustls::pki_types::CertificateDer<'_>) -> (Option<i64>, String) {
    match x509_parser::parse_x509_certificate(cert.as_ref()) {
        Ok((_, c)) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            let days = (c.validity().not_after.timestamp() - now) / 86_400;
            let names: Vec<String> = c
                .subject_alternative_name()
                .ok()
                .flatten()
                .map(|san| san.value.general_names.iter().map(|n| n.to_string()).collect())
                .unwrap_or_default();
            let subject = if names.is_empty() { c.subject().to_string() } else { names.join(" ") };
            (Some(days), subject)
        }
        Err(_) => (None, String::new()),
    }
}

fn classify_tls_error(e: &std::io::Error) -> Tls {
    use rustls::{CertificateError, Error};
    if e.kind() == std::io::ErrorKind::TimedOut {
        return Tls::Timeout;
    }
    let text = e.to_string();
    match e.get_ref().and_then(|inner| inner.downcast_ref::<Error>()) {
        Some(Error::InvalidCertificate(c)) => match c {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => Tls::Untrusted(text),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                Tls::NameMismatch(text)
            }
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. } => Tls::Expired(text),
            _ => Tls::Failed(text),
        },
        Some(Error::InvalidMessage(_)) => Tls::NotTls(format!("the server did not answer in TLS ({text})")),
        _ if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            Tls::NotTls("the server closed the connection on the TLS ClientHello".into())
        }
        _ => Tls::Failed(text),
    }
}
