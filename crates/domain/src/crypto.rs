//! All of meterhub's cryptography in one small module, so the backend (aws-lc-rs) stays
//! swappable: ECDSA P-256/SHA-256 keys and signatures, SHA-256, PEM encoding of keys.
//! Randomness comes in from the caller.

use aws_lc_rs::agreement;
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SecureRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair, ParsedPublicKey,
};

pub use aws_lc_rs::rand::SystemRandom;

/// Why key material was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("not PEM: {0}")]
    Pem(String),
    #[error("PEM label is {found:?}, expected {expected:?}")]
    PemLabel { found: String, expected: &'static str },
    #[error("not an ECDSA P-256 public key (SubjectPublicKeyInfo DER expected)")]
    PublicKey,
    #[error("not an ECDSA P-256 private key (PKCS#8 DER expected)")]
    PrivateKey,
    #[error("key generation failed")]
    Generation,
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    d.as_ref().try_into().expect("SHA-256 is 32 bytes")
}

/// Validate an ECDSA P-256 public key given as DER SubjectPublicKeyInfo (or an uncompressed
/// point) and return its canonical SubjectPublicKeyInfo DER.
pub fn p256_public_key_spki(der: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let key = ParsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, der).map_err(|_| CryptoError::PublicKey)?;
    let spki = key.as_der().map_err(|_| CryptoError::PublicKey)?;
    Ok(spki.as_ref().to_vec())
}

/// Parse a PEM `PUBLIC KEY` block holding an ECDSA P-256 key; returns SubjectPublicKeyInfo DER.
pub fn p256_public_key_from_pem(text: &str) -> Result<Vec<u8>, CryptoError> {
    let block = pem::parse(text).map_err(|e| CryptoError::Pem(e.to_string()))?;
    if block.tag() != "PUBLIC KEY" {
        return Err(CryptoError::PemLabel { found: block.tag().to_string(), expected: "PUBLIC KEY" });
    }
    p256_public_key_spki(block.contents())
}

/// PEM `PUBLIC KEY` text for SubjectPublicKeyInfo DER.
pub fn public_key_pem(spki: &[u8]) -> String {
    pem::encode(&pem::Pem::new("PUBLIC KEY", spki.to_vec()))
}

/// PEM `PRIVATE KEY` text for PKCS#8 DER.
pub fn private_key_pem(pkcs8: &[u8]) -> String {
    pem::encode(&pem::Pem::new("PRIVATE KEY", pkcs8.to_vec()))
}

/// An ECDSA P-256 signing key, held by a party (never by the hub).
pub struct SigningKey {
    pair: EcdsaKeyPair,
    pkcs8: Vec<u8>,
}

impl SigningKey {
    pub fn generate(rng: &dyn SecureRandom) -> Result<SigningKey, CryptoError> {
        let doc =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, rng).map_err(|_| CryptoError::Generation)?;
        SigningKey::from_pkcs8(doc.as_ref())
    }

    pub fn from_pkcs8(der: &[u8]) -> Result<SigningKey, CryptoError> {
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, der).map_err(|_| CryptoError::PrivateKey)?;
        Ok(SigningKey { pair, pkcs8: der.to_vec() })
    }

    /// The key whose private scalar is `scalar` (big-endian, 1 ≤ scalar < n).
    pub fn from_scalar(scalar: &[u8; 32]) -> Result<SigningKey, CryptoError> {
        let point = p256_public_point(scalar)?;
        let pair = EcdsaKeyPair::from_private_key_and_public_key(&ECDSA_P256_SHA256_ASN1_SIGNING, scalar, &point)
            .map_err(|_| CryptoError::PrivateKey)?;
        let pkcs8 = pair.to_pkcs8v1().map_err(|_| CryptoError::PrivateKey)?.as_ref().to_vec();
        Ok(SigningKey { pair, pkcs8 })
    }

    pub fn from_pem(text: &str) -> Result<SigningKey, CryptoError> {
        let block = pem::parse(text).map_err(|e| CryptoError::Pem(e.to_string()))?;
        if block.tag() != "PRIVATE KEY" {
            return Err(CryptoError::PemLabel { found: block.tag().to_string(), expected: "PRIVATE KEY" });
        }
        SigningKey::from_pkcs8(block.contents())
    }

    pub fn pkcs8_pem(&self) -> String {
        private_key_pem(&self.pkcs8)
    }

    /// SubjectPublicKeyInfo DER of the public half.
    pub fn public_key_spki(&self) -> Vec<u8> {
        let der = self.pair.public_key().as_der().expect("P-256 public key encodes");
        der.as_ref().to_vec()
    }

    /// ECDSA P-256/SHA-256 signature (ASN.1 DER) over `message`.
    pub fn sign(&self, rng: &dyn SecureRandom, message: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let sig = self.pair.sign(rng, message).map_err(|_| CryptoError::Generation)?;
        Ok(sig.as_ref().to_vec())
    }
}

/// The uncompressed public point (65 bytes) of a P-256 private scalar.
pub fn p256_public_point(scalar: &[u8; 32]) -> Result<Vec<u8>, CryptoError> {
    let key =
        agreement::PrivateKey::from_private_key(&agreement::ECDH_P256, scalar).map_err(|_| CryptoError::PrivateKey)?;
    let public = key.compute_public_key().map_err(|_| CryptoError::PrivateKey)?;
    Ok(public.as_ref().to_vec())
}

/// A valid P-256 private scalar derived deterministically from `material` (SHA-256 of the
/// material and a counter, retried in the rare case the hash is not a valid scalar). Used for
/// simulated devices, whose keys must be reproducible from the simulation seed.
pub fn derive_p256_scalar(material: &[u8]) -> [u8; 32] {
    for counter in 0u32.. {
        let mut input = material.to_vec();
        input.extend_from_slice(&counter.to_be_bytes());
        let candidate = sha256(&input);
        if p256_public_point(&candidate).is_ok() {
            return candidate;
        }
    }
    unreachable!("a valid scalar is found within a few tries")
}

/// Verify an ECDSA P-256/SHA-256 ASN.1 signature over `message` with a SubjectPublicKeyInfo.
pub fn verify_p256(spki: &[u8], message: &[u8], signature: &[u8]) -> bool {
    ParsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, spki)
        .map(|k| k.verify_sig(message, signature).is_ok())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_round_trips_through_pem_and_verifies() {
        let rng = SystemRandom::new();
        let key = SigningKey::generate(&rng).unwrap();
        let spki = key.public_key_spki();
        let pem_text = public_key_pem(&spki);
        assert_eq!(p256_public_key_from_pem(&pem_text).unwrap(), spki);
        let again = SigningKey::from_pem(&key.pkcs8_pem()).unwrap();
        let sig = again.sign(&rng, b"pre-command").unwrap();
        assert!(verify_p256(&spki, b"pre-command", &sig));
        assert!(!verify_p256(&spki, b"pre-commanD", &sig));
    }

    #[test]
    fn refuses_wrong_pem_label_and_garbage() {
        let rng = SystemRandom::new();
        let key = SigningKey::generate(&rng).unwrap();
        assert!(matches!(p256_public_key_from_pem(&key.pkcs8_pem()), Err(CryptoError::PemLabel { .. })));
        assert!(matches!(p256_public_key_from_pem("hello"), Err(CryptoError::Pem(_))));
        let junk = pem::encode(&pem::Pem::new("PUBLIC KEY", vec![1, 2, 3]));
        assert_eq!(p256_public_key_from_pem(&junk), Err(CryptoError::PublicKey));
    }

    #[test]
    fn derived_keys_are_reproducible_and_distinct() {
        let a = derive_p256_scalar(b"seed-1/00DB1234567890A0/sign");
        assert_eq!(a, derive_p256_scalar(b"seed-1/00DB1234567890A0/sign"));
        assert_ne!(a, derive_p256_scalar(b"seed-2/00DB1234567890A0/sign"));
        let key = SigningKey::from_scalar(&a).unwrap();
        let again = SigningKey::from_scalar(&a).unwrap();
        assert_eq!(key.public_key_spki(), again.public_key_spki());
        let sig = key.sign(&SystemRandom::new(), b"m").unwrap();
        assert!(verify_p256(&again.public_key_spki(), b"m", &sig));
        assert!(SigningKey::from_scalar(&[0u8; 32]).is_err());
        assert!(SigningKey::from_scalar(&[0xFF; 32]).is_err());
    }

    #[test]
    fn sha256_known_answer() {
        // FIPS 180-2 "abc".
        let h = sha256(b"abc");
        assert_eq!(h[..4], [0xba, 0x78, 0x16, 0xbf]);
    }
}
