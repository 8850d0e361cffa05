//! Signing payments the way a client does, with alloy's generic EIP-712 encoder.

use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use alloy_primitives::{Address, B256, Bytes, U256};
use alloy_sol_types::{Eip712Domain, SolStruct, eip712_domain, sol};
use tollgate_x402::{Authorization, DecimalU256, ExactEvmPayload, PaymentPayload, v1, v2};

sol! {
    /// EIP-3009 message.
    struct TransferWithAuthorization {
        address from;
        address to;
        uint256 value;
        uint256 validAfter;
        uint256 validBefore;
        bytes32 nonce;
    }
    /// EIP-3009 cancellation.
    struct CancelAuthorization {
        address authorizer;
        bytes32 nonce;
    }
}

/// Signs a digest with `key`; returns 65 bytes `r ‖ s ‖ v` with v = 27/28.
pub fn sign_authorization_digest(key: &PrivateKeySigner, digest: B256) -> Bytes {
    let sig = key.sign_hash_sync(&digest).expect("signing");
    Bytes::from(sig.as_bytes().to_vec())
}

/// Signs a `TransferWithAuthorization` under `domain`.
pub fn sign_transfer_authorization(
    key: &PrivateKeySigner,
    domain: &Eip712Domain,
    msg: &TransferWithAuthorization,
) -> Bytes {
    sign_authorization_digest(key, msg.eip712_signing_hash(domain))
}

/// Signs a `CancelAuthorization`; returns (v, r, s).
pub fn sign_cancel(
    key: &PrivateKeySigner,
    domain: &Eip712Domain,
    authorizer: Address,
    nonce: B256,
) -> (u8, B256, B256) {
    let digest = CancelAuthorization { authorizer, nonce }.eip712_signing_hash(domain);
    let sig = key.sign_hash_sync(&digest).expect("signing");
    let bytes = sig.as_bytes();
    (bytes[64], B256::from_slice(&bytes[..32]), B256::from_slice(&bytes[32..64]))
}

/// Everything that goes into a payment, defaulted from an offer so that the untouched
/// builder makes a valid payment; tests change one field to make a bad one.
#[derive(Debug, Clone)]
pub struct PaymentBuilder {
    /// The offer being paid (echoed as `accepted` in v2).
    pub offer: v2::PaymentRequirements,
    /// Who signs.
    pub key: PrivateKeySigner,
    /// `authorization.from` (defaults to the key's address).
    pub from: Address,
    /// `authorization.to`.
    pub to: Address,
    /// `authorization.value`.
    pub value: U256,
    /// `validAfter`.
    pub valid_after: u64,
    /// `validBefore`.
    pub valid_before: u64,
    /// Nonce.
    pub nonce: B256,
    /// EIP-712 domain used for signing.
    pub domain_name: String,
    /// EIP-712 domain version used for signing.
    pub domain_version: String,
    /// Chain id used for signing.
    pub domain_chain_id: u64,
    /// verifyingContract used for signing.
    pub domain_contract: Address,
}

impl PaymentBuilder {
    /// A valid payment of `offer` by `key`, valid from 0 until `now_unix_s + 300`.
    pub fn new(offer: &v2::PaymentRequirements, key: &PrivateKeySigner, now_unix_s: u64) -> Self {
        let (name, version) = offer.eip712_name_version().unwrap_or(("USD Coin", "2"));
        PaymentBuilder {
            offer: offer.clone(),
            key: key.clone(),
            from: key.address(),
            to: offer.pay_to,
            value: offer.amount.0,
            valid_after: 0,
            valid_before: now_unix_s + 300,
            nonce: B256::random(),
            domain_name: name.to_owned(),
            domain_version: version.to_owned(),
            domain_chain_id: offer.network.chain_id,
            domain_contract: offer.asset,
        }
    }

    /// The signing domain.
    pub fn domain(&self) -> Eip712Domain {
        eip712_domain! {
            name: self.domain_name.clone(),
            version: self.domain_version.clone(),
            chain_id: self.domain_chain_id,
            verifying_contract: self.domain_contract,
        }
    }

    /// The message.
    pub fn message(&self) -> TransferWithAuthorization {
        TransferWithAuthorization {
            from: self.from,
            to: self.to,
            value: self.value,
            validAfter: U256::from(self.valid_after),
            validBefore: U256::from(self.valid_before),
            nonce: self.nonce,
        }
    }

    /// The EIP-712 digest of the message under the builder's domain.
    pub fn message_digest(&self) -> B256 {
        self.message().eip712_signing_hash(&self.domain())
    }

    /// The 65-byte signature.
    pub fn sign(&self) -> Bytes {
        sign_transfer_authorization(&self.key, &self.domain(), &self.message())
    }

    /// The `exact` payload with `signature`.
    pub fn exact_with(&self, signature: Bytes) -> ExactEvmPayload {
        ExactEvmPayload {
            signature,
            authorization: Authorization {
                from: self.from,
                to: self.to,
                value: DecimalU256(self.value),
                valid_after: DecimalU256::from(self.valid_after),
                valid_before: DecimalU256::from(self.valid_before),
                nonce: self.nonce,
            },
        }
    }

    /// A v2 payment with `signature`.
    pub fn v2_with(&self, signature: Bytes) -> PaymentPayload {
        PaymentPayload::V2(v2::PaymentPayload {
            x402_version: 2,
            resource: None,
            accepted: self.offer.clone(),
            payload: self.exact_with(signature),
            extensions: None,
        })
    }

    /// A signed v2 payment.
    pub fn v2(&self) -> PaymentPayload {
        self.v2_with(self.sign())
    }

    /// A signed v1 payment.
    pub fn v1(&self) -> PaymentPayload {
        PaymentPayload::V1(v1::PaymentPayload {
            x402_version: 1,
            scheme: "exact".into(),
            network: self.offer.network,
            payload: self.exact_with(self.sign()),
        })
    }
}

/// A v2 `PAYMENT-SIGNATURE` header value.
pub fn v2_header(b: &PaymentBuilder) -> String {
    b.v2().to_header().expect("v2 encodes")
}

/// A v1 `X-PAYMENT` header value.
pub fn v1_header(b: &PaymentBuilder) -> String {
    b.v1().to_header().expect("v1 encodes on a named chain")
}
