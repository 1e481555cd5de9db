//! TLS failures named from the certificate itself, not from the verifier's
//! first complaint.
//!
//! Why: rustls (webpki) stops at the first rule a chain breaks, and its
//! first rule is not the one a user needs to hear. `openssl req -x509`
//! with Debian's default config marks a self-signed certificate
//! `CA:TRUE`, which webpki refuses as `CaUsedAsEndEntity` before it ever
//! asks whether the certificate is trusted, has the right name or is in
//! date; and given that same certificate with `--ca-file` (the user saying
//! "I trust this one"), webpki still refuses it where OpenSSL, browsers,
//! Python and Node accept a trusted certificate presented as itself.
//!
//! So the doctor's verifier ([`TrustingVerifier`]) records the chain the
//! server sent and accepts a leaf that is itself in `--ca-file` (checking
//! its dates and names the way those clients do), and [`diagnose`] reads
//! the recorded chain: self-signed or not, CA flag, names, dates, and
//! whether an intermediate is missing.

use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, Error, SignatureScheme};

use crate::observe::Tls;

/// What one certificate says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Facts {
    pub subject: String,
    pub issuer: String,
    /// Subject and issuer are the same name.
    pub self_signed: bool,
    /// `basicConstraints CA:TRUE`.
    pub is_ca: bool,
    /// DNS names and IP addresses in subjectAltName.
    pub names: Vec<String>,
    /// The subject's CN, which no current client matches against.
    pub common_name: Option<String>,
    pub not_before: i64,
    pub not_after: i64,
}

impl Facts {
    pub fn of(der: &[u8]) -> Option<Facts> {
        use x509_parser::extensions::GeneralName;
        let (_, c) = x509_parser::parse_x509_certificate(der).ok()?;
        let names = c
            .subject_alternative_name()
            .ok()
            .flatten()
            .map(|san| {
                san.value
                    .general_names
                    .iter()
                    .filter_map(|n| match n {
                        GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
                        GeneralName::IPAddress(ip) => ip_text(ip),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let common_name = c.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()).map(str::to_owned);
        Some(Facts {
            subject: c.subject().to_string(),
            issuer: c.issuer().to_string(),
            self_signed: c.subject().as_raw() == c.issuer().as_raw(),
            is_ca: c.basic_constraints().ok().flatten().is_some_and(|b| b.value.ca),
            names,
            common_name,
            not_before: c.validity().not_before.timestamp(),
            not_after: c.validity().not_after.timestamp(),
        })
    }

    /// Whether a subjectAltName covers `host` (one `*.` label at the left
    /// at most, as every client does).
    pub fn covers(&self, host: &str) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        self.names.iter().any(|n| match n.strip_prefix("*.") {
            Some(suffix) => host.split_once('.').is_some_and(|(first, rest)| !first.is_empty() && rest == suffix),
            None => *n == host,
        })
    }

    /// Why the dates refuse it at `now` (unix seconds), if they do.
    fn date_problem(&self, now: i64) -> Option<String> {
        if now > self.not_after {
            return Some(format!(
                "it expired on {} ({} days ago)",
                day(self.not_after),
                (now - self.not_after) / 86_400
            ));
        }
        if now < self.not_before {
            return Some(format!(
                "it is not valid until {} (in {} days): issued with a future start date, or this machine's clock is behind",
                day(self.not_before),
                (self.not_before - now + 86_399) / 86_400
            ));
        }
        None
    }

    /// Why the names refuse it for `host`, if they do.
    fn name_problem(&self, host: &str) -> Option<String> {
        if self.covers(host) {
            return None;
        }
        Some(match (&self.common_name, self.names.is_empty()) {
            (Some(cn), true) => format!(
                "it has no subjectAltName, only CN={cn}; browsers (and Go, rustls) ignore the CN, so they refuse it \
                 even where curl or Python, which still fall back to the CN, connect"
            ),
            _ => format!("it covers {}, not {host}", self.names.join(", ")),
        })
    }
}

fn ip_text(ip: &[u8]) -> Option<String> {
    match ip.len() {
        4 => Some(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(ip).ok()?).to_string()),
        16 => Some(std::net::Ipv6Addr::from(<[u8; 16]>::try_from(ip).ok()?).to_string()),
        _ => None,
    }
}

/// `YYYY-MM-DD` of a unix time.
fn day(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The doctor's certificate verifier; see the module docs.
#[derive(Debug)]
pub struct TrustingVerifier {
    inner: Arc<WebPkiServerVerifier>,
    /// The certificates of `--ca-file`: a leaf equal to one of them is
    /// trusted as itself.
    user: Vec<CertificateDer<'static>>,
    /// The chain the server sent, leaf first.
    pub seen: Mutex<Vec<CertificateDer<'static>>>,
    /// After a refusal: whether the chain leads to a trusted root all the
    /// same (the refusal was about dates or names).
    pub trusted: Mutex<Option<bool>>,
}

impl TrustingVerifier {
    pub fn new(inner: Arc<WebPkiServerVerifier>, user: Vec<CertificateDer<'static>>) -> TrustingVerifier {
        TrustingVerifier { inner, user, seen: Mutex::new(Vec::new()), trusted: Mutex::new(None) }
    }

    /// Whether `--ca-file` holds this very certificate.
    fn trusted_as_itself(&self, cert: &CertificateDer<'_>) -> bool {
        self.user.iter().any(|u| u.as_ref() == cert.as_ref())
    }
}

impl ServerCertVerifier for TrustingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        *self.seen.lock().expect("seen lock poisoned") =
            std::iter::once(end_entity).chain(intermediates).map(|c| c.clone().into_owned()).collect();
        let facts = Facts::of(end_entity.as_ref()).ok_or(Error::InvalidCertificate(CertificateError::BadEncoding))?;
        if !self.trusted_as_itself(end_entity) {
            let verdict = self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now);
            if verdict.is_err() {
                // webpki checks dates before it looks for an issuer, so ask
                // again at a moment the leaf is valid: does the chain lead
                // to a trusted root at all?
                let then =
                    UnixTime::since_unix_epoch(std::time::Duration::from_secs(facts.not_before.max(0) as u64 + 1));
                let again = self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, then);
                let trusted = matches!(
                    again,
                    Ok(_)
                        | Err(Error::InvalidCertificate(
                            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
                        ))
                );
                *self.trusted.lock().expect("trusted lock poisoned") = Some(trusted);
            }
            return verdict;
        }
        *self.trusted.lock().expect("trusted lock poisoned") = Some(true);
        let now = now.as_secs() as i64;
        if now > facts.not_after {
            return Err(Error::InvalidCertificate(CertificateError::Expired));
        }
        if now < facts.not_before {
            return Err(Error::InvalidCertificate(CertificateError::NotValidYet));
        }
        if !facts.covers(&server_name.to_str()) {
            return Err(Error::InvalidCertificate(CertificateError::NotValidForName));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Names a certificate failure from the chain the server sent (leaf
/// first), the host asked for, the time (unix seconds), whether the user
/// trusts the chain (`--ca-file` holds the leaf or its issuer) and what the
/// verifier said.
///
/// Order: when the user trusts the chain, the dates and then the names are
/// what is wrong; otherwise trust is, with any date or name problem added,
/// so fixing trust alone does not end in a second surprise.
pub fn diagnose(chain: &[CertificateDer<'_>], host: &str, now: i64, trusted: bool, error: &str) -> Tls {
    let Some(leaf) = chain.first().and_then(|c| Facts::of(c.as_ref())) else {
        return Tls::Failed(error.to_owned());
    };
    let dates = leaf.date_problem(now);
    let names = leaf.name_problem(host);
    if trusted {
        if let Some(d) = dates {
            return Tls::Expired(format!("certificate {}: {d}", leaf.subject));
        }
        if let Some(n) = names {
            return Tls::NameMismatch(format!("certificate {}: {n}", leaf.subject));
        }
    }
    let why = if leaf.self_signed {
        let ca = if leaf.is_ca { ", marked CA:TRUE (as `openssl req -x509` makes it)" } else { "" };
        format!("the certificate {} is self-signed{ca}", leaf.subject)
    } else if chain.len() == 1 {
        format!(
            "the certificate {} is issued by {}, and the server sent no intermediate certificate: \
             either the server's chain is incomplete (serve the full chain, e.g. fullchain.pem) \
             or {} is a private CA",
            leaf.subject, leaf.issuer, leaf.issuer
        )
    } else {
        format!("the chain from {} does not lead to a trusted root (issued by {})", leaf.subject, leaf.issuer)
    };
    let also: Vec<String> = [dates, names].into_iter().flatten().collect();
    let also = if also.is_empty() { String::new() } else { format!("; also, {}", also.join("; ")) };
    Tls::Untrusted(format!("{why}{also} [{error}]"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(names: &[&str], cn: Option<&str>) -> Facts {
        Facts {
            subject: "CN=x".into(),
            issuer: "CN=x".into(),
            self_signed: true,
            is_ca: true,
            names: names.iter().map(|s| s.to_string()).collect(),
            common_name: cn.map(str::to_owned),
            not_before: 1_000,
            not_after: 2_000,
        }
    }

    #[test]
    fn names_match_like_clients_do() {
        let f = facts(&["*.example.com", "127.0.0.1", "api.test"], None);
        assert!(f.covers("a.example.com") && f.covers("API.test") && f.covers("127.0.0.1"));
        assert!(!f.covers("example.com") && !f.covers("a.b.example.com") && !f.covers("localhost"));
        let cn_only = facts(&[], Some("localhost"));
        assert!(!cn_only.covers("localhost"), "the CN is ignored");
        assert!(cn_only.name_problem("localhost").unwrap().contains("no subjectAltName"));
    }

    #[test]
    fn dates_are_named_with_the_day() {
        let f = Facts { not_before: 1_700_000_000, not_after: 1_700_086_400, ..facts(&[], None) };
        assert!(f.date_problem(1_700_000_100).is_none());
        assert!(f.date_problem(1_800_000_000).unwrap().contains("expired on 2023-11-15"));
        assert!(f.date_problem(1_600_000_000).unwrap().contains("not valid until 2023-11-14"));
        assert_eq!(day(0), "1970-01-01");
        assert_eq!(day(951_782_400), "2000-02-29");
    }
}
