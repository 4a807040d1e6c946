//! The secure feed's cryptography, with RustCrypto: RSA-OAEP (SHA-1, MGF1-SHA-1, no label)
//! for the handshake, always decrypted with blinding; RSA-PSS (SHA-512, MGF1-SHA-512, salt of
//! the maximum length) for client signatures; AES-256-CBC with PKCS#7 for frames, IV first.
//! Randomness comes from the caller's RNG (a seeded one in `core`).
//!
//! Every failure of decryption or parsing is the one [`CryptoError`]: nothing tells a caller
//! (or an attacker timing it) which step failed.

use aes::Aes256;
use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use rand_core::CryptoRngCore;
use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePublicKey};
use rsa::traits::PublicKeyParts;
use rsa::{Oaep, Pss, RsaPrivateKey, RsaPublicKey};
use sha1::Sha1;
use sha2::{Digest, Sha512};

pub use rsa::{RsaPrivateKey as PrivateKey, RsaPublicKey as PublicKey};

/// The one error of the feed's cryptography.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CryptoError;

impl std::fmt::Display for CryptoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "decryption or verification failed")
    }
}

impl std::error::Error for CryptoError {}

/// AES block size (and IV length).
pub const IV_LEN: usize = 16;

/// The PSS salt length the clients use: the maximum for the key (emLen - 64 - 2).
pub fn max_salt_len(key: &RsaPublicKey) -> usize {
    let em_len = (key.n().bits() - 1).div_ceil(8);
    em_len.saturating_sub(Sha512::output_size() + 2)
}

/// RSA-OAEP-SHA1 decryption, blinded.
pub fn oaep_decrypt(
    key: &RsaPrivateKey,
    rng: &mut impl CryptoRngCore,
    ciphertext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    if ciphertext.len() != key.size() {
        return Err(CryptoError);
    }
    key.decrypt_blinded(rng, Oaep::new::<Sha1>(), ciphertext)
        .map_err(|_| CryptoError)
}

/// RSA-OAEP-SHA1 encryption.
pub fn oaep_encrypt(
    key: &RsaPublicKey,
    rng: &mut impl CryptoRngCore,
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    key.encrypt(rng, Oaep::new::<Sha1>(), plaintext)
        .map_err(|_| CryptoError)
}

/// Verifies an RSA-PSS-SHA512 signature (maximum salt length) over `message`.
pub fn pss_verify(key: &RsaPublicKey, message: &[u8], signature: &[u8]) -> bool {
    if signature.len() != key.size() {
        return false;
    }
    let hash = Sha512::digest(message);
    key.verify(
        Pss::new_with_salt::<Sha512>(max_salt_len(key)),
        &hash,
        signature,
    )
    .is_ok()
}

/// Signs `message` with RSA-PSS-SHA512, maximum salt length (the client side).
pub fn pss_sign(
    key: &RsaPrivateKey,
    rng: &mut impl CryptoRngCore,
    message: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let hash = Sha512::digest(message);
    let salt = max_salt_len(&key.to_public_key());
    key.sign_with_rng(rng, Pss::new_with_salt::<Sha512>(salt), &hash)
        .map_err(|_| CryptoError)
}

/// `IV || AES-256-CBC-PKCS7(plaintext)` with a fresh IV from `rng`.
pub fn seal(key: &[u8; 32], rng: &mut impl CryptoRngCore, plaintext: &[u8]) -> Vec<u8> {
    let mut iv = [0u8; IV_LEN];
    rng.fill_bytes(&mut iv);
    seal_with_iv(key, &iv, plaintext)
}

/// `IV || AES-256-CBC-PKCS7(plaintext)` with a given IV (vectors).
pub fn seal_with_iv(key: &[u8; 32], iv: &[u8; IV_LEN], plaintext: &[u8]) -> Vec<u8> {
    let enc = cbc::Encryptor::<Aes256>::new(key.into(), iv.into());
    let ct = enc.encrypt_padded_vec_mut::<Pkcs7>(plaintext);
    let mut out = Vec::with_capacity(IV_LEN + ct.len());
    out.extend_from_slice(iv);
    out.extend_from_slice(&ct);
    out
}

/// Opens `IV || ciphertext`.
pub fn open(key: &[u8; 32], frame: &[u8]) -> Result<Vec<u8>, CryptoError> {
    if frame.len() < 2 * IV_LEN || !frame.len().is_multiple_of(IV_LEN) {
        return Err(CryptoError);
    }
    let (iv, ct) = frame.split_at(IV_LEN);
    let dec = cbc::Decryptor::<Aes256>::new(key.into(), iv.into());
    dec.decrypt_padded_vec_mut::<Pkcs7>(ct)
        .map_err(|_| CryptoError)
}

/// A public key from PEM: SubjectPublicKeyInfo ("PUBLIC KEY") or PKCS#1 ("RSA PUBLIC KEY").
pub fn public_key_from_pem(pem: &str) -> Result<RsaPublicKey, String> {
    RsaPublicKey::from_public_key_pem(pem)
        .or_else(|_| RsaPublicKey::from_pkcs1_pem(pem))
        .map_err(|e| format!("not an RSA public key (SPKI or PKCS#1 PEM): {e}"))
}

/// A public key from SubjectPublicKeyInfo DER.
pub fn public_key_from_der(der: &[u8]) -> Result<RsaPublicKey, String> {
    RsaPublicKey::from_public_key_der(der).map_err(|e| format!("not an RSA public key: {e}"))
}

/// SubjectPublicKeyInfo DER of a public key.
pub fn public_key_der(key: &RsaPublicKey) -> Vec<u8> {
    key.to_public_key_der()
        .map(|d| d.as_bytes().to_vec())
        .unwrap_or_default()
}

/// A new RSA key pair of `bits` (2048 for the server).
pub fn generate_private_key(
    rng: &mut impl CryptoRngCore,
    bits: usize,
) -> Result<RsaPrivateKey, String> {
    RsaPrivateKey::new(rng, bits).map_err(|e| format!("RSA key generation failed: {e}"))
}

/// PKCS#8 PEM of a private key.
pub fn private_key_pem(key: &RsaPrivateKey) -> Result<String, String> {
    use rsa::pkcs8::EncodePrivateKey;
    key.to_pkcs8_pem(rsa::pkcs8::LineEnding::LF)
        .map(|p| p.to_string())
        .map_err(|e| format!("cannot encode the key: {e}"))
}

/// SubjectPublicKeyInfo PEM of a public key.
pub fn public_key_pem(key: &RsaPublicKey) -> Result<String, String> {
    key.to_public_key_pem(rsa::pkcs8::LineEnding::LF)
        .map_err(|e| format!("cannot encode the key: {e}"))
}

/// A private key from PKCS#8 PEM.
pub fn private_key_from_pem(pem: &str) -> Result<RsaPrivateKey, String> {
    RsaPrivateKey::from_pkcs8_pem(pem).map_err(|e| format!("not an RSA private key: {e}"))
}

#[cfg(test)]
mod tests {
    use rand_chacha::ChaCha8Rng;
    use rand_core::SeedableRng;

    use super::*;

    fn key(name: &str) -> RsaPrivateKey {
        crate::feed::test_key(name)
    }

    #[test]
    fn the_aes_vector_of_the_real_client() {
        let key: [u8; 32] = std::array::from_fn(|i| i as u8);
        let iv: [u8; 16] = std::array::from_fn(|i| i as u8);
        let pt = hex::decode("00000001000000000000002a000000277b224074797065223a202243616e63656c4f72646572222c20226f726465725f6964223a20317d00").expect("hex");
        let want = hex::decode("000102030405060708090a0b0c0d0e0f407723461b92af24c6f524e31476e877789072496224c74fc5de282d80c6d334f77f629f909b57f74c8e00754d157f95c26f4787b2e2668b52a5cfe29b497a2b").expect("hex");
        assert_eq!(seal_with_iv(&key, &iv, &pt), want);
        assert_eq!(open(&key, &want), Ok(pt));
        let mut bad = want.clone();
        *bad.last_mut().expect("byte") ^= 1;
        assert_eq!(open(&key, &bad), Err(CryptoError));
        assert_eq!(open(&key, &want[..20]), Err(CryptoError));
    }

    #[test]
    fn oaep_round_trip_and_one_error() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let server = key("server");
        let ct = oaep_encrypt(&server.to_public_key(), &mut rng, b"hello").expect("enc");
        assert_eq!(oaep_decrypt(&server, &mut rng, &ct), Ok(b"hello".to_vec()));
        let other = key("client_a");
        assert_eq!(oaep_decrypt(&other, &mut rng, &ct), Err(CryptoError));
        assert_eq!(oaep_decrypt(&server, &mut rng, &ct[1..]), Err(CryptoError));
    }

    #[test]
    fn pss_with_the_maximum_salt() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let client = key("client_a");
        let public = client.to_public_key();
        assert_eq!(max_salt_len(&public), 190, "2048-bit key");
        let sig = pss_sign(&client, &mut rng, b"data to sign").expect("sign");
        assert!(pss_verify(&public, b"data to sign", &sig));
        assert!(!pss_verify(&public, b"data to sigN", &sig));
        assert!(!pss_verify(
            &key("client_b").to_public_key(),
            b"data to sign",
            &sig
        ));
        // A signature with another salt length is not this protocol's.
        let hash = Sha512::digest(b"data to sign");
        let short = client
            .sign_with_rng(&mut rng, Pss::new_with_salt::<Sha512>(64), &hash)
            .expect("sign");
        assert!(!pss_verify(&public, b"data to sign", &short));
    }

    #[test]
    fn public_keys_in_both_pem_forms() {
        use rsa::pkcs1::EncodeRsaPublicKey;
        let public = key("client_a").to_public_key();
        let spki = public
            .to_public_key_pem(rsa::pkcs8::LineEnding::LF)
            .expect("spki");
        let pkcs1 = public
            .to_pkcs1_pem(rsa::pkcs1::LineEnding::LF)
            .expect("pkcs1");
        assert_eq!(public_key_from_pem(&spki), Ok(public.clone()));
        assert_eq!(public_key_from_pem(&pkcs1), Ok(public.clone()));
        assert!(public_key_from_pem("nope").is_err());
        assert_eq!(public_key_from_der(&public_key_der(&public)), Ok(public));
    }
}
