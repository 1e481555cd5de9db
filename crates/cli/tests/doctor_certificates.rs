//! The doctor on certificates made the way people make them: with the
//! `openssl` command and the distribution's default config, at test time,
//! in every shape (issue 14). `holdfast serve --tls-cert … --tls-key …`
//! serves each; the doctor must name each TLS cause, and call every
//! healthy one healthy, whatever the certificate looks like.
//!
//! Needs openssl: `apt-get install -y openssl` (scripts/test does it).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{scratch, serve, Served};

/// Runs `openssl ARGS` in `dir`.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("openssl cannot run ({e}): install it with `apt-get install -y openssl`"));
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA (`NAME.pem`, `NAME.key`) the way `openssl req -x509` makes one.
fn ca(dir: &Path, name: &str) {
    let (key, pem, subj) = (format!("{name}.key"), format!("{name}.pem"), format!("/CN=holdfast test {name}"));
    openssl(
        dir,
        &[
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &pem, "-days", "30", "-subj",
            &subj,
        ],
    );
}

/// A certificate `NAME.pem` for key `NAME.key`, signed by `issuer`, with
/// these extensions (`openssl x509 -req -extfile`); `dates` as
/// `(startdate, enddate)` (`YYYYMMDDHHMMSSZ`) go through `openssl ca`,
/// the one command of OpenSSL 3.0 that sets any dates.
fn signed(dir: &Path, name: &str, issuer: &str, cn: &str, extensions: &str, dates: Option<(&str, &str)>) {
    let (key, csr, pem) = (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"));
    let subj = format!("/CN={cn}");
    openssl(dir, &["req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &csr, "-subj", &subj]);
    let ext = format!("{name}.ext");
    std::fs::write(dir.join(&ext), format!("[v3]\n{extensions}\n")).unwrap();
    let (ca_pem, ca_key) = (format!("{issuer}.pem"), format!("{issuer}.key"));
    match dates {
        None => openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &ca_pem,
                "-CAkey",
                &ca_key,
                "-CAcreateserial",
                "-days",
                "30",
                "-out",
                &pem,
                "-extfile",
                &ext,
                "-extensions",
                "v3",
            ],
        ),
        Some((start, end)) => {
            let db = dir.join(format!("{name}-db"));
            std::fs::create_dir_all(&db).unwrap();
            std::fs::write(db.join("index.txt"), "").unwrap();
            std::fs::write(db.join("serial"), "1000\n").unwrap();
            let conf = format!(
                "[ca]\ndefault_ca = d\n[d]\ndatabase = {db}/index.txt\nnew_certs_dir = {db}\nserial = {db}/serial\n\
                 default_md = sha256\npolicy = p\nunique_subject = no\n[p]\ncommonName = supplied\n[v3]\n{extensions}\n",
                db = db.display(),
            );
            let conf_file = format!("{name}-ca.cnf");
            std::fs::write(dir.join(&conf_file), conf).unwrap();
            openssl(
                dir,
                &[
                    "ca",
                    "-batch",
                    "-config",
                    &conf_file,
                    "-cert",
                    &ca_pem,
                    "-keyfile",
                    &ca_key,
                    "-in",
                    &csr,
                    "-out",
                    &pem,
                    "-startdate",
                    start,
                    "-enddate",
                    end,
                    "-extensions",
                    "v3",
                    "-notext",
                ],
            );
        }
    }
}

const LEAF: &str = "basicConstraints = CA:FALSE\nsubjectAltName = DNS:localhost, IP:127.0.0.1";

/// Every certificate shape, made in `dir`.
fn make_all(dir: &Path) {
    // Self-signed with the default config: CA:TRUE.
    let selfsigned = |name: &str, san: &str| {
        let (key, pem) = (format!("{name}.key"), format!("{name}.pem"));
        let san = format!("subjectAltName={san}");
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &pem,
                "-days",
                "30",
                "-subj",
                "/CN=localhost",
                "-addext",
                &san,
            ],
        );
    };
    selfsigned("self", "DNS:localhost,IP:127.0.0.1");
    selfsigned("self-wrongname", "DNS:other.example");
    ca(dir, "ca");
    signed(dir, "leaf", "ca", "localhost", LEAF, None);
    signed(
        dir,
        "wrongname",
        "ca",
        "other.example",
        "basicConstraints = CA:FALSE\nsubjectAltName = DNS:other.example",
        None,
    );
    signed(dir, "cn-only", "ca", "localhost", "basicConstraints = CA:FALSE", None);
    signed(dir, "expired", "ca", "localhost", LEAF, Some(("20200101000000Z", "20200201000000Z")));
    signed(dir, "future", "ca", "localhost", LEAF, Some(("20400101000000Z", "20400201000000Z")));
    // A root, an intermediate it signs, and a leaf the intermediate signs.
    ca(dir, "root");
    signed(
        dir,
        "inter",
        "root",
        "holdfast test intermediate",
        "basicConstraints = critical, CA:TRUE\nkeyUsage = critical, keyCertSign, cRLSign",
        None,
    );
    signed(dir, "chained", "inter", "localhost", LEAF, None);
    let full = [
        std::fs::read_to_string(dir.join("chained.pem")).unwrap(),
        std::fs::read_to_string(dir.join("inter.pem")).unwrap(),
    ];
    std::fs::write(dir.join("fullchain.pem"), full.concat()).unwrap();
}

/// `holdfast serve` with certificate `cert` (a file in `dir`) and key `key`.
fn tls_server(dir: &Path, cert: &str, key: &str) -> Served {
    let (cert, key) = (dir.join(cert), dir.join(key));
    serve(0, &["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()])
}

/// Whether Python's `ssl` (OpenSSL, as most non-browser clients use it)
/// completes a verified handshake with `host` on `port`.
fn python_connects(port: u16, host: &str, ca_file: Option<&Path>) -> bool {
    let script = "import socket, ssl, sys\n\
        ctx = ssl.create_default_context(cafile=sys.argv[3] if len(sys.argv) > 3 else None)\n\
        s = socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=5)\n\
        ctx.wrap_socket(s, server_hostname=sys.argv[2]).close()\n";
    let mut cmd = Command::new("python3");
    cmd.args(["-c", script, &port.to_string(), host]);
    if let Some(ca) = ca_file {
        cmd.arg(ca);
    }
    cmd.output().unwrap().status.success()
}

struct Case {
    name: &'static str,
    cert: &'static str,
    key: &'static str,
    ca_file: Option<&'static str>,
    host: &'static str,
    cause: &'static str,
    mentions: &'static [&'static str],
}

#[test]
fn every_certificate_openssl_makes_is_named_and_every_healthy_one_is_healthy() {
    let dir = scratch("doctor-certificates");
    make_all(&dir);
    let case =
        |name, cert, key, ca_file, host, cause, mentions| Case { name, cert, key, ca_file, host, cause, mentions };
    let cases = [
        case(
            "self-signed CA:TRUE, not trusted",
            "self.pem",
            "self.key",
            None,
            "localhost",
            "tls_untrusted_certificate",
            &["self-signed", "CA:TRUE", "--ca-file"][..],
        ),
        case(
            "self-signed CA:TRUE, trusted with --ca-file",
            "self.pem",
            "self.key",
            Some("self.pem"),
            "localhost",
            "healthy",
            &[],
        ),
        case(
            "self-signed CA:TRUE by IP, trusted",
            "self.pem",
            "self.key",
            Some("self.pem"),
            "127.0.0.1",
            "healthy",
            &[],
        ),
        case(
            "self-signed CA:TRUE for another name, trusted",
            "self-wrongname.pem",
            "self-wrongname.key",
            Some("self-wrongname.pem"),
            "localhost",
            "tls_name_mismatch",
            &["other.example", "subjectAltName"],
        ),
        case(
            "leaf from a private CA, not trusted",
            "leaf.pem",
            "leaf.key",
            None,
            "localhost",
            "tls_untrusted_certificate",
            &["holdfast test ca", "private CA"],
        ),
        case("leaf from a private CA, CA given", "leaf.pem", "leaf.key", Some("ca.pem"), "localhost", "healthy", &[]),
        case(
            "missing intermediate, root given",
            "chained.pem",
            "chained.key",
            Some("root.pem"),
            "localhost",
            "tls_untrusted_certificate",
            &["no intermediate", "full chain"],
        ),
        case("full chain, root given", "fullchain.pem", "chained.key", Some("root.pem"), "localhost", "healthy", &[]),
        case(
            "wrong name, CA given",
            "wrongname.pem",
            "wrongname.key",
            Some("ca.pem"),
            "localhost",
            "tls_name_mismatch",
            &["other.example", "not localhost"],
        ),
        case(
            "wrong name, not trusted either",
            "wrongname.pem",
            "wrongname.key",
            None,
            "localhost",
            "tls_untrusted_certificate",
            &["other.example"],
        ),
        case(
            "expired, CA given",
            "expired.pem",
            "expired.key",
            Some("ca.pem"),
            "localhost",
            "tls_expired",
            &["expired on 2020-02-01", "Renew"],
        ),
        case(
            "not yet valid, CA given",
            "future.pem",
            "future.key",
            Some("ca.pem"),
            "localhost",
            "tls_expired",
            &["not valid until 2040-01-01", "clock"],
        ),
        case(
            "expired and not trusted",
            "expired.pem",
            "expired.key",
            None,
            "localhost",
            "tls_untrusted_certificate",
            &["expired on 2020-02-01"],
        ),
        case(
            "CN only, no subjectAltName, CA given",
            "cn-only.pem",
            "cn-only.key",
            Some("ca.pem"),
            "localhost",
            "tls_name_mismatch",
            &["no subjectAltName", "CN=localhost"],
        ),
    ];
    let mut failures = Vec::new();
    for c in &cases {
        let server = tls_server(&dir, c.cert, c.key);
        let url = format!("wss://{}:{}/ws", c.host, server.1);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_holdfast"));
        cmd.args(["doctor", &url, "--json"]);
        let ca: Option<PathBuf> = c.ca_file.map(|f| dir.join(f));
        if let Some(ca) = &ca {
            cmd.arg("--ca-file").arg(ca);
        }
        let out = cmd.output().unwrap();
        // The doctor calls healthy exactly what OpenSSL's clients accept;
        // but for a CN-only certificate, which they still match by its CN
        // and browsers refuse.
        let python = python_connects(server.1, c.host, ca.as_deref());
        if c.cert != "cn-only.pem" && python != (c.cause == "healthy") {
            failures.push(format!(
                "{}: Python's ssl {} where the doctor expects {}",
                c.name,
                if python { "connects" } else { "fails" },
                c.cause
            ));
        }
        let report: serde_json::Value = match serde_json::from_slice(&out.stdout) {
            Ok(v) => v,
            Err(e) => {
                failures.push(format!("{}: not JSON ({e}): {}", c.name, String::from_utf8_lossy(&out.stdout)));
                continue;
            }
        };
        let cause = report["verdict"]["cause"].as_str().unwrap_or("?");
        println!(
            "| {} | `{cause}` | {} |",
            c.name,
            report["verdict"]["summary"].as_str().unwrap_or("").replace('|', "\\|")
        );
        let said = format!("{} {} {}", report["verdict"]["summary"], report["verdict"]["fix"], report["stages"]);
        let want_exit = if c.cause == "healthy" { 0 } else { 1 };
        if cause != c.cause {
            failures.push(format!("{}: expected {}, got {cause}: {}", c.name, c.cause, report["verdict"]["summary"]));
        } else if out.status.code() != Some(want_exit) {
            failures.push(format!("{}: exit {:?}", c.name, out.status.code()));
        } else if let Some(m) = c.mentions.iter().find(|m| !said.to_lowercase().contains(&m.to_lowercase())) {
            failures.push(format!("{}: the report does not mention {m:?}: {said}", c.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} certificates misnamed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    let _ = std::fs::remove_dir_all(&dir);
}
