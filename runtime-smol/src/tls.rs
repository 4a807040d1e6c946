//! rustls configurations for mutual TLS between the hub and its agents and users.
//!
//! The crypto provider is always chosen explicitly ([`provider`], *ring*): the process-default
//! provider is never used, because with more than one provider compiled in (futures-rustls
//! defaults to aws-lc-rs, rcgen to ring) `ServerConfig::builder()` fails at run time.
//!
//! PEM input is parsed with `rustls_pki_types::pem::PemObject`. Private keys may be PKCS#8
//! (`PRIVATE KEY`), SEC1 (`EC PRIVATE KEY`) or PKCS#1 (`RSA PRIVATE KEY`).
//!
//! With TLS 1.3, a client whose certificate the server rejects completes its side of the
//! handshake and learns about the rejection (an alert) on its first read.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Errors building a TLS configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The PEM input could not be parsed (or held no item of the wanted kind).
    #[error("{what}: {source}")]
    Pem {
        /// What was being parsed ("CA certificate", "private key"...).
        what: &'static str,
        /// The cause.
        source: rustls_pki_types::pem::Error,
    },
    /// A CA certificate was not accepted as a trust anchor.
    #[error("CA certificate: {0}")]
    TrustAnchor(rustls::Error),
    /// The client certificate verifier could not be built.
    #[error("client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// rustls refused the configuration (for example a key that does not match the
    /// certificate, or no usable protocol version).
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Result of the functions of this module.
pub type Result<T, E = TlsError> = std::result::Result<T, E>;

/// The crypto provider of every configuration made here: rustls' *ring* provider.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Parses every `CERTIFICATE` of a PEM input, in order (leaf first for a chain).
pub fn parse_certs(pem: &[u8], what: &'static str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem { what, source })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            what,
            source: rustls_pki_types::pem::Error::NoItemsFound,
        });
    }
    Ok(certs)
}

/// Parses the first private key of a PEM input: PKCS#8, SEC1 or PKCS#1.
pub fn parse_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|source| TlsError::Pem {
        what: "private key",
        source,
    })
}

/// A root store holding every certificate of `ca_pem`.
pub fn root_store(ca_pem: &[u8]) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in parse_certs(ca_pem, "CA certificate")? {
        roots.add(cert).map_err(TlsError::TrustAnchor)?;
    }
    Ok(roots)
}

/// A server configuration presenting `cert_pem` (leaf first, then any intermediates) with
/// `key_pem`, and **requiring** a client certificate that chains to a CA of `ca_pem`.
/// TLS 1.2 and 1.3 with rustls' safe defaults. Read the client's identity after the handshake
/// with `peer_certificates()` and [`crate::pki::peer_identity`].
pub fn server_config(ca_pem: &[u8], cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<ServerConfig>> {
    let provider = provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(
        Arc::new(root_store(ca_pem)?),
        provider.clone(),
    )
    .build()?;
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(parse_certs(cert_pem, "certificate")?, parse_key(key_pem)?)?;
    Ok(Arc::new(config))
}

/// A server configuration for the web face (wss): the same certificate, no client
/// certificate asked for (browsers log in with password + TOTP), HTTP/1.1 by ALPN.
pub fn web_server_config(cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<ServerConfig>> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(parse_certs(cert_pem, "certificate")?, parse_key(key_pem)?)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A client configuration that verifies the server against the CAs of `ca_pem` (the server
/// name given at connection time must be one of its certificate's SANs) and presents
/// `cert_pem` with `key_pem` as its client certificate.
pub fn client_config(ca_pem: &[u8], cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<ClientConfig>> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(root_store(ca_pem)?)
        .with_client_auth_cert(parse_certs(cert_pem, "certificate")?, parse_key(key_pem)?)?;
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{Ca, IssuedCert, peer_identity};
    use rustls::pki_types::ServerName;
    use rustls::{ClientConnection, Connection, ServerConnection};

    struct Pki {
        ca: Ca,
        server: IssuedCert,
        client: IssuedCert,
    }

    fn pki(client_id: &str) -> Pki {
        let ca = Ca::generate("Test CA").expect("CA");
        let server = ca
            .issue_server(&["localhost".into(), "127.0.0.1".into()], 30)
            .expect("server cert");
        let client = ca.issue_client(client_id, 30).expect("client cert");
        Pki { ca, server, client }
    }

    fn server_for(p: &Pki) -> ServerConnection {
        let config = server_config(
            p.ca.cert_pem().as_bytes(),
            p.server.cert_pem.as_bytes(),
            p.server.key_pem.as_bytes(),
        )
        .expect("server config");
        ServerConnection::new(config).expect("server connection")
    }

    fn client_with(ca: &Ca, cert: &IssuedCert, name: &str) -> ClientConnection {
        let config = client_config(
            ca.cert_pem().as_bytes(),
            cert.cert_pem.as_bytes(),
            cert.key_pem.as_bytes(),
        )
        .expect("client config");
        let name = ServerName::try_from(name.to_owned()).expect("server name");
        ClientConnection::new(config, name).expect("client connection")
    }

    /// Moves TLS bytes from `from` to `to`; returns how many moved.
    fn transfer(from: &mut Connection, to: &mut Connection) -> Result<usize, rustls::Error> {
        let mut buf = Vec::new();
        while from.wants_write() {
            from.write_tls(&mut buf).expect("write to a Vec");
        }
        let mut input = buf.as_slice();
        while !input.is_empty() {
            to.read_tls(&mut input).expect("read from a slice");
            to.process_new_packets()?;
        }
        Ok(buf.len())
    }

    /// Runs both sides until neither has anything to send. Returns the first error and
    /// which side raised it ("client" or "server").
    fn handshake(
        client: ClientConnection,
        server: ServerConnection,
    ) -> (
        Connection,
        Connection,
        Result<(), (&'static str, rustls::Error)>,
    ) {
        let mut client = Connection::from(client);
        let mut server = Connection::from(server);
        for _ in 0..20 {
            let to_server = match transfer(&mut client, &mut server) {
                Ok(n) => n,
                Err(e) => return (client, server, Err(("server", e))),
            };
            let to_client = match transfer(&mut server, &mut client) {
                Ok(n) => n,
                Err(e) => return (client, server, Err(("client", e))),
            };
            if to_server == 0 && to_client == 0 {
                break;
            }
        }
        (client, server, Ok(()))
    }

    #[test]
    fn mutual_tls_succeeds_and_server_reads_client_cn() {
        let p = pki("agent-7");
        let (mut client, mut server, result) =
            handshake(client_with(&p.ca, &p.client, "localhost"), server_for(&p));
        result.expect("handshake");
        assert!(!client.is_handshaking() && !server.is_handshaking());

        let certs = server.peer_certificates().expect("client certificate");
        let id = peer_identity(&certs[0]).expect("identity");
        assert_eq!(id.common_name.as_deref(), Some("agent-7"));
        assert_eq!(id.dns_names, vec!["agent-7".to_owned()]);

        // Application data flows both ways.
        use std::io::{Read, Write};
        client.writer().write_all(b"ping").expect("write");
        transfer(&mut client, &mut server).expect("transfer");
        let mut got = [0u8; 4];
        server.reader().read_exact(&mut got).expect("read");
        assert_eq!(&got, b"ping");
    }

    #[test]
    fn server_name_by_ip_address_works() {
        let p = pki("admin");
        let (_, _, result) = handshake(client_with(&p.ca, &p.client, "127.0.0.1"), server_for(&p));
        result.expect("handshake");
    }

    #[test]
    fn client_cert_from_another_ca_is_rejected() {
        let p = pki("agent-1");
        let other_ca = Ca::generate("Other CA").expect("CA");
        let intruder = other_ca.issue_client("agent-1", 30).expect("cert");
        // The client trusts the right CA but presents a certificate of another one.
        let (mut client, mut server, result) =
            handshake(client_with(&p.ca, &intruder, "localhost"), server_for(&p));
        let (side, err) = result.expect_err("handshake must fail");
        assert_eq!(side, "server");
        assert!(
            matches!(
                err,
                rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
            ),
            "{err:?}"
        );
        // TLS 1.3: the client believes it is done and sees the alert on its next read.
        assert_eq!(
            client.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_3)
        );
        assert!(!client.is_handshaking());
        let err = transfer(&mut server, &mut client).expect_err("alert");
        assert_eq!(
            err,
            rustls::Error::AlertReceived(rustls::AlertDescription::UnknownCA)
        );
    }

    #[test]
    fn server_cert_from_another_ca_is_rejected() {
        let p = pki("agent-1");
        let other_ca = Ca::generate("Other CA").expect("CA");
        let client_cert = other_ca.issue_client("agent-1", 30).expect("cert");
        let (_, _, result) = handshake(
            client_with(&other_ca, &client_cert, "localhost"),
            server_for(&p),
        );
        let (side, err) = result.expect_err("handshake must fail");
        assert_eq!(side, "client");
        assert!(
            matches!(err, rustls::Error::InvalidCertificate(_)),
            "{err:?}"
        );
    }

    #[test]
    fn wrong_server_name_is_rejected() {
        let p = pki("agent-1");
        let (_, _, result) =
            handshake(client_with(&p.ca, &p.client, "example.org"), server_for(&p));
        let (side, err) = result.expect_err("handshake must fail");
        assert_eq!(side, "client");
        assert!(
            matches!(err, rustls::Error::InvalidCertificate(_)),
            "{err:?}"
        );
    }

    #[test]
    fn a_server_certificate_cannot_authenticate_a_client() {
        let p = pki("agent-1");
        // The hub's server certificate has EKU serverAuth only.
        let (_, _, result) = handshake(client_with(&p.ca, &p.server, "localhost"), server_for(&p));
        let (side, _) = result.expect_err("handshake must fail");
        assert_eq!(side, "server");
    }

    #[test]
    fn key_formats_are_recognised() {
        let ca = Ca::generate("Test CA").expect("CA");
        assert!(matches!(
            parse_key(ca.key_pem().as_bytes()),
            Ok(PrivateKeyDer::Pkcs8(_))
        ));
        // Only the PEM label decides the kind; the DER is checked when a config is built.
        let sec1 = "-----BEGIN EC PRIVATE KEY-----\nMAA=\n-----END EC PRIVATE KEY-----\n";
        assert!(matches!(
            parse_key(sec1.as_bytes()),
            Ok(PrivateKeyDer::Sec1(_))
        ));
        let pkcs1 = "-----BEGIN RSA PRIVATE KEY-----\nMAA=\n-----END RSA PRIVATE KEY-----\n";
        assert!(matches!(
            parse_key(pkcs1.as_bytes()),
            Ok(PrivateKeyDer::Pkcs1(_))
        ));
        assert!(parse_key(ca.cert_pem().as_bytes()).is_err());
        assert!(parse_certs(b"", "empty").is_err());
    }
}
