//! The hub's small PKI: a certificate authority, server and client certificates, and the
//! certificate files of a data directory.
//!
//! Every key is ECDSA P-256 (PKCS#8 PEM) and every certificate is X.509 v3 signed with
//! ECDSA-SHA256. The leaf profile is the one known to work with the real RedPepper 0.0.x Python
//! peers and with rustls/webpki (see `peers/redpepper/gen-certs.sh` in the shared docs):
//! `basicConstraints` critical `CA:FALSE`, `keyUsage` critical `digitalSignature`, one extended
//! key usage (`serverAuth` or `clientAuth`), a subject and an authority key identifier, and a
//! random 128-bit serial number.
//!
//! Client certificates live at most [`MAX_CLIENT_CERT_DAYS`] days: longer requests are clamped.
//! No leaf outlives the CA that signed it.

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber,
};
use x509_parser::extensions::GeneralName;
use x509_parser::time::ASN1Time;

/// The longest lifetime of a client certificate, in days; longer requests are clamped to it.
pub const MAX_CLIENT_CERT_DAYS: u32 = 365;
/// Largest certificate request [`Ca::sign_client_csr`] looks at.
pub const MAX_CSR_LEN: usize = 8 * 1024;
/// Lifetime of a generated CA, in days (10 years).
pub const CA_DAYS: u32 = 3650;
/// Lifetime of the hub's server certificate created by [`DataDirPki::ensure`], in days.
pub const HUB_CERT_DAYS: u32 = 825;
/// [`DataDirPki::ensure`] re-issues a hub or admin certificate that expires within this many days.
pub const RENEW_BEFORE_DAYS: u32 = 30;
/// The user name of the client certificate created by [`DataDirPki::ensure`].
pub const ADMIN_USER: &str = "admin";

/// CA certificate file name in a data directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// CA private key file name in a data directory (mode 0600).
pub const CA_KEY_FILE: &str = "ca.key";
/// Hub server certificate file name in a data directory.
pub const HUB_CERT_FILE: &str = "hub.pem";
/// Hub server private key file name in a data directory (mode 0600).
pub const HUB_KEY_FILE: &str = "hub.key";
/// Admin client certificate file name in a data directory.
pub const ADMIN_CERT_FILE: &str = "admin.pem";
/// Admin client private key file name in a data directory (mode 0600).
pub const ADMIN_KEY_FILE: &str = "admin.key";

const DAY_SECS: i64 = 86_400;
/// Leaves are valid from a little before "now", to tolerate clock skew between peers.
const BACKDATE_SECS: i64 = 3_600;

/// Errors of the PKI functions.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Certificate or key generation, signing, or PEM/key parsing failed.
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// A certificate could not be parsed.
    #[error("invalid certificate: {0}")]
    Certificate(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The request is not valid (no names, a zero lifetime, an empty id...).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The data directory holds an inconsistent set of certificate files.
    #[error("inconsistent certificate files: {0}")]
    Inconsistent(String),
    /// The system clock or random generator failed.
    #[error("system failure: {0}")]
    System(String),
}

/// Result of the PKI functions.
pub type Result<T, E = PkiError> = std::result::Result<T, E>;

/// A freshly issued certificate and its private key, both PEM.
#[derive(Clone)]
pub struct IssuedCert {
    /// The certificate (PEM, `CERTIFICATE`).
    pub cert_pem: String,
    /// The private key (PEM, PKCS#8 `PRIVATE KEY`). Keep it secret.
    pub key_pem: String,
}

impl std::fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCert")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<secret>")
            .finish()
    }
}

impl IssuedCert {
    /// Writes the certificate to `dir/cert_name` and the key to `dir/key_name`, the key with
    /// mode 0600 (on Unix). Each file is written to a temporary name and renamed into place, so
    /// a reader never sees half a file and an existing key never keeps wider permissions.
    pub fn write_to(&self, dir: &Path, cert_name: &str, key_name: &str) -> Result<()> {
        write_file(&dir.join(cert_name), self.cert_pem.as_bytes(), 0o644)?;
        write_file(&dir.join(key_name), self.key_pem.as_bytes(), 0o600)
    }

    /// Reads a certificate and key written by [`IssuedCert::write_to`].
    pub fn read_from(dir: &Path, cert_name: &str, key_name: &str) -> Result<Self> {
        Ok(IssuedCert {
            cert_pem: read_file(&dir.join(cert_name))?,
            key_pem: read_file(&dir.join(key_name))?,
        })
    }

    /// The identity in the certificate (CN, DNS names, expiry).
    pub fn identity(&self) -> Result<PeerIdentity> {
        peer_identity(&pem_to_der(&self.cert_pem)?)
    }
}

/// A certificate authority that issues the hub's server and client certificates.
pub struct Ca {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
    not_after_unix: i64,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("cert_pem", &self.cert_pem)
            .field("not_after_unix", &self.not_after_unix)
            .finish_non_exhaustive()
    }
}

impl Ca {
    /// Generates a new self-signed CA: ECDSA P-256 key, subject CN = `common_name`,
    /// `basicConstraints` critical `CA:TRUE` with path length 0 (it signs leaves only),
    /// `keyUsage` critical `keyCertSign, cRLSign`, a subject key identifier, valid for
    /// [`CA_DAYS`] days.
    pub fn generate(common_name: &str) -> Result<Ca> {
        if common_name.is_empty() {
            return Err(PkiError::Invalid("empty CA common name".into()));
        }
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name_dn(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.serial_number = Some(random_serial()?);
        let now = unix_now()?;
        set_validity(
            &mut params,
            now - BACKDATE_SECS,
            now + i64::from(CA_DAYS) * DAY_SECS,
        )?;
        let cert = params.self_signed(&key)?;
        let not_after_unix = peer_identity(cert.der())?.not_after_unix;
        Ok(Ca {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
            not_after_unix,
        })
    }

    /// Loads a CA from its certificate and private key (PEM). The key must be PKCS#8
    /// (`PRIVATE KEY`), as written by [`Ca::key_pem`] and by `openssl genpkey`.
    pub fn load(cert_pem: &str, key_pem: &str) -> Result<Ca> {
        let key = KeyPair::from_pem(key_pem)?;
        let der = pem_to_der(cert_pem)?;
        let (_, cert) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| PkiError::Certificate(e.to_string()))?;
        if !cert.is_ca() {
            return Err(PkiError::Certificate("not a CA certificate".into()));
        }
        if cert.public_key().subject_public_key.data.as_ref() != key.der_bytes() {
            return Err(PkiError::Invalid(
                "the CA key does not match the CA certificate".into(),
            ));
        }
        let not_after_unix = cert.validity().not_after.timestamp();
        let issuer = Issuer::from_ca_cert_der(&der.as_slice().into(), key)?;
        Ok(Ca {
            cert_pem: cert_pem.to_owned(),
            issuer,
            not_after_unix,
        })
    }

    /// The CA certificate (PEM).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA private key (PEM, PKCS#8). Keep it secret.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// Unix seconds after which the CA certificate is no longer valid.
    pub fn not_after_unix(&self) -> i64 {
        self.not_after_unix
    }

    /// Issues a server certificate valid for `days` days (at most until the CA expires):
    /// extended key usage `serverAuth`; each name becomes an IP address SAN if it parses as an
    /// IP address, a DNS SAN otherwise; the subject CN is the first name.
    pub fn issue_server(&self, names: &[String], days: u32) -> Result<IssuedCert> {
        let first = names
            .first()
            .ok_or_else(|| PkiError::Invalid("a server certificate needs a name".into()))?;
        let mut sans = Vec::with_capacity(names.len());
        for name in names {
            if name.is_empty() {
                return Err(PkiError::Invalid("empty server name".into()));
            }
            sans.push(match name.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(name.clone().try_into()?),
            });
        }
        self.issue_leaf(first, sans, ExtendedKeyUsagePurpose::ServerAuth, days)
    }

    /// Issues a client certificate for user or agent `id`, valid for `days` days clamped to
    /// [`MAX_CLIENT_CERT_DAYS`] (and at most until the CA expires): extended key usage
    /// `clientAuth`, subject CN = `id`, and a DNS SAN = `id` only if `id` is a valid DNS label
    /// (letters, digits and inner hyphens, at most 63 characters).
    pub fn issue_client(&self, id: &str, days: u32) -> Result<IssuedCert> {
        if id.is_empty() {
            return Err(PkiError::Invalid("empty client id".into()));
        }
        let sans = if is_dns_label(id) {
            vec![SanType::DnsName(id.to_owned().try_into()?)]
        } else {
            Vec::new()
        };
        let days = days.min(MAX_CLIENT_CERT_DAYS);
        self.issue_leaf(id, sans, ExtendedKeyUsagePurpose::ClientAuth, days)
    }

    fn issue_leaf(
        &self,
        common_name: &str,
        sans: Vec<SanType>,
        eku: ExtendedKeyUsagePurpose,
        days: u32,
    ) -> Result<IssuedCert> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let params = self.leaf_params(common_name, sans, eku, days)?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// The parameters of every leaf: the profile of the module docs, a random serial, valid
    /// from a little before now for `days` days (never past the CA).
    fn leaf_params(
        &self,
        common_name: &str,
        sans: Vec<SanType>,
        eku: ExtendedKeyUsagePurpose,
        days: u32,
    ) -> Result<CertificateParams> {
        if days == 0 {
            return Err(PkiError::Invalid("a certificate lifetime of 0 days".into()));
        }
        let now = unix_now()?;
        let not_after = now + i64::from(days) * DAY_SECS;
        self.leaf_params_between(common_name, sans, eku, now - BACKDATE_SECS, not_after)
    }

    fn leaf_params_between(
        &self,
        common_name: &str,
        sans: Vec<SanType>,
        eku: ExtendedKeyUsagePurpose,
        not_before: i64,
        not_after: i64,
    ) -> Result<CertificateParams> {
        let not_after = not_after.min(self.not_after_unix);
        if not_after <= unix_now()? {
            return Err(PkiError::Invalid(
                "the certificate (or the CA) would have expired".into(),
            ));
        }
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name_dn(common_name);
        params.subject_alt_names = sans;
        params.is_ca = IsCa::ExplicitNoCa; // critical CA:FALSE, plus a subject key identifier
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![eku];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial()?);
        set_validity(&mut params, not_before, not_after)?;
        Ok(params)
    }

    /// A client certificate for `id` valid between two Unix times of the caller's choice
    /// (at most [`MAX_CLIENT_CERT_DAYS`] apart, never past the CA): for tests and tools that
    /// need a certificate already well into its life, for example to exercise renewal.
    pub fn issue_client_between(
        &self,
        id: &str,
        not_before_unix: i64,
        not_after_unix: i64,
    ) -> Result<IssuedCert> {
        if id.is_empty() || not_after_unix <= not_before_unix {
            return Err(PkiError::Invalid("empty id or empty validity".into()));
        }
        let not_after_unix =
            not_after_unix.min(not_before_unix + i64::from(MAX_CLIENT_CERT_DAYS) * DAY_SECS);
        let sans = if is_dns_label(id) {
            vec![SanType::DnsName(id.to_owned().try_into()?)]
        } else {
            Vec::new()
        };
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let params = self.leaf_params_between(
            id,
            sans,
            ExtendedKeyUsagePurpose::ClientAuth,
            not_before_unix,
            not_after_unix,
        )?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Signs a renewal: a client certificate for `id` over the public key of `csr_der` (a
    /// PKCS#10 request whose signature is verified). Whatever the request asks for, the
    /// certificate gets the profile of [`Ca::issue_client`]: subject `id`, `clientAuth`,
    /// `days` clamped to [`MAX_CLIENT_CERT_DAYS`].
    pub fn sign_client_csr(&self, id: &str, csr_der: &[u8], days: u32) -> Result<String> {
        if id.is_empty() {
            return Err(PkiError::Invalid("empty client id".into()));
        }
        if csr_der.len() > MAX_CSR_LEN {
            return Err(PkiError::Invalid("certificate request too large".into()));
        }
        let der = rustls_pki_types::CertificateSigningRequestDer::from(csr_der);
        let mut csr = rcgen::CertificateSigningRequestParams::from_der(&der)?;
        let sans = if is_dns_label(id) {
            vec![SanType::DnsName(id.to_owned().try_into()?)]
        } else {
            Vec::new()
        };
        csr.params = self.leaf_params(
            id,
            sans,
            ExtendedKeyUsagePurpose::ClientAuth,
            days.min(MAX_CLIENT_CERT_DAYS),
        )?;
        Ok(csr.signed_by(&self.issuer)?.pem())
    }
}

/// Who a certificate names, as read by [`peer_identity`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The first subject common name, if any.
    pub common_name: Option<String>,
    /// The DNS names of the subject alternative name extension, in order.
    pub dns_names: Vec<String>,
    /// Unix seconds after which the certificate is no longer valid.
    pub not_after_unix: i64,
    /// Unix seconds from which it is valid.
    pub not_before_unix: i64,
    /// Its serial: lower-case hex of the bytes of its DER INTEGER.
    pub serial: String,
}

/// Reads the subject CN, the DNS SANs and the expiry of a DER certificate (for example a
/// peer's end-entity certificate from `rustls::Connection::peer_certificates`). This does not
/// verify anything: call it only on certificates the TLS layer has already verified.
pub fn peer_identity(cert_der: &[u8]) -> Result<PeerIdentity> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| PkiError::Certificate(e.to_string()))?;
    let common_name = match cert.subject().iter_common_name().next() {
        Some(cn) => Some(
            cn.as_str()
                .map_err(|e| PkiError::Certificate(format!("common name: {e}")))?
                .to_owned(),
        ),
        None => None,
    };
    let san = cert
        .subject_alternative_name()
        .map_err(|e| PkiError::Certificate(format!("subject alternative name: {e}")))?;
    let dns_names = san
        .map(|ext| {
            ext.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::DNSName(dns) => Some((*dns).to_owned()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(PeerIdentity {
        common_name,
        dns_names,
        not_after_unix: cert.validity().not_after.timestamp(),
        not_before_unix: cert.validity().not_before.timestamp(),
        serial: hex::encode(cert.raw_serial()),
    })
}

/// True if `s` is a valid DNS label: 1 to 63 ASCII letters, digits and hyphens, neither
/// starting nor ending with a hyphen.
pub fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// The certificates of a hub data directory: the CA, the hub's server certificate and the
/// first admin's client certificate.
#[derive(Debug)]
pub struct DataDirPki {
    /// The data directory.
    pub dir: PathBuf,
    /// The CA (`ca.pem`, `ca.key`).
    pub ca: Ca,
    /// The hub's server certificate (`hub.pem`, `hub.key`).
    pub hub: IssuedCert,
    /// The client certificate of user [`ADMIN_USER`] (`admin.pem`, `admin.key`).
    pub admin: IssuedCert,
}

impl DataDirPki {
    /// Loads the certificates of `dir`, creating what is missing: on first use it creates
    /// `ca.pem`/`ca.key`, `hub.pem`/`hub.key` (a server certificate naming `server_names`, valid
    /// [`HUB_CERT_DAYS`] days) and `admin.pem`/`admin.key` (a client certificate for
    /// [`ADMIN_USER`], valid [`MAX_CLIENT_CERT_DAYS`] days); later calls load them and create
    /// nothing. A hub or admin certificate that has expired or expires within
    /// [`RENEW_BEFORE_DAYS`] days is re-issued. Keys are written with mode 0600.
    ///
    /// Returns the paths of the files written, for the caller to print. `server_names` only
    /// matter when the hub certificate is issued: to change them, delete `hub.pem` and `hub.key`.
    ///
    /// A certificate without its key (or the reverse), or hub/admin files without a CA, is an
    /// error: nothing is overwritten in that case.
    pub fn ensure(dir: &Path, server_names: &[String]) -> Result<(DataDirPki, Vec<String>)> {
        fs::create_dir_all(dir).map_err(|source| PkiError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let mut created = Vec::new();
        let ca = match pair_state(dir, CA_CERT_FILE, CA_KEY_FILE)? {
            true => {
                let files = IssuedCert::read_from(dir, CA_CERT_FILE, CA_KEY_FILE)?;
                Ca::load(&files.cert_pem, &files.key_pem)?
            }
            false => {
                for (cert, key) in [
                    (HUB_CERT_FILE, HUB_KEY_FILE),
                    (ADMIN_CERT_FILE, ADMIN_KEY_FILE),
                ] {
                    if pair_state(dir, cert, key)? {
                        return Err(PkiError::Inconsistent(format!(
                            "{cert} exists but {CA_CERT_FILE} does not"
                        )));
                    }
                }
                let ca = Ca::generate("Switchboard CA")?;
                let files = IssuedCert {
                    cert_pem: ca.cert_pem().to_owned(),
                    key_pem: ca.key_pem(),
                };
                files.write_to(dir, CA_CERT_FILE, CA_KEY_FILE)?;
                created.extend(paths(dir, CA_CERT_FILE, CA_KEY_FILE));
                ca
            }
        };
        let hub = ensure_leaf(&ca, dir, HUB_CERT_FILE, HUB_KEY_FILE, &mut created, || {
            ca.issue_server(server_names, HUB_CERT_DAYS)
        })?;
        let admin = ensure_leaf(
            &ca,
            dir,
            ADMIN_CERT_FILE,
            ADMIN_KEY_FILE,
            &mut created,
            || ca.issue_client(ADMIN_USER, MAX_CLIENT_CERT_DAYS),
        )?;
        Ok((
            DataDirPki {
                dir: dir.to_owned(),
                ca,
                hub,
                admin,
            },
            created,
        ))
    }
}

fn ensure_leaf(
    ca: &Ca,
    dir: &Path,
    cert_name: &str,
    key_name: &str,
    created: &mut Vec<String>,
    issue: impl FnOnce() -> Result<IssuedCert>,
) -> Result<IssuedCert> {
    if pair_state(dir, cert_name, key_name)? {
        let files = IssuedCert::read_from(dir, cert_name, key_name)?;
        if !issued_by(ca, &files.cert_pem)? {
            return Err(PkiError::Inconsistent(format!(
                "{cert_name} was not issued by {CA_CERT_FILE}"
            )));
        }
        let renew_at = files.identity()?.not_after_unix - i64::from(RENEW_BEFORE_DAYS) * DAY_SECS;
        if unix_now()? < renew_at {
            return Ok(files);
        }
        tracing::info!(file = cert_name, "certificate expires soon: re-issuing it");
    }
    let files = issue()?;
    files.write_to(dir, cert_name, key_name)?;
    created.extend(paths(dir, cert_name, key_name));
    Ok(files)
}

/// Whether `leaf_pem` names `ca` as its issuer: same distinguished name and, when both
/// certificates carry one, same key identifier. (A cheap consistency check of a data
/// directory, not a signature verification: the TLS layer does that.)
fn issued_by(ca: &Ca, leaf_pem: &str) -> Result<bool> {
    fn key_id<'a>(
        cert: &'a x509_parser::certificate::X509Certificate<'_>,
        ski: bool,
    ) -> Option<&'a [u8]> {
        use x509_parser::extensions::ParsedExtension;
        cert.iter_extensions()
            .find_map(|ext| match ext.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(id) if ski => Some(id.0),
                ParsedExtension::AuthorityKeyIdentifier(aki) if !ski => {
                    aki.key_identifier.as_ref().map(|id| id.0)
                }
                _ => None,
            })
    }
    let parse = |der| {
        x509_parser::parse_x509_certificate(der)
            .map(|(_, cert)| cert)
            .map_err(|e| PkiError::Certificate(e.to_string()))
    };
    let (ca_der, leaf_der) = (pem_to_der(ca.cert_pem())?, pem_to_der(leaf_pem)?);
    let (ca_cert, leaf) = (parse(&ca_der)?, parse(&leaf_der)?);
    let same_name = leaf.issuer().as_raw() == ca_cert.subject().as_raw();
    let same_key = match (key_id(&leaf, false), key_id(&ca_cert, true)) {
        (Some(aki), Some(ski)) => aki == ski,
        _ => true,
    };
    Ok(same_name && same_key)
}

/// `Ok(true)` if both files exist, `Ok(false)` if neither does, an error otherwise.
fn pair_state(dir: &Path, cert_name: &str, key_name: &str) -> Result<bool> {
    match (dir.join(cert_name).exists(), dir.join(key_name).exists()) {
        (true, true) => Ok(true),
        (false, false) => Ok(false),
        (true, false) => Err(PkiError::Inconsistent(format!(
            "{cert_name} exists without {key_name}"
        ))),
        (false, true) => Err(PkiError::Inconsistent(format!(
            "{key_name} exists without {cert_name}"
        ))),
    }
}

fn paths(dir: &Path, cert_name: &str, key_name: &str) -> [String; 2] {
    [
        dir.join(cert_name).display().to_string(),
        dir.join(key_name).display().to_string(),
    ]
}

fn common_name_dn(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

/// A random positive 128-bit serial number (RFC 5280: at most 20 octets, positive, unique).
fn random_serial() -> Result<SerialNumber> {
    let mut bytes = [0u8; 16];
    let provider = rustls::crypto::ring::default_provider();
    provider
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| PkiError::System("no random bytes".into()))?;
    bytes[0] = (bytes[0] & 0x7f) | 0x40; // positive, and always 16 octets long
    Ok(SerialNumber::from_slice(&bytes))
}

/// Wall-clock time in Unix seconds. Reading the clock is the runtime's job (the workspace
/// `clippy.toml` bans it for the sans-IO core).
#[allow(clippy::disallowed_methods, clippy::disallowed_types)]
fn unix_now() -> Result<i64> {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| PkiError::System("the clock is before 1970".into()))?;
    i64::try_from(since.as_secs()).map_err(|_| PkiError::System("the clock is too far".into()))
}

/// Sets the validity of `params` to `[not_before, not_after]` (Unix seconds). rcgen's validity
/// fields use the `time` crate, reached through x509-parser's `ASN1Time` instead of one more
/// direct dependency.
fn set_validity(params: &mut CertificateParams, not_before: i64, not_after: i64) -> Result<()> {
    let date =
        |secs| ASN1Time::from_timestamp(secs).map_err(|e| PkiError::Invalid(format!("date: {e}")));
    params.not_before = date(not_before)?.to_datetime();
    params.not_after = date(not_after)?.to_datetime();
    Ok(())
}

fn pem_to_der(pem: &str) -> Result<Vec<u8>> {
    use rustls_pki_types::pem::PemObject;
    let der = rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| PkiError::Certificate(format!("PEM: {e}")))?;
    Ok(der.to_vec())
}

fn read_file(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|source| PkiError::Io {
        path: path.to_owned(),
        source,
    })
}

fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let io_err = |source| PkiError::Io {
        path: path.to_owned(),
        source,
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| PkiError::Invalid(format!("{}: not a file name", path.display())))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let _ = fs::remove_file(&tmp);
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(&tmp).map_err(io_err)?;
    file.write_all(data).map_err(io_err)?;
    file.sync_all().map_err(io_err)?;
    drop(file);
    fs::rename(&tmp, path).map_err(io_err)
}

mod renew;
pub use renew::{KeyAndRequest, install_renewed, new_key_and_request, recover_renewal};

#[cfg(test)]
mod tests;
