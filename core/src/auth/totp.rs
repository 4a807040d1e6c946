//! TOTP (RFC 6238: HMAC-SHA-1, 30-second steps, 6 digits) with a ±1 step window and single
//! use of each code, plus the base32 secrets and `otpauth://` URIs authenticator apps read.
//! Time is passed in (Unix seconds): nothing here reads a clock.

use hmac::{Hmac, Mac};
use sha1::Sha1;

/// Seconds per step.
pub const STEP: u64 = 30;
/// Digits of a code.
pub const DIGITS: u32 = 6;

/// HOTP (RFC 4226) of `counter` with `digits` digits.
pub fn hotp(secret: &[u8], counter: u64, digits: u32) -> u32 {
    let Ok(mut mac) = <Hmac<Sha1> as Mac>::new_from_slice(secret) else {
        return 0; // HMAC takes keys of any length: unreachable
    };
    mac.update(&counter.to_be_bytes());
    let h = mac.finalize().into_bytes();
    let offset = (h[19] & 0x0f) as usize;
    let bin = u32::from_be_bytes([
        h[offset] & 0x7f,
        h[offset + 1],
        h[offset + 2],
        h[offset + 3],
    ]);
    bin % 10u32.pow(digits)
}

/// The TOTP code at `unix_secs`.
pub fn code_at(secret: &[u8], unix_secs: u64) -> u32 {
    hotp(secret, unix_secs / STEP, DIGITS)
}

/// Why a code was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TotpError {
    /// Not the code of the current step or of a neighbour.
    #[error("invalid code")]
    Invalid,
    /// The code of a step already used (a replay).
    #[error("code already used")]
    Replayed,
}

/// Checks `code` at `unix_secs` against the current step and its neighbours. `last_used` is the
/// last step a code of this user was accepted for: that step and earlier ones are refused, so
/// each code works once. Returns the step to remember as the new `last_used`.
pub fn verify(
    secret: &[u8],
    code: u32,
    unix_secs: u64,
    last_used: Option<u64>,
) -> Result<u64, TotpError> {
    let now = unix_secs / STEP;
    let mut matched = None;
    // Compare against every candidate (no early exit) so timing says nothing of which matched.
    for step in [now.saturating_sub(1), now, now + 1] {
        let ok = constant_time_eq(hotp(secret, step, DIGITS), code);
        if ok && matched.is_none() {
            matched = Some(step);
        }
    }
    let step = matched.ok_or(TotpError::Invalid)?;
    if last_used.is_some_and(|l| step <= l) {
        return Err(TotpError::Replayed);
    }
    Ok(step)
}

fn constant_time_eq(a: u32, b: u32) -> bool {
    (a ^ b) == 0
}

const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// RFC 4648 base32 without padding (what authenticator apps expect).
pub fn base32_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(5) * 8);
    let (mut buf, mut bits) = (0u64, 0u32);
    for &b in data {
        buf = (buf << 8) | b as u64;
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(BASE32[((buf >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(BASE32[((buf << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// Decodes base32 (case-insensitive, padding and spaces ignored).
pub fn base32_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 5 / 8);
    let (mut buf, mut bits) = (0u64, 0u32);
    for c in s.chars().filter(|c| *c != '=' && !c.is_whitespace()) {
        let v = BASE32
            .iter()
            .position(|b| *b as char == c.to_ascii_uppercase())? as u64;
        buf = (buf << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
        }
    }
    Some(out)
}

/// The `otpauth://` URI an authenticator app scans.
pub fn otpauth_uri(issuer: &str, account: &str, secret: &[u8]) -> String {
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    };
    format!(
        "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={STEP}",
        enc(issuer),
        enc(account),
        base32_encode(secret),
        enc(issuer)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC_SECRET: &[u8] = b"12345678901234567890";

    #[test]
    fn rfc_6238_sha1_vectors() {
        // RFC 6238 appendix B, SHA-1, 8 digits.
        for (t, want) in [
            (59u64, 94287082u32),
            (1111111109, 7081804),
            (1111111111, 14050471),
            (1234567890, 89005924),
            (2000000000, 69279037),
            (20000000000, 65353130),
        ] {
            assert_eq!(hotp(RFC_SECRET, t / STEP, 8), want, "t = {t}");
        }
        // 6 digits are the last six.
        assert_eq!(code_at(RFC_SECRET, 59), 287082);
    }

    #[test]
    fn rfc_4226_hotp_vectors() {
        let want = [
            755224, 287082, 359152, 969429, 338314, 254676, 287922, 162583, 399871, 520489,
        ];
        for (c, w) in want.iter().enumerate() {
            assert_eq!(hotp(RFC_SECRET, c as u64, 6), *w);
        }
    }

    #[test]
    fn window_and_single_use() {
        let t = 1_700_000_000;
        let now = code_at(RFC_SECRET, t);
        let step = verify(RFC_SECRET, now, t, None).expect("current code");
        assert_eq!(
            verify(RFC_SECRET, now, t, Some(step)),
            Err(TotpError::Replayed)
        );
        let prev = code_at(RFC_SECRET, t - 30);
        let next = code_at(RFC_SECRET, t + 30);
        assert!(verify(RFC_SECRET, prev, t, None).is_ok(), "one step back");
        assert!(verify(RFC_SECRET, next, t, None).is_ok(), "one step ahead");
        let old = code_at(RFC_SECRET, t - 90);
        if old != prev && old != now && old != next {
            assert_eq!(verify(RFC_SECRET, old, t, None), Err(TotpError::Invalid));
        }
        // A code of an earlier step than the last used one is refused too.
        assert_eq!(
            verify(RFC_SECRET, prev, t, Some(step)),
            Err(TotpError::Replayed)
        );
    }

    #[test]
    fn base32_round_trip_and_known_value() {
        assert_eq!(base32_encode(b"foobar"), "MZXW6YTBOI");
        assert_eq!(base32_decode("mzxw6ytboi======"), Some(b"foobar".to_vec()));
        for n in 0..40u8 {
            let data: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37)).collect();
            assert_eq!(base32_decode(&base32_encode(&data)), Some(data));
        }
        assert_eq!(base32_decode("not base32!"), None);
        let uri = otpauth_uri("Switchboard", "admin@hub", b"12345678901234567890");
        assert!(uri.starts_with(
            "otpauth://totp/Switchboard:admin%40hub?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&"
        ));
    }
}
