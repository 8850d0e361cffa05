//! Signing an EIP-3009 `TransferWithAuthorization` for one offer, with alloy's generic
//! EIP-712 encoder.
//!
//! Owns the choice of the validity window and the nonce. Must not do IO.
//!
//! - `validAfter = 0`, like the official v2 client (x402 notes §3): valid at once, with no
//!   dependence on our clock being behind the chain's. The token's rule is `now >
//!   validAfter`, which 0 always meets.
//! - `validBefore = now + maxTimeoutSeconds` (at least 30 s): the server promised to settle
//!   within `maxTimeoutSeconds`, and a short window limits what a leaked header is worth.
//! - A random 32-byte nonce from the operating system's generator.

use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use alloy_primitives::{B256, Bytes, U256};
use alloy_sol_types::{Eip712Domain, SolStruct};
use tollgate_x402::{Authorization, DecimalU256, ExactEvmPayload, v2};

use crate::error::ClientError;

mod eip3009 {
    alloy_sol_types::sol! {
        struct TransferWithAuthorization {
            address from;
            address to;
            uint256 value;
            uint256 validAfter;
            uint256 validBefore;
            bytes32 nonce;
        }
    }
}

/// The shortest validity window we sign, whatever the offer says.
const VALIDITY_MIN_S: u64 = 30;

/// A fresh random nonce.
pub(crate) fn random_nonce() -> Result<B256, ClientError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| ClientError::key(format!("no randomness for the nonce: {e}")))?;
    Ok(B256::from(bytes))
}

/// A fresh x402 payment identifier: `pay_` and 32 random hex digits (36 characters, within
/// the extension's 16–128 of `[A-Za-z0-9_-]`).
pub(crate) fn random_payment_id() -> Result<String, ClientError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| ClientError::key(format!("no randomness for the payment id: {e}")))?;
    Ok(format!("pay_{}", alloy_primitives::hex::encode(bytes)))
}

/// `validBefore` for an offer signed at `now_unix_s`.
pub(crate) fn valid_before(offer: &v2::PaymentRequirements, now_unix_s: u64) -> u64 {
    now_unix_s.saturating_add(offer.max_timeout_seconds.max(VALIDITY_MIN_S))
}

/// Signs a payment of exactly `offer.amount` to `offer.pay_to`.
pub(crate) fn sign_exact(
    signer: &PrivateKeySigner,
    offer: &v2::PaymentRequirements,
    valid_before_unix_s: u64,
    nonce: B256,
) -> Result<ExactEvmPayload, ClientError> {
    let (name, version) = offer
        .eip712_name_version()
        .ok_or_else(|| ClientError::Protocol { reason: "offer lacks extra.name / extra.version".to_owned() })?;
    let domain = Eip712Domain::new(
        Some(name.to_owned().into()),
        Some(version.to_owned().into()),
        Some(U256::from(offer.network.chain_id)),
        Some(offer.asset),
        None,
    );
    let message = eip3009::TransferWithAuthorization {
        from: signer.address(),
        to: offer.pay_to,
        value: offer.amount.0,
        validAfter: U256::ZERO,
        validBefore: U256::from(valid_before_unix_s),
        nonce,
    };
    let digest = message.eip712_signing_hash(&domain);
    let signature = signer.sign_hash_sync(&digest).map_err(|_| ClientError::key("signing failed"))?;
    Ok(ExactEvmPayload {
        // r ‖ s ‖ v with v = 27/28, what the token's v,r,s overload and every verifier take.
        signature: Bytes::from(signature.as_bytes().to_vec()),
        authorization: Authorization {
            from: signer.address(),
            to: offer.pay_to,
            value: offer.amount,
            valid_after: DecimalU256::from(0u64),
            valid_before: DecimalU256::from(valid_before_unix_s),
            nonce,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::address;
    use tollgate_x402::Network;

    // Goal: the signature recovers to the signer under the offer's domain (name, version,
    // chain id, verifying contract = asset), and the message carries our window and nonce.
    #[test]
    fn signs_the_offer_under_its_domain() {
        let signer = PrivateKeySigner::random();
        let mut extra = serde_json::Map::new();
        extra.insert("name".into(), "USD Coin".into());
        extra.insert("version".into(), "2".into());
        let offer = v2::PaymentRequirements {
            scheme: "exact".into(),
            network: Network::BASE,
            amount: DecimalU256::from(1234u64),
            asset: address!("833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"),
            pay_to: address!("00000000000000000000000000000000000000aa"),
            max_timeout_seconds: 60,
            extra,
        };
        let nonce = random_nonce().unwrap();
        let p = sign_exact(&signer, &offer, valid_before(&offer, 1000), nonce).unwrap();
        assert_eq!(p.authorization.valid_before, DecimalU256::from(1060u64));
        assert_eq!(p.authorization.valid_after, DecimalU256::from(0u64));
        assert_eq!(p.authorization.nonce, nonce);
        let domain = alloy_sol_types::eip712_domain! {
            name: "USD Coin", version: "2", chain_id: 8453,
            verifying_contract: address!("833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"),
        };
        let msg = eip3009::TransferWithAuthorization {
            from: signer.address(),
            to: offer.pay_to,
            value: U256::from(1234),
            validAfter: U256::ZERO,
            validBefore: U256::from(1060),
            nonce,
        };
        let sig = alloy_primitives::Signature::from_raw(&p.signature).unwrap();
        let recovered = sig.recover_address_from_prehash(&msg.eip712_signing_hash(&domain)).unwrap();
        assert_eq!(recovered, signer.address());
        assert!(matches!(p.signature.last(), Some(27 | 28)));
        assert_eq!(valid_before(&v2::PaymentRequirements { max_timeout_seconds: 1, ..offer }, 1000), 1030);
    }
}
