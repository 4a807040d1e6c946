use super::*;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::ParsedExtension;
use x509_parser::x509::X509Version;

fn der(pem: &str) -> Vec<u8> {
    pem_to_der(pem).expect("PEM")
}

fn parse(der: &[u8]) -> X509Certificate<'_> {
    x509_parser::parse_x509_certificate(der).expect("DER").1
}

fn ski<'a>(cert: &'a X509Certificate<'_>) -> Option<&'a [u8]> {
    cert.iter_extensions()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0),
            _ => None,
        })
}

fn aki<'a>(cert: &'a X509Certificate<'_>) -> Option<&'a [u8]> {
    cert.iter_extensions()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(aki) => {
                aki.key_identifier.as_ref().map(|id| id.0)
            }
            _ => None,
        })
}

fn lifetime_days(cert: &X509Certificate<'_>) -> i64 {
    (cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp()) / DAY_SECS
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn ca_profile() {
    let ca = Ca::generate("Test CA").expect("CA");
    let der = der(ca.cert_pem());
    let cert = parse(&der);
    assert_eq!(cert.version(), X509Version::V3);
    let bc = cert
        .basic_constraints()
        .expect("ext")
        .expect("basicConstraints");
    assert!(bc.critical && bc.value.ca);
    let ku = cert.key_usage().expect("ext").expect("keyUsage");
    assert!(ku.critical && ku.value.key_cert_sign() && ku.value.crl_sign());
    assert!(!ku.value.digital_signature());
    assert!(ski(&cert).is_some());
    assert_eq!(cert.subject(), cert.issuer());
    let days = lifetime_days(&cert);
    assert!((3650..=3651).contains(&days), "{days}");
    assert_eq!(ca.not_after_unix(), cert.validity().not_after.timestamp());
    assert!(ca.key_pem().starts_with("-----BEGIN PRIVATE KEY-----"));
    assert!(Ca::generate("").is_err());
}

#[test]
fn server_profile() {
    let ca = Ca::generate("Test CA").expect("CA");
    let issued = ca
        .issue_server(
            &names(&["hub.example", "127.0.0.1", "::1", "localhost"]),
            90,
        )
        .expect("server cert");
    let der = der(&issued.cert_pem);
    let cert = parse(&der);
    assert_eq!(cert.version(), X509Version::V3);
    assert_eq!(
        cert.subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok()),
        Some("hub.example")
    );
    let san = cert.subject_alternative_name().expect("ext").expect("SAN");
    let sans: Vec<String> = san
        .value
        .general_names
        .iter()
        .map(|name| match name {
            &GeneralName::DNSName(dns) => format!("DNS:{dns}"),
            &GeneralName::IPAddress(&[a, b, c, d]) => format!("IP:{}", IpAddr::from([a, b, c, d])),
            &GeneralName::IPAddress(bytes) => {
                let v6: [u8; 16] = bytes.try_into().expect("16 bytes");
                format!("IP:{}", IpAddr::from(v6))
            }
            other => format!("{other}"),
        })
        .collect();
    assert_eq!(
        sans,
        ["DNS:hub.example", "IP:127.0.0.1", "IP:::1", "DNS:localhost"]
    );
    let eku = cert.extended_key_usage().expect("ext").expect("EKU").value;
    assert!(eku.server_auth && !eku.client_auth);
    let bc = cert
        .basic_constraints()
        .expect("ext")
        .expect("basicConstraints");
    assert!(bc.critical && !bc.value.ca);
    let ku = cert.key_usage().expect("ext").expect("keyUsage");
    assert!(ku.critical && ku.value.digital_signature() && !ku.value.key_cert_sign());
    let ca_der = pem_to_der(ca.cert_pem()).expect("PEM");
    let ca_cert = parse(&ca_der);
    assert_eq!(aki(&cert), ski(&ca_cert));
    assert!(ski(&cert).is_some() && ski(&cert) != ski(&ca_cert));
    assert_eq!(cert.issuer(), ca_cert.subject());
    assert_eq!(lifetime_days(&cert), 90);
    assert_eq!(cert.raw_serial().len(), 16);

    assert!(ca.issue_server(&[], 90).is_err());
    assert!(ca.issue_server(&names(&["x"]), 0).is_err());
}

#[test]
fn client_profile_and_clamp() {
    let ca = Ca::generate("Test CA").expect("CA");
    let issued = ca.issue_client("agent-1", 10_000).expect("client cert");
    let der = der(&issued.cert_pem);
    let cert = parse(&der);
    let eku = cert.extended_key_usage().expect("ext").expect("EKU").value;
    assert!(eku.client_auth && !eku.server_auth);
    let bc = cert
        .basic_constraints()
        .expect("ext")
        .expect("basicConstraints");
    assert!(bc.critical && !bc.value.ca);
    assert!(ski(&cert).is_some() && aki(&cert).is_some());
    assert_eq!(lifetime_days(&cert), i64::from(MAX_CLIENT_CERT_DAYS));

    let id = peer_identity(&der).expect("identity");
    assert_eq!(id.common_name.as_deref(), Some("agent-1"));
    assert_eq!(id.dns_names, ["agent-1"]);
    assert_eq!(id.not_after_unix, cert.validity().not_after.timestamp());
    assert_eq!(issued.identity().expect("identity"), id);

    // Not a DNS label: CN only, no SAN.
    for odd in ["alice@example.org", "a.b", "-x", "user name", "é"] {
        let issued = ca.issue_client(odd, 30).expect("client cert");
        let id = issued.identity().expect("identity");
        assert_eq!(id.common_name.as_deref(), Some(odd));
        assert!(id.dns_names.is_empty(), "{odd}");
    }
    assert!(ca.issue_client("", 30).is_err());

    // Serial numbers are random.
    let again = ca.issue_client("agent-1", 30).expect("client cert");
    let again_der = pem_to_der(&again.cert_pem).expect("PEM");
    assert_ne!(parse(&again_der).raw_serial(), cert.raw_serial());
}

#[test]
fn dns_labels() {
    assert!(is_dns_label("a"));
    assert!(is_dns_label("agent-1"));
    assert!(is_dns_label("A9"));
    assert!(is_dns_label(&"a".repeat(63)));
    assert!(!is_dns_label(&"a".repeat(64)));
    assert!(!is_dns_label(""));
    assert!(!is_dns_label("-a"));
    assert!(!is_dns_label("a-"));
    assert!(!is_dns_label("a.b"));
    assert!(!is_dns_label("a_b"));
}

#[test]
fn load_round_trip_and_mismatch() {
    let ca = Ca::generate("Test CA").expect("CA");
    let loaded = Ca::load(ca.cert_pem(), &ca.key_pem()).expect("load");
    assert_eq!(loaded.not_after_unix(), ca.not_after_unix());
    let issued = loaded.issue_client("bob", 30).expect("client cert");
    let ca_der = pem_to_der(ca.cert_pem()).expect("PEM");
    let leaf_der = pem_to_der(&issued.cert_pem).expect("PEM");
    assert_eq!(aki(&parse(&leaf_der)), ski(&parse(&ca_der)));

    let other = Ca::generate("Other").expect("CA");
    assert!(matches!(
        Ca::load(ca.cert_pem(), &other.key_pem()),
        Err(PkiError::Invalid(_))
    ));
    // A leaf is not a CA.
    assert!(Ca::load(&issued.cert_pem, &issued.key_pem).is_err());
    assert!(Ca::load("garbage", &ca.key_pem()).is_err());
}

#[test]
fn leaves_never_outlive_the_ca() {
    let ca = Ca::generate("Test CA").expect("CA");
    let issued = ca.issue_server(&names(&["hub"]), 100_000).expect("server");
    assert_eq!(
        issued.identity().expect("id").not_after_unix,
        ca.not_after_unix()
    );
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).expect("metadata").permissions().mode() & 0o777
}

#[cfg(unix)]
#[test]
fn write_to_protects_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::generate("Test CA").expect("CA");
    let issued = ca.issue_client("bob", 30).expect("client cert");
    // An existing key file with loose permissions is replaced, not reused.
    fs::write(dir.path().join("bob.key"), "old").expect("write");
    issued
        .write_to(dir.path(), "bob.pem", "bob.key")
        .expect("write");
    assert_eq!(mode(&dir.path().join("bob.key")), 0o600);
    assert_eq!(mode(&dir.path().join("bob.pem")) & 0o600, 0o600);
    let back = IssuedCert::read_from(dir.path(), "bob.pem", "bob.key").expect("read");
    assert_eq!(back.cert_pem, issued.cert_pem);
    assert_eq!(back.key_pem, issued.key_pem);
    assert!(!format!("{back:?}").contains("PRIVATE"));
}

#[test]
fn data_dir_is_created_once() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    let servers = names(&["localhost", "127.0.0.1"]);
    let (first, created) = DataDirPki::ensure(&dir, &servers).expect("ensure");
    let created_names: Vec<String> = created
        .iter()
        .map(|p| {
            Path::new(p)
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(
        created_names,
        [
            "ca.pem",
            "ca.key",
            "hub.pem",
            "hub.key",
            "admin.pem",
            "admin.key"
        ]
    );
    #[cfg(unix)]
    for key in [CA_KEY_FILE, HUB_KEY_FILE, ADMIN_KEY_FILE] {
        assert_eq!(mode(&dir.join(key)), 0o600, "{key}");
    }
    let hub = first.hub.identity().expect("hub id");
    assert_eq!(hub.common_name.as_deref(), Some("localhost"));
    assert_eq!(hub.dns_names, ["localhost"]);
    let admin = first.admin.identity().expect("admin id");
    assert_eq!(admin.common_name.as_deref(), Some(ADMIN_USER));

    let (second, created) = DataDirPki::ensure(&dir, &names(&["other"])).expect("ensure");
    assert!(created.is_empty(), "{created:?}");
    assert_eq!(second.ca.cert_pem(), first.ca.cert_pem());
    assert_eq!(second.hub.cert_pem, first.hub.cert_pem);
    assert_eq!(second.admin.key_pem, first.admin.key_pem);

    // A lone certificate is never overwritten.
    fs::remove_file(dir.join(ADMIN_KEY_FILE)).expect("rm");
    assert!(matches!(
        DataDirPki::ensure(&dir, &servers),
        Err(PkiError::Inconsistent(_))
    ));
    // Leaves of another CA (even one with the same name) are refused.
    fs::remove_file(dir.join(ADMIN_CERT_FILE)).expect("rm");
    let other = Ca::generate("Switchboard CA").expect("CA");
    let stranger = other.issue_client(ADMIN_USER, 30).expect("client cert");
    stranger
        .write_to(&dir, ADMIN_CERT_FILE, ADMIN_KEY_FILE)
        .expect("write");
    assert!(matches!(
        DataDirPki::ensure(&dir, &servers),
        Err(PkiError::Inconsistent(_))
    ));
    // Leaves without their CA are an error too.
    fs::remove_file(dir.join(ADMIN_CERT_FILE)).expect("rm");
    fs::remove_file(dir.join(ADMIN_KEY_FILE)).expect("rm");
    fs::remove_file(dir.join(CA_CERT_FILE)).expect("rm");
    fs::remove_file(dir.join(CA_KEY_FILE)).expect("rm");
    assert!(matches!(
        DataDirPki::ensure(&dir, &servers),
        Err(PkiError::Inconsistent(_))
    ));
}

#[test]
fn data_dir_renews_expiring_leaves() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let servers = names(&["localhost"]);
    let (pki, _) = DataDirPki::ensure(tmp.path(), &servers).expect("ensure");
    // Replace the admin certificate by one that expires within the renewal window.
    let short = pki.ca.issue_client(ADMIN_USER, 2).expect("client cert");
    short
        .write_to(tmp.path(), ADMIN_CERT_FILE, ADMIN_KEY_FILE)
        .expect("write");
    let (again, created) = DataDirPki::ensure(tmp.path(), &servers).expect("ensure");
    assert_eq!(created.len(), 2, "{created:?}");
    assert!(created[0].ends_with(ADMIN_CERT_FILE));
    assert_ne!(again.admin.cert_pem, short.cert_pem);
    assert_eq!(again.hub.cert_pem, pki.hub.cert_pem);
}

/// The files verify with OpenSSL for the purposes RedPepper's Python peers check
/// (`gen-certs.sh` does the same). Skipped when no `openssl` binary is installed.
#[test]
fn openssl_accepts_the_data_dir() {
    use std::process::Command;
    let tmp = tempfile::tempdir().expect("tempdir");
    let servers = names(&["localhost", "127.0.0.1", "::1"]);
    DataDirPki::ensure(tmp.path(), &servers).expect("ensure");
    let ca = tmp.path().join(CA_CERT_FILE);
    for (file, purpose) in [(HUB_CERT_FILE, "sslserver"), (ADMIN_CERT_FILE, "sslclient")] {
        let out = Command::new("openssl")
            .arg("verify")
            .arg("-CAfile")
            .arg(&ca)
            .args(["-purpose", purpose])
            .arg(tmp.path().join(file))
            .output();
        let Ok(out) = out else {
            eprintln!("openssl not found: skipping");
            return;
        };
        assert!(
            out.status.success(),
            "{file}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
