//! Verifying a payment against one of our offers.
//!
//! The order follows the x402 reference (scheme → EIP-712 domain present → network →
//! signature → recipient → validity window → value), then the on-chain checks: asset has
//! code, authorization nonce unused, balance, and an `eth_call` simulation of the very
//! transfer settlement will send. The simulation is the last word: a payment the token would
//! refuse never verifies.
//!
//! [`check_offline`] is the CPU part (no IO) and is what the benchmark measures; a 65-byte
//! signature from a plain wallet is fully checked there. Smart-wallet signatures need the
//! chain and are finished in [`Verifier::verify`].

use std::collections::HashMap;
use std::sync::Arc;

use alloy_primitives::{Address, B256, Bytes, U256};
use alloy_sol_types::{SolCall, SolValue};
use tollgate_x402::{PaymentPayload, SCHEME_EXACT, v2};

use crate::VerifyError;
use crate::chain::{CallOutcome, Chain};
use crate::clock::Clock;
use crate::eip712::{TokenDomain, TransferAuthorization};
use crate::signature::{EcdsaSignature, SignatureShape};
use crate::token::{ERC1271_MAGIC, IERC1271, IEip3009, RevertContext, classify_revert, decode_revert_reason};

/// Verification policy. Library crates receive configuration by value.
#[derive(Debug, Clone)]
pub struct VerifierConfig {
    /// `validBefore` must be at least this far ahead of now, so the settlement transaction
    /// can still be mined in time (the reference uses 6 s, about three Base blocks).
    pub valid_before_buffer_s: u64,
    /// Optional cap on how far ahead `validBefore` may be. Clients differ widely (the Go SDK
    /// signs for an hour whatever the offer says), so the default is no cap.
    pub validity_window_max_s: Option<u64>,
    /// The address `eth_call` simulations run from (the relayer that will settle).
    pub simulate_from: Address,
}

impl Default for VerifierConfig {
    fn default() -> Self {
        VerifierConfig { valid_before_buffer_s: 6, validity_window_max_s: None, simulate_from: Address::ZERO }
    }
}

/// How the signature was (or must be) accepted; settlement sends the matching overload.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignatureCheck {
    /// A plain wallet: settle with the `(v, r, s)` overload.
    Ecdsa(EcdsaSignature),
    /// A smart wallet (ERC-1271): settle with the `bytes signature` overload.
    Contract(Bytes),
}

/// A payment that passed every check, ready to be reserved and settled. It serialises to
/// JSON so the ledger can keep it for settlement after a restart.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifiedPayment {
    /// Chain id.
    pub chain_id: u64,
    /// Token contract.
    pub asset: Address,
    /// The signed message.
    pub authorization: TransferAuthorization,
    /// The signature to send on settlement.
    pub signature: SignatureCheck,
    /// The EIP-712 digest that was signed.
    pub digest: B256,
}

impl VerifiedPayment {
    /// The payer.
    pub fn payer(&self) -> Address {
        self.authorization.from
    }

    /// The CAIP-2 network id (`eip155:<chain id>`).
    pub fn network(&self) -> String {
        tollgate_x402::Network::new(self.chain_id).caip2()
    }

    /// Calldata of the `transferWithAuthorization` overload that fits the signature.
    pub fn transfer_calldata(&self) -> Bytes {
        let a = &self.authorization;
        match &self.signature {
            SignatureCheck::Ecdsa(sig) => IEip3009::transferWithAuthorization_0Call {
                from: a.from,
                to: a.to,
                value: a.value,
                validAfter: a.valid_after,
                validBefore: a.valid_before,
                nonce: a.nonce,
                v: sig.v,
                r: sig.r,
                s: sig.s,
            }
            .abi_encode()
            .into(),
            SignatureCheck::Contract(signature) => IEip3009::transferWithAuthorization_1Call {
                from: a.from,
                to: a.to,
                value: a.value,
                validAfter: a.valid_after,
                validBefore: a.valid_before,
                nonce: a.nonce,
                signature: signature.clone(),
            }
            .abi_encode()
            .into(),
        }
    }
}

/// The result of the CPU checks: either fully verified off-chain (plain wallet) or with
/// the signature still to be confirmed by a smart wallet on chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfflineChecked {
    /// What was signed.
    pub authorization: TransferAuthorization,
    /// Its EIP-712 digest.
    pub digest: B256,
    /// The signature's status.
    pub signature: PendingSignature,
}

/// Whether the signature is already known good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PendingSignature {
    /// ECDSA recovery gave `from`.
    Verified(EcdsaSignature),
    /// Only a contract at `from` can accept it (or nobody can).
    NeedsWallet(SignatureShape),
}

fn saturate_u64(v: U256) -> u64 {
    u64::try_from(v).unwrap_or(u64::MAX)
}

/// The checks that need no chain: scheme, EIP-712 domain, network, signature (plain
/// wallets), recipient, validity window and value. `offer` must be ours, never the client's
/// echo of it.
pub fn check_offline(
    offer: &v2::PaymentRequirements,
    payment: &PaymentPayload,
    now_unix_s: u64,
    config: &VerifierConfig,
) -> Result<OfflineChecked, VerifyError> {
    if payment.scheme() != SCHEME_EXACT || offer.scheme != SCHEME_EXACT {
        return Err(VerifyError::UnsupportedScheme { scheme: payment.scheme().chars().take(32).collect() });
    }
    let (name, version) = offer.eip712_name_version().ok_or(VerifyError::MissingEip712Domain)?;
    if payment.network() != offer.network {
        return Err(VerifyError::NetworkMismatch {
            offered_chain_id: offer.network.chain_id,
            paid_chain_id: payment.network().chain_id,
        });
    }
    let exact = payment.exact();
    let wire = &exact.authorization;
    let authorization = TransferAuthorization {
        from: wire.from,
        to: wire.to,
        value: wire.value.0,
        valid_after: wire.valid_after.0,
        valid_before: wire.valid_before.0,
        nonce: wire.nonce,
    };
    let domain = TokenDomain { name, version, chain_id: offer.network.chain_id, verifying_contract: offer.asset };
    let digest = authorization.signing_hash(domain.separator_memo());
    let signature = match SignatureShape::parse(&exact.signature)? {
        SignatureShape::Ecdsa(sig) if sig.recover(digest) == Some(authorization.from) => {
            PendingSignature::Verified(sig)
        }
        shape => PendingSignature::NeedsWallet(shape),
    };
    if authorization.to != offer.pay_to {
        return Err(VerifyError::RecipientMismatch { expected: offer.pay_to, paid: authorization.to });
    }
    let valid_before_unix_s = saturate_u64(authorization.valid_before);
    if valid_before_unix_s < now_unix_s.saturating_add(config.valid_before_buffer_s) {
        return Err(VerifyError::Expired { valid_before_unix_s, now_unix_s });
    }
    if let Some(window_max_s) = config.validity_window_max_s
        && valid_before_unix_s > now_unix_s.saturating_add(window_max_s)
    {
        return Err(VerifyError::ValidityTooLong { valid_before_unix_s, window_max_s });
    }
    // The token requires `now > validAfter` (strictly): an authorization valid from this very
    // second would pass here and revert at settlement.
    let valid_after_unix_s = saturate_u64(authorization.valid_after);
    if valid_after_unix_s >= now_unix_s {
        return Err(VerifyError::NotYetValid { valid_after_unix_s, now_unix_s });
    }
    if authorization.value != offer.amount.0 {
        return Err(VerifyError::ValueMismatch { expected: offer.amount.0, paid: authorization.value });
    }
    Ok(OfflineChecked { authorization, digest, signature })
}

/// Verifies payments against the chains it is configured with.
pub struct Verifier {
    chains: HashMap<u64, Arc<dyn Chain>>,
    clock: Arc<dyn Clock>,
    config: VerifierConfig,
    /// Tokens (chain id, address) whose code has been seen.
    token_code_seen: std::sync::Mutex<std::collections::HashSet<(u64, Address)>>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").field("chains", &self.chains.keys()).field("config", &self.config).finish()
    }
}

impl Verifier {
    /// A verifier over `chains` (one per chain id), reading time from `clock`.
    pub fn new(chains: Vec<Arc<dyn Chain>>, clock: Arc<dyn Clock>, config: VerifierConfig) -> Self {
        let chains = chains.into_iter().map(|c| (c.chain_id(), c)).collect();
        Verifier { chains, clock, config, token_code_seen: std::sync::Mutex::default() }
    }

    /// The chain handle for `chain_id`.
    pub fn chain(&self, chain_id: u64) -> Result<&Arc<dyn Chain>, VerifyError> {
        self.chains.get(&chain_id).ok_or(VerifyError::ChainNotConfigured { chain_id })
    }

    /// The verifier's clock.
    pub fn now_unix_s(&self) -> u64 {
        self.clock.now_unix_s()
    }

    /// Runs every check, off-chain then on-chain, against our `offer`.
    pub async fn verify(
        &self,
        offer: &v2::PaymentRequirements,
        payment: &PaymentPayload,
    ) -> Result<VerifiedPayment, VerifyError> {
        let now_unix_s = self.clock.now_unix_s();
        let verified = self.verify_signature(offer, payment, now_unix_s).await?;
        let chain = self.chain(offer.network.chain_id)?;
        self.check_on_chain(chain.as_ref(), offer, &verified, now_unix_s).await?;
        Ok(verified)
    }

    /// The checks of [`Verifier::verify`] up to and including the signature (which needs
    /// the chain only for smart wallets), without the nonce, balance and simulation
    /// queries. For the deferred settlement path, where the caller guards the nonce with
    /// its ledger and the balance with a short-lived cache; a payment accepted this way
    /// can still fail at settlement.
    pub async fn verify_signature_only(
        &self,
        offer: &v2::PaymentRequirements,
        payment: &PaymentPayload,
    ) -> Result<VerifiedPayment, VerifyError> {
        self.verify_signature(offer, payment, self.clock.now_unix_s()).await
    }

    async fn verify_signature(
        &self,
        offer: &v2::PaymentRequirements,
        payment: &PaymentPayload,
        now_unix_s: u64,
    ) -> Result<VerifiedPayment, VerifyError> {
        let offline = check_offline(offer, payment, now_unix_s, &self.config)?;
        let chain = self.chain(offer.network.chain_id)?;
        let signature = match offline.signature {
            PendingSignature::Verified(sig) => SignatureCheck::Ecdsa(sig),
            PendingSignature::NeedsWallet(shape) => {
                wallet_signature(chain.as_ref(), offline.authorization.from, offline.digest, shape).await?
            }
        };
        Ok(VerifiedPayment {
            chain_id: offer.network.chain_id,
            asset: offer.asset,
            authorization: offline.authorization,
            signature,
            digest: offline.digest,
        })
    }

    /// The token balance of `who` on `chain_id`.
    pub async fn token_balance(&self, chain_id: u64, asset: Address, who: Address) -> Result<U256, VerifyError> {
        let chain = self.chain(chain_id)?;
        let call: Bytes = IEip3009::balanceOfCall { account: who }.abi_encode().into();
        match chain.call(None, asset, call).await? {
            CallOutcome::Success(out) => U256::abi_decode(&out)
                .map_err(|_| VerifyError::SimulationFailed { reason: "balanceOf returned malformed data".to_owned() }),
            CallOutcome::Reverted(data) => Err(VerifyError::SimulationFailed { reason: decode_revert_reason(&data) }),
        }
    }

    /// Whether `authorizer` has used or cancelled `nonce` on chain.
    pub async fn authorization_used(
        &self,
        chain_id: u64,
        asset: Address,
        authorizer: Address,
        nonce: B256,
    ) -> Result<bool, VerifyError> {
        self.authorization_state(chain_id, asset, authorizer, nonce, None).await
    }

    /// [`Verifier::authorization_used`] as of block `number`: a node behind that block answers
    /// an error, never the state of an older one (the recovery sweep pins every read that
    /// decides an entry to one block, so that two nodes behind a load balancer cannot give it
    /// facts from different blocks).
    pub async fn authorization_used_at(
        &self,
        chain_id: u64,
        asset: Address,
        authorizer: Address,
        nonce: B256,
        number: u64,
    ) -> Result<bool, VerifyError> {
        self.authorization_state(chain_id, asset, authorizer, nonce, Some(number)).await
    }

    /// The token's `authorizationState(authorizer, nonce)`, at the latest block or at `at`.
    async fn authorization_state(
        &self,
        chain_id: u64,
        asset: Address,
        authorizer: Address,
        nonce: B256,
        at: Option<u64>,
    ) -> Result<bool, VerifyError> {
        let chain = self.chain(chain_id)?;
        let call: Bytes = IEip3009::authorizationStateCall { authorizer, nonce }.abi_encode().into();
        let outcome = match at {
            Some(number) => chain.call_at(asset, call, number).await?,
            None => chain.call(None, asset, call).await?,
        };
        match outcome {
            CallOutcome::Success(out) => Ok(bool::abi_decode(&out).unwrap_or(false)),
            CallOutcome::Reverted(data) => Err(VerifyError::SimulationFailed { reason: decode_revert_reason(&data) }),
        }
    }

    /// The simulated transfer (with the asset's code, until it has been seen once), queried
    /// concurrently; when the simulation reverts, the nonce state and the balance are read
    /// to name the refusal, judged in the reference order. A payment that verifies costs one
    /// `eth_call`; the token would refuse a used nonce or a short balance in the simulation
    /// anyway.
    async fn check_on_chain(
        &self,
        chain: &dyn Chain,
        offer: &v2::PaymentRequirements,
        payment: &VerifiedPayment,
        now_unix_s: u64,
    ) -> Result<(), VerifyError> {
        let a = &payment.authorization;
        let key = (payment.chain_id, payment.asset);
        let code_known = self.token_code_seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner).contains(&key);
        let code = async { if code_known { Ok(1) } else { chain.code_len(payment.asset).await } };
        let (code_len, simulation) = tokio::join!(
            code,
            chain.call(Some(self.config.simulate_from), payment.asset, payment.transfer_calldata()),
        );
        if code_len? == 0 {
            return Err(VerifyError::AssetNotContract { asset: payment.asset, chain_id: payment.chain_id });
        }
        if !code_known {
            // Code at an address does not go away in practice (and a token that self-destructed
            // would fail every simulation): it is looked up once per token.
            self.token_code_seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(key);
        }
        let simulation = simulation?;
        // EIP-3009 tokens (USDC's FiatToken and the tokens x402 names) revert on a used or
        // cancelled nonce and on a short balance, so a transfer that simulates is one the
        // token takes. A token that returned `false` instead would pass here: such a token is
        // not EIP-3009 and must not be configured as a network's asset.
        if matches!(simulation, CallOutcome::Success(_)) {
            return Ok(());
        }
        let state_call: Bytes =
            IEip3009::authorizationStateCall { authorizer: a.from, nonce: a.nonce }.abi_encode().into();
        let balance_call: Bytes = IEip3009::balanceOfCall { account: a.from }.abi_encode().into();
        let (state, balance) =
            tokio::join!(chain.call(None, payment.asset, state_call), chain.call(None, payment.asset, balance_call),);
        if let CallOutcome::Success(out) = state?
            && bool::abi_decode(&out).unwrap_or(false)
        {
            return Err(VerifyError::NonceAlreadyUsed { from: a.from, nonce: a.nonce });
        }
        if let CallOutcome::Success(out) = balance?
            && let Ok(balance) = U256::abi_decode(&out)
            && balance < a.value
        {
            return Err(VerifyError::InsufficientBalance { balance, required: a.value });
        }
        match simulation {
            CallOutcome::Success(_) => Ok(()),
            CallOutcome::Reverted(data) => {
                let reason = decode_revert_reason(&data);
                let ctx = RevertContext {
                    from: a.from,
                    nonce: a.nonce,
                    value: a.value,
                    valid_after_unix_s: saturate_u64(a.valid_after),
                    valid_before_unix_s: saturate_u64(a.valid_before),
                    now_unix_s,
                };
                if let Some(err) = classify_revert(&reason, &ctx) {
                    // An "invalid signature" from a token whose domain differs from the
                    // offer's is our misconfiguration, not the client's bad signature.
                    if matches!(err, VerifyError::InvalidSignature { .. }) {
                        diagnose_domain(chain, offer).await?;
                    }
                    return Err(err);
                }
                diagnose_domain(chain, offer).await?;
                Err(VerifyError::SimulationFailed { reason })
            }
        }
    }
}

/// Asks a smart wallet at `from` whether it signed `digest`.
async fn wallet_signature(
    chain: &dyn Chain,
    from: Address,
    digest: B256,
    shape: SignatureShape,
) -> Result<SignatureCheck, VerifyError> {
    let deployed = chain.code_len(from).await? > 0;
    let signature = match shape {
        SignatureShape::Ecdsa(sig) if deployed => sig.to_bytes(),
        SignatureShape::Ecdsa(_) => return Err(VerifyError::InvalidSignature { from }),
        SignatureShape::Opaque(bytes) if deployed => bytes,
        SignatureShape::Opaque(bytes) => return Err(VerifyError::SignatureLength { len_bytes: bytes.len() }),
        // A deployed wallet checks the inner signature directly (ERC-6492 says to ignore
        // the deployment data then); an undeployed one would have to be deployed by us
        // first, which tollgate does not do.
        SignatureShape::Erc6492 { inner, .. } if deployed => inner,
        SignatureShape::Erc6492 { factory, .. } => {
            return Err(VerifyError::UndeployedSmartWallet { wallet: from, factory });
        }
    };
    let call: Bytes = IERC1271::isValidSignatureCall { hash: digest, signature: signature.clone() }.abi_encode().into();
    match chain.call(None, from, call).await? {
        CallOutcome::Success(out) if out.get(..4) == Some(&ERC1271_MAGIC[..]) => {
            Ok(SignatureCheck::Contract(signature))
        }
        _ => Err(VerifyError::InvalidSignature { from }),
    }
}

/// Compares the token's `name()`/`version()` with the offer's EIP-712 domain.
async fn diagnose_domain(chain: &dyn Chain, offer: &v2::PaymentRequirements) -> Result<(), VerifyError> {
    let Some((name, version)) = offer.eip712_name_version() else {
        return Err(VerifyError::MissingEip712Domain);
    };
    let read = |data: Vec<u8>| async move {
        match chain.call(None, offer.asset, data.into()).await? {
            CallOutcome::Success(out) => Ok::<_, VerifyError>(String::abi_decode(&out).ok()),
            CallOutcome::Reverted(_) => Ok(None),
        }
    };
    if let Some(actual) = read(IEip3009::nameCall {}.abi_encode()).await?
        && actual != name
    {
        return Err(VerifyError::TokenNameMismatch { expected: name.to_owned(), actual });
    }
    if let Some(actual) = read(IEip3009::versionCall {}.abi_encode()).await?
        && actual != version
    {
        return Err(VerifyError::TokenVersionMismatch { expected: version.to_owned(), actual });
    }
    Ok(())
}
