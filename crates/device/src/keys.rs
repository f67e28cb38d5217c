//! Device key pairs, derived from the simulation seed so that a fleet can be replayed and
//! its devices' public keys are known without storing private keys.

use domain::Eui64;
use domain::crypto::{self, SigningKey};

/// What a key is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyUse {
    Signing,
    KeyAgreement,
}

/// The private scalar of a device key.
pub fn device_scalar(fleet_seed: u64, eui: Eui64, key_use: KeyUse) -> [u8; 32] {
    let label: &[u8] = match key_use {
        KeyUse::Signing => b"sign",
        KeyUse::KeyAgreement => b"ka",
    };
    let mut material = b"meterhub/device/".to_vec();
    material.extend_from_slice(&fleet_seed.to_be_bytes());
    material.extend_from_slice(&eui.as_u64().to_be_bytes());
    material.extend_from_slice(label);
    crypto::derive_p256_scalar(&material)
}

/// A device's signing key.
pub fn signing_key(fleet_seed: u64, eui: Eui64) -> SigningKey {
    SigningKey::from_scalar(&device_scalar(fleet_seed, eui, KeyUse::Signing)).expect("derived scalars are valid")
}

/// A device's key-agreement public point (uncompressed, 65 bytes).
pub fn key_agreement_public(fleet_seed: u64, eui: Eui64) -> Vec<u8> {
    crypto::p256_public_point(&device_scalar(fleet_seed, eui, KeyUse::KeyAgreement)).expect("derived scalars are valid")
}
