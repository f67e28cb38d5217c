//! All of meterhub's cryptography in one small module, so the backend (aws-lc-rs) stays
//! swappable: ECDSA P-256/SHA-256 keys and signatures, ECDH P-256 key agreement, AES-128-GCM
//! tags, SHA-256, PEM encoding of keys and reading public keys out of certificates.
//! Randomness comes in from the caller.

use aws_lc_rs::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
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
    #[error("no P-256 public key in the certificate")]
    Certificate,
    #[error("key agreement failed (the peer's point is not on P-256)")]
    Agreement,
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    d.as_ref().try_into().expect("SHA-256 is 32 bytes")
}

/// HMAC-SHA256 of `message` under `key` (webhook signatures).
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key);
    let tag = aws_lc_rs::hmac::sign(&key, message);
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

/// Random bytes from the system's secure source.
pub fn random_bytes<const N: usize>(rng: &dyn SecureRandom) -> Result<[u8; N], CryptoError> {
    let mut out = [0u8; N];
    rng.fill(&mut out).map_err(|_| CryptoError::Generation)?;
    Ok(out)
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

/// An ECDSA P-256 signing key: a party's (never held by the hub), or the hub's own
/// change-of-supplier key.
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

/// The DER prefix of a P-256 SubjectPublicKeyInfo (id-ecPublicKey, prime256v1, a 66-byte
/// BIT STRING) before the 65-byte uncompressed point. Its encoding is fixed, so a P-256 key
/// inside an X.509 certificate is found by it without a general certificate parser.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce,
    0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// The uncompressed P-256 point (65 bytes) in a PEM `CERTIFICATE` (X.509, as GBCS device
/// and organisation certificates are) or `PUBLIC KEY` (SubjectPublicKeyInfo).
pub fn p256_point_from_pem(text: &str) -> Result<Vec<u8>, CryptoError> {
    let block = pem::parse(text).map_err(|e| CryptoError::Pem(e.to_string()))?;
    let der = block.contents();
    let at = match block.tag() {
        "CERTIFICATE" => {
            // The subject key comes first in a certificate: its issuer's signature follows it.
            der.windows(P256_SPKI_PREFIX.len()).position(|w| w == P256_SPKI_PREFIX).ok_or(CryptoError::Certificate)?
        }
        "PUBLIC KEY" if der.starts_with(&P256_SPKI_PREFIX) => 0,
        "PUBLIC KEY" => return Err(CryptoError::PublicKey),
        other => return Err(CryptoError::PemLabel { found: other.to_string(), expected: "CERTIFICATE or PUBLIC KEY" }),
    };
    let spki = der.get(at..at + P256_SPKI_PREFIX.len() + 65).ok_or(CryptoError::Certificate)?;
    // Refuse a point not on the curve now rather than at first use.
    ParsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, spki).map_err(|_| CryptoError::PublicKey)?;
    Ok(spki[P256_SPKI_PREFIX.len()..].to_vec())
}

/// An ECDH P-256 private key (a supplier's prepayment key-agreement key, a device's
/// key-agreement key).
pub struct KeyAgreementKey {
    key: agreement::PrivateKey,
}

impl KeyAgreementKey {
    /// From PEM: `PRIVATE KEY` (PKCS#8) or `EC PRIVATE KEY` (RFC 5915).
    pub fn from_pem(text: &str) -> Result<KeyAgreementKey, CryptoError> {
        let block = pem::parse(text).map_err(|e| CryptoError::Pem(e.to_string()))?;
        if block.tag() != "PRIVATE KEY" && block.tag() != "EC PRIVATE KEY" {
            return Err(CryptoError::PemLabel { found: block.tag().to_string(), expected: "PRIVATE KEY" });
        }
        let key = agreement::PrivateKey::from_private_key_der(&agreement::ECDH_P256, block.contents())
            .map_err(|_| CryptoError::PrivateKey)?;
        Ok(KeyAgreementKey { key })
    }

    /// A new random key (the backend's own secure random source).
    pub fn generate() -> Result<KeyAgreementKey, CryptoError> {
        let key = agreement::PrivateKey::generate(&agreement::ECDH_P256).map_err(|_| CryptoError::Generation)?;
        Ok(KeyAgreementKey { key })
    }

    /// From PKCS#8 DER (as [`KeyAgreementKey::pkcs8_der`] writes it).
    pub fn from_pkcs8_der(der: &[u8]) -> Result<KeyAgreementKey, CryptoError> {
        let key = agreement::PrivateKey::from_private_key_der(&agreement::ECDH_P256, der)
            .map_err(|_| CryptoError::PrivateKey)?;
        Ok(KeyAgreementKey { key })
    }

    /// The private key as PKCS#8 DER.
    pub fn pkcs8_der(&self) -> Result<Vec<u8>, CryptoError> {
        let der: aws_lc_rs::encoding::Pkcs8V1Der = self.key.as_der().map_err(|_| CryptoError::PrivateKey)?;
        Ok(der.as_ref().to_vec())
    }

    pub fn from_scalar(scalar: &[u8; 32]) -> Result<KeyAgreementKey, CryptoError> {
        let key = agreement::PrivateKey::from_private_key(&agreement::ECDH_P256, scalar)
            .map_err(|_| CryptoError::PrivateKey)?;
        Ok(KeyAgreementKey { key })
    }

    /// The uncompressed public point (65 bytes).
    pub fn public_point(&self) -> Vec<u8> {
        self.key.compute_public_key().map(|p| p.as_ref().to_vec()).expect("a valid private key has a public key")
    }

    /// The public key as PEM SubjectPublicKeyInfo.
    pub fn public_key_pem(&self) -> String {
        let mut spki = P256_SPKI_PREFIX.to_vec();
        spki.extend_from_slice(&self.public_point());
        public_key_pem(&spki)
    }

    /// The private key as PEM PKCS#8.
    pub fn private_key_pem(&self) -> Result<String, CryptoError> {
        Ok(private_key_pem(&self.pkcs8_der()?))
    }

    /// The ECDH shared secret Z (the x-coordinate, 32 bytes) with a peer's public point.
    pub fn shared_secret(&self, peer_point: &[u8]) -> Result<[u8; 32], CryptoError> {
        let peer = agreement::UnparsedPublicKey::new(&agreement::ECDH_P256, peer_point);
        agreement::agree(&self.key, peer, CryptoError::Agreement, |z| z.try_into().map_err(|_| CryptoError::Agreement))
    }
}

/// The 16-byte AES-128-GCM tag over `aad` with an empty plaintext.
pub fn aes128_gcm_tag(key: &[u8; 16], iv: &[u8; 12], aad: &[u8]) -> [u8; 16] {
    let key = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, key).expect("16 bytes is an AES-128 key"));
    let tag = key
        .seal_in_place_separate_tag(Nonce::assume_unique_for_key(*iv), Aad::from(aad), &mut [])
        .expect("sealing an empty message cannot fail");
    tag.as_ref().try_into().expect("GCM tags are 16 bytes")
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
