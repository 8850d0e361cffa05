//! Classifying and checking the `signature` bytes of a payment.
//!
//! Three shapes exist: a 65-byte ECDSA signature from a plain wallet (EOA), an ERC-6492
//! wrapper (ends in the magic suffix) around a smart wallet's signature, and anything else,
//! which only an ERC-1271 smart wallet can vouch for. ECDSA recovery goes through
//! libsecp256k1 (the `secp256k1` crate), which is several times faster than a pure-Rust
//! curve and is the dominant cost of verifying a payment.

use alloy_primitives::{Address, B256, Bytes, U256, b256, keccak256};
use alloy_sol_types::SolValue;
use secp256k1::SECP256K1;
use secp256k1::ecdsa::{RecoverableSignature, RecoveryId};

use crate::VerifyError;

/// The 32-byte suffix that marks an ERC-6492 signature.
pub const ERC6492_MAGIC: B256 = b256!("6492649264926492649264926492649264926492649264926492649264926492");

/// Half the secp256k1 group order: a canonical (low-s) signature has `s <= HALF_ORDER`.
const SECP256K1_HALF_ORDER: U256 =
    U256::from_be_bytes(b256!("7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0").0);

/// A plain wallet's ECDSA signature with `v` normalised to 27/28, the only values the
/// token accepts (clients may send the 0/1 recovery id instead).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EcdsaSignature {
    /// `r`.
    pub r: B256,
    /// `s`, always in the lower half of the order.
    pub s: B256,
    /// 27 or 28.
    pub v: u8,
}

/// What a payment's signature bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureShape {
    /// 65 bytes `r ‖ s ‖ v`.
    Ecdsa(EcdsaSignature),
    /// An ERC-6492 wrapper: deploy `wallet` through `factory` with `factory_calldata`,
    /// then check `inner` with ERC-1271.
    Erc6492 {
        /// The wallet factory.
        factory: Address,
        /// The call that deploys the wallet.
        factory_calldata: Bytes,
        /// The signature the deployed wallet checks.
        inner: Bytes,
    },
    /// Bytes only an ERC-1271 wallet can interpret.
    Opaque(Bytes),
}

impl SignatureShape {
    /// Classifies signature bytes. A 65-byte value must already be a valid canonical
    /// ECDSA signature: the token would refuse it otherwise, for EOAs and for our
    /// smart-wallet contracts alike.
    pub fn parse(sig: &Bytes) -> Result<SignatureShape, VerifyError> {
        if let Some(body) = sig.strip_suffix(ERC6492_MAGIC.as_slice()) {
            let (factory, factory_calldata, inner) = <(Address, Bytes, Bytes)>::abi_decode_params(body)
                .map_err(|_| VerifyError::SignatureLength { len_bytes: sig.len() })?;
            return Ok(SignatureShape::Erc6492 { factory, factory_calldata, inner });
        }
        match <&[u8; 65]>::try_from(sig.as_ref()) {
            Ok(bytes) => parse_ecdsa(bytes).map(SignatureShape::Ecdsa),
            Err(_) => Ok(SignatureShape::Opaque(sig.clone())),
        }
    }
}

fn parse_ecdsa(bytes: &[u8; 65]) -> Result<EcdsaSignature, VerifyError> {
    let (rs, v) = bytes.split_at(64);
    let (r, s) = rs.split_at(32);
    let v = match v.first().copied().unwrap_or(0) {
        v @ (27 | 28) => v,
        v @ (0 | 1) => v + 27,
        v => return Err(VerifyError::SignatureBadV { v }),
    };
    let s = B256::from_slice(s);
    if U256::from_be_bytes(s.0) > SECP256K1_HALF_ORDER {
        return Err(VerifyError::SignatureHighS);
    }
    Ok(EcdsaSignature { r: B256::from_slice(r), s, v })
}

impl EcdsaSignature {
    /// The address whose key made this signature over `digest`, if any.
    pub fn recover(&self, digest: B256) -> Option<Address> {
        let mut compact = [0u8; 64];
        let (r, s) = compact.split_at_mut(32);
        r.copy_from_slice(self.r.as_slice());
        s.copy_from_slice(self.s.as_slice());
        let recid = RecoveryId::try_from(i32::from(self.v - 27)).ok()?;
        let sig = RecoverableSignature::from_compact(&compact, recid).ok()?;
        let key = SECP256K1.recover_ecdsa(secp256k1::Message::from_digest(digest.0), &sig).ok()?;
        let uncompressed = key.serialize_uncompressed();
        let hash = keccak256(uncompressed.get(1..)?);
        Some(Address::from_slice(hash.get(12..)?))
    }

    /// The 65 bytes `r ‖ s ‖ v` with `v` as 27/28.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = Vec::with_capacity(65);
        out.extend_from_slice(self.r.as_slice());
        out.extend_from_slice(self.s.as_slice());
        out.push(self.v);
        out.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: v is normalised, bad v and high s are refused, other lengths are opaque.
    #[test]
    fn classifies_signature_bytes() {
        let mut sig = [0u8; 65];
        sig[31] = 1;
        sig[63] = 1;
        sig[64] = 0;
        let parsed = SignatureShape::parse(&Bytes::copy_from_slice(&sig));
        assert!(matches!(parsed, Ok(SignatureShape::Ecdsa(EcdsaSignature { v: 27, .. }))));
        sig[64] = 29;
        assert_eq!(SignatureShape::parse(&Bytes::copy_from_slice(&sig)), Err(VerifyError::SignatureBadV { v: 29 }));
        sig[64] = 28;
        sig[32] = 0x80;
        assert_eq!(SignatureShape::parse(&Bytes::copy_from_slice(&sig)), Err(VerifyError::SignatureHighS));
        let short = Bytes::from_static(&[1, 2, 3]);
        assert_eq!(SignatureShape::parse(&short), Ok(SignatureShape::Opaque(short.clone())));
    }
}
