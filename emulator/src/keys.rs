//! Signing keys (P-256 for ES256, RSA for RS256), the libtrust key id, and the self-signed
//! certificate docker-registry needs in its `rootcertbundle`.

use std::sync::Arc;

use data_encoding::BASE32_NOPAD;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};
use sha2::{Digest, Sha256};

use crate::util::{pem_decode, pem_encode};

/// DER prefix of a P-256 SubjectPublicKeyInfo, followed by the 65-byte uncompressed point.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce,
    0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// A private signing key.
#[derive(Clone)]
pub enum SigningKey {
    /// ECDSA P-256 / SHA-256 (JWT `ES256`, raw `r||s` signatures).
    Es256 {
        /// The key pair.
        pair: Arc<EcdsaKeyPair>,
        /// Its PKCS#8 DER.
        pkcs8: Arc<Vec<u8>>,
    },
    /// RSA PKCS#1 v1.5 / SHA-256 (JWT `RS256`).
    Rs256 {
        /// The key pair.
        pair: Arc<RsaKeyPair>,
    },
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.alg())
    }
}

impl SigningKey {
    /// A fresh random P-256 key.
    pub fn generate_es256() -> Result<SigningKey, String> {
        let rng = SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| "P-256 key generation failed".to_string())?;
        Self::from_pkcs8_der(doc.as_ref())
    }

    /// Parses a PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`): P-256 or RSA.
    pub fn from_pkcs8_pem(pem: &str) -> Result<SigningKey, String> {
        let der =
            pem_decode(pem, "PRIVATE KEY").ok_or("expected a PEM block `-----BEGIN PRIVATE KEY-----` (PKCS#8)")?;
        Self::from_pkcs8_der(&der)
    }

    fn from_pkcs8_der(der: &[u8]) -> Result<SigningKey, String> {
        let rng = SystemRandom::new();
        if let Ok(pair) = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng) {
            return Ok(SigningKey::Es256 { pair: Arc::new(pair), pkcs8: Arc::new(der.to_vec()) });
        }
        match RsaKeyPair::from_pkcs8(der) {
            Ok(pair) => Ok(SigningKey::Rs256 { pair: Arc::new(pair) }),
            Err(e) => Err(format!("not a P-256 or RSA PKCS#8 private key: {e}")),
        }
    }

    /// The JWT `alg` of this key.
    pub fn alg(&self) -> &'static str {
        match self {
            SigningKey::Es256 { .. } => "ES256",
            SigningKey::Rs256 { .. } => "RS256",
        }
    }

    /// Signs `msg`; ES256 gives the fixed 64-byte `r||s` form JWS requires.
    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, String> {
        let rng = SystemRandom::new();
        match self {
            SigningKey::Es256 { pair, .. } => {
                pair.sign(&rng, msg).map(|s| s.as_ref().to_vec()).map_err(|_| "ECDSA signing failed".to_string())
            }
            SigningKey::Rs256 { pair } => {
                let mut sig = vec![0u8; pair.public().modulus_len()];
                pair.sign(&signature::RSA_PKCS1_SHA256, &rng, msg, &mut sig)
                    .map_err(|_| "RSA signing failed".to_string())?;
                Ok(sig)
            }
        }
    }

    /// Verifies a signature made by this key.
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        match self {
            SigningKey::Es256 { pair, .. } => {
                signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, pair.public_key().as_ref())
                    .verify(msg, sig)
                    .is_ok()
            }
            SigningKey::Rs256 { pair } => {
                signature::UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, pair.public().as_ref())
                    .verify(msg, sig)
                    .is_ok()
            }
        }
    }

    /// DER SubjectPublicKeyInfo of an ES256 key (`None` for RSA).
    pub fn ec_spki_der(&self) -> Option<Vec<u8>> {
        match self {
            SigningKey::Es256 { pair, .. } => Some(p256_spki(pair.public_key().as_ref())),
            SigningKey::Rs256 { .. } => None,
        }
    }

    /// A self-signed certificate for this (P-256) key, as PEM.
    pub fn self_signed_cert_pem(&self, common_name: &str) -> Result<String, String> {
        let SigningKey::Es256 { pkcs8, .. } = self else {
            return Err("certificates are only made for P-256 keys".to_string());
        };
        let kp = rcgen::KeyPair::try_from(pkcs8.as_slice()).map_err(|e| e.to_string())?;
        let mut params =
            rcgen::CertificateParams::new(vec!["acr-emulator.invalid".to_string()]).map_err(|e| e.to_string())?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(rcgen::DnType::CommonName, common_name);
        let cert = params.self_signed(&kp).map_err(|e| e.to_string())?;
        Ok(cert.pem())
    }

    /// The PKCS#8 PEM of an ES256 key (`None` for RSA keys, which ring cannot export).
    pub fn pkcs8_pem(&self) -> Option<String> {
        match self {
            SigningKey::Es256 { pkcs8, .. } => Some(pem_encode(pkcs8, "PRIVATE KEY")),
            SigningKey::Rs256 { .. } => None,
        }
    }
}

/// DER SubjectPublicKeyInfo for an uncompressed P-256 point (`04 || x || y`).
pub fn p256_spki(point: &[u8]) -> Vec<u8> {
    let mut v = P256_SPKI_PREFIX.to_vec();
    v.extend_from_slice(point);
    v
}

/// libtrust key id: SHA-256 of the SPKI DER, first 30 bytes, base32 (no padding), 12 groups of
/// 4 joined by `:` (docker/libtrust `keyIDFromCryptoKey`).
pub fn libtrust_kid(spki_der: &[u8]) -> String {
    let digest = Sha256::digest(spki_der);
    let b32 = BASE32_NOPAD.encode(&digest[..30]);
    b32.as_bytes().chunks(4).map(|c| String::from_utf8_lossy(c).into_owned()).collect::<Vec<_>>().join(":")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::b64url_decode;

    #[test]
    fn libtrust_kid_matches_protocols_vector() {
        let x = b64url_decode("m7zUpx3b-zmVE5cymSs64POG9QcyEpJaYCD82-549_Q").unwrap();
        let y = b64url_decode("dU3biz8sZ_8GPB-odm8Wxz3lNDr1xcAQQPQaOcr1fmc").unwrap();
        let mut point = vec![4u8];
        point.extend_from_slice(&x);
        point.extend_from_slice(&y);
        assert_eq!(libtrust_kid(&p256_spki(&point)), "PYYO:TEWU:V7JH:26JV:AQTZ:LJC3:SXVJ:XGHA:34F2:2LAQ:ZRMK:Z7Q6");
    }

    #[test]
    fn es256_sign_verify_and_cert() {
        let k = SigningKey::generate_es256().unwrap();
        let sig = k.sign(b"hello").unwrap();
        assert_eq!(sig.len(), 64);
        assert!(k.verify(b"hello", &sig));
        assert!(!k.verify(b"hellp", &sig));
        let pem = k.self_signed_cert_pem("test").unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
        let again = SigningKey::from_pkcs8_pem(&k.pkcs8_pem().unwrap()).unwrap();
        assert_eq!(again.ec_spki_der(), k.ec_spki_der());
    }
}
