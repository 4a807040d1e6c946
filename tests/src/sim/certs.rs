//! Certificates in the simulator: a CA that signs renewals at once, and certificates as plain
//! text (`SIMCERT serial name not_before_ms not_after_ms`), checked for validity by the
//! simulated TLS handshake as rustls would (an expired certificate never reaches the hub).

use switchboard_core::hub::{PeerCert, SignedCertificate};

/// A simulated certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimCert {
    /// Serial (hex).
    pub serial: String,
    /// The name it binds.
    pub name: String,
    /// Valid from (Unix ms).
    pub not_before_ms: i64,
    /// Valid until (Unix ms).
    pub not_after_ms: i64,
}

impl SimCert {
    /// Its "PEM".
    pub fn to_pem(&self) -> String {
        format!(
            "SIMCERT {} {} {} {}",
            self.serial, self.name, self.not_before_ms, self.not_after_ms
        )
    }

    /// Parses [`SimCert::to_pem`].
    pub fn parse(pem: &str) -> Option<SimCert> {
        let mut it = pem.split(' ');
        if it.next()? != "SIMCERT" {
            return None;
        }
        Some(SimCert {
            serial: it.next()?.to_string(),
            name: it.next()?.to_string(),
            not_before_ms: it.next()?.parse().ok()?,
            not_after_ms: it.next()?.parse().ok()?,
        })
    }

    /// Whether it is valid at `unix_ms`.
    pub fn valid_at(&self, unix_ms: i64) -> bool {
        (self.not_before_ms..=self.not_after_ms).contains(&unix_ms)
    }

    /// What the hub learns of it from the TLS layer.
    pub fn peer_cert(&self) -> PeerCert {
        PeerCert {
            serial: self.serial.clone(),
            not_after_unix_ms: self.not_after_ms,
        }
    }
}

/// The simulated CA.
#[derive(Debug, Clone)]
pub struct SimCa {
    next_serial: u64,
    /// Lifetime of what it issues, in ms.
    pub lifetime_ms: i64,
    /// Every certificate issued, in order.
    pub issued: Vec<SimCert>,
}

impl Default for SimCa {
    fn default() -> Self {
        SimCa {
            next_serial: 0x1000,
            lifetime_ms: 365 * 86_400_000,
            issued: vec![],
        }
    }
}

/// The request a simulated agent sends.
pub fn csr(name: &str) -> Vec<u8> {
    format!("SIMCSR {name}").into_bytes()
}

impl SimCa {
    /// Issues a certificate for `name`, valid from an hour before `unix_ms`.
    pub fn issue(&mut self, name: &str, unix_ms: i64) -> SimCert {
        let c = SimCert {
            serial: format!("{:x}", self.next_serial),
            name: name.to_string(),
            not_before_ms: unix_ms - 3_600_000,
            not_after_ms: unix_ms - 3_600_000 + self.lifetime_ms,
        };
        self.next_serial += 1;
        self.issued.push(c.clone());
        c
    }

    /// Signs a renewal as the runtime does: the name is the hub's, whatever the request says;
    /// a request that does not parse is refused.
    pub fn sign(
        &mut self,
        name: &str,
        csr_der: &[u8],
        unix_ms: i64,
    ) -> Result<SignedCertificate, String> {
        if !csr_der.starts_with(b"SIMCSR ") {
            return Err("invalid certificate request".into());
        }
        let c = self.issue(name, unix_ms);
        Ok(SignedCertificate {
            certificate_pem: c.to_pem(),
            serial: c.serial,
            not_after_unix_ms: c.not_after_ms,
        })
    }
}
