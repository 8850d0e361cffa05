//! The payment as the ledger keeps it between the reservation and the settlement.
//!
//! A verified payment is written into its ledger entry when the spend is reserved and read
//! back by whoever settles it (the live call, the deferred worker, the recovery sweep of
//! another process, possibly a newer or older binary). Its JSON is therefore a persisted
//! format: this module owns it, with every field name pinned here (never derived from the
//! verifier's types, whose names may change) and an explicit version `v`.
//!
//! Versions:
//! - `0` (no `v` field): what gateways before the versioned format wrote, the verifier's
//!   `VerifiedPayment` serialised as it was then. Same field names as `1`; still accepted so
//!   that entries in flight during an upgrade settle.
//! - `1`: `0` plus `"v": 1`.
//!
//! A golden file per version (`src/stored_payment/v*.json`) must keep parsing.
//!
//! Owns the format and its conversions; must not know the database or HTTP.

use alloy_primitives::{Address, B256, Bytes, U256};
use tollgate_verifier::{EcdsaSignature, SignatureCheck, TransferAuthorization, VerifiedPayment};

/// The version this gateway writes.
pub const STORED_PAYMENT_VERSION: u32 = 1;

/// Why a stored payment cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StoredPaymentError {
    /// Not JSON of any known version (a corrupted row).
    #[error("stored payment unreadable: {0}")]
    Unreadable(serde_json::Error),
    /// Written by a newer gateway: left for a process that knows the version, never failed.
    #[error("stored payment version {v} is newer than this gateway's {STORED_PAYMENT_VERSION}")]
    NewerVersion {
        /// The version found.
        v: u32,
    },
}

/// A verified payment in its stored form.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredPayment {
    /// Format version; absent (0) in entries written before versioning.
    #[serde(rename = "v", default)]
    pub v: u32,
    /// EIP-155 chain id.
    #[serde(rename = "chainId")]
    pub chain_id: u64,
    /// Token contract.
    #[serde(rename = "asset")]
    pub asset: Address,
    /// The signed `TransferWithAuthorization` message.
    #[serde(rename = "authorization")]
    pub authorization: StoredAuthorization,
    /// The signature settlement sends, and which overload it takes.
    #[serde(rename = "signature")]
    pub signature: StoredSignature,
    /// The EIP-712 digest that was signed.
    #[serde(rename = "digest")]
    pub digest: B256,
}

/// The fields of the signed authorization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredAuthorization {
    /// Payer.
    #[serde(rename = "from")]
    pub from: Address,
    /// Payee.
    #[serde(rename = "to")]
    pub to: Address,
    /// Amount (atomic units).
    #[serde(rename = "value")]
    pub value: U256,
    /// Valid strictly after this unix time.
    #[serde(rename = "validAfter")]
    pub valid_after: U256,
    /// Valid strictly before this unix time.
    #[serde(rename = "validBefore")]
    pub valid_before: U256,
    /// Single-use nonce.
    #[serde(rename = "nonce")]
    pub nonce: B256,
}

/// How the payment's signature is sent.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum StoredSignature {
    /// A plain wallet: the `(v, r, s)` overload.
    #[serde(rename = "ecdsa")]
    Ecdsa {
        /// `r`.
        #[serde(rename = "r")]
        r: B256,
        /// `s`.
        #[serde(rename = "s")]
        s: B256,
        /// 27 or 28.
        #[serde(rename = "v")]
        v: u8,
    },
    /// A smart wallet (ERC-1271): the `bytes signature` overload.
    #[serde(rename = "contract")]
    Contract(Bytes),
}

impl StoredPayment {
    /// The stored form of `p`, at the current version.
    pub fn new(p: &VerifiedPayment) -> Self {
        let a = &p.authorization;
        StoredPayment {
            v: STORED_PAYMENT_VERSION,
            chain_id: p.chain_id,
            asset: p.asset,
            authorization: StoredAuthorization {
                from: a.from,
                to: a.to,
                value: a.value,
                valid_after: a.valid_after,
                valid_before: a.valid_before,
                nonce: a.nonce,
            },
            signature: match &p.signature {
                SignatureCheck::Ecdsa(s) => StoredSignature::Ecdsa { r: s.r, s: s.s, v: s.v },
                SignatureCheck::Contract(b) => StoredSignature::Contract(b.clone()),
            },
            digest: p.digest,
        }
    }

    /// The JSON written into the ledger entry.
    pub fn to_json(p: &VerifiedPayment) -> Result<String, serde_json::Error> {
        serde_json::to_string(&StoredPayment::new(p))
    }

    /// Reads an entry's stored payment, of any version this gateway knows.
    pub fn parse(json: &str) -> Result<VerifiedPayment, StoredPaymentError> {
        // The version is read first, so that a newer format is recognised as such even when
        // its fields no longer parse as ours.
        #[derive(serde::Deserialize)]
        struct Version {
            #[serde(rename = "v", default)]
            v: u32,
        }
        let Version { v } = serde_json::from_str(json).map_err(StoredPaymentError::Unreadable)?;
        if v > STORED_PAYMENT_VERSION {
            return Err(StoredPaymentError::NewerVersion { v });
        }
        let stored: StoredPayment = serde_json::from_str(json).map_err(StoredPaymentError::Unreadable)?;
        Ok(stored.into_verified())
    }

    fn into_verified(self) -> VerifiedPayment {
        let a = self.authorization;
        VerifiedPayment {
            chain_id: self.chain_id,
            asset: self.asset,
            authorization: TransferAuthorization {
                from: a.from,
                to: a.to,
                value: a.value,
                valid_after: a.valid_after,
                valid_before: a.valid_before,
                nonce: a.nonce,
            },
            signature: match self.signature {
                StoredSignature::Ecdsa { r, s, v } => SignatureCheck::Ecdsa(EcdsaSignature { r, s, v }),
                StoredSignature::Contract(b) => SignatureCheck::Contract(b),
            },
            digest: self.digest,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The payment the golden files hold.
    fn payment(signature: SignatureCheck) -> VerifiedPayment {
        VerifiedPayment {
            chain_id: 8453,
            asset: "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913".parse().unwrap(),
            authorization: TransferAuthorization {
                from: "0x70997970C51812dc3A010C7d01b50e0d17dc79C8".parse().unwrap(),
                to: "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC".parse().unwrap(),
                value: U256::from(1000u64),
                valid_after: U256::from(1_700_000_000u64),
                valid_before: U256::from(1_700_000_600u64),
                nonce: B256::repeat_byte(0x11),
            },
            signature,
            digest: B256::repeat_byte(0x22),
        }
    }

    fn ecdsa() -> SignatureCheck {
        SignatureCheck::Ecdsa(EcdsaSignature { r: B256::repeat_byte(0x33), s: B256::repeat_byte(0x44), v: 28 })
    }

    fn contract() -> SignatureCheck {
        SignatureCheck::Contract(Bytes::from(vec![0xde, 0xad, 0xbe, 0xef]))
    }

    fn golden(json: &str) -> serde_json::Value {
        serde_json::from_str(json).unwrap()
    }

    // Goal: the committed v1 files parse into the payment they were written from, and what this
    // gateway writes today is exactly those files (renaming a field fails here, not in flight).
    #[test]
    fn v1_golden_files_parse_and_are_what_is_written() {
        for (file, signature) in [
            (include_str!("stored_payment/v1_ecdsa.json"), ecdsa()),
            (include_str!("stored_payment/v1_contract.json"), contract()),
        ] {
            let p = payment(signature);
            assert_eq!(StoredPayment::parse(file).ok(), Some(p.clone()));
            let written = StoredPayment::to_json(&p).unwrap();
            assert_eq!(golden(&written), golden(file));
        }
    }

    // Goal: entries written before the format was versioned (the verifier's serialisation, no
    // `v`) still parse, so settlements in flight during an upgrade complete; the committed
    // file is that old shape, and today's verifier still writes it.
    #[test]
    fn unversioned_entries_still_parse() {
        let p = payment(ecdsa());
        assert_eq!(StoredPayment::parse(include_str!("stored_payment/v0_ecdsa.json")).ok(), Some(p.clone()));
        let old = serde_json::to_string(&p).unwrap();
        assert_eq!(StoredPayment::parse(&old).ok(), Some(p));
        let p = payment(contract());
        let old = serde_json::to_string(&p).unwrap();
        assert_eq!(StoredPayment::parse(&old).ok(), Some(p));
    }

    // Goal: a newer version is named as such (left for a newer process), and garbage is unreadable.
    #[test]
    fn newer_and_garbage_are_told_apart() {
        let newer = r#"{"v": 2, "something": "else"}"#;
        assert!(matches!(StoredPayment::parse(newer), Err(StoredPaymentError::NewerVersion { v: 2 })));
        assert!(matches!(StoredPayment::parse("not json"), Err(StoredPaymentError::Unreadable(_))));
        assert!(matches!(StoredPayment::parse(r#"{"v": 1}"#), Err(StoredPaymentError::Unreadable(_))));
    }
}
