//! Batched settlement and the recovery sweep: entries claimed together for one `aggregate3`
//! transaction (the verifier's `submit_batch`, the ledger's `claim_batch`) by a process that
//! then died are resolved by the sweep from the chain, each entry from its own logs.

use alloy::signers::local::PrivateKeySigner;
use alloy_primitives::{Address, B256, U256};
use alloy_sol_types::SolCall;
use tollgate_gateway::stored_payment::StoredPayment;
use tollgate_metering::{EntryId, EntryState, NewEntry, SettlementMode};
use tollgate_test_support::{PaymentBuilder, TokenCall, sign_cancel};
use tollgate_verifier::{Claim, VerifiedPayment};

use crate::both_engines;
use crate::harness::{Harness, PRICE_ATOMIC};

/// The claim a settling process makes for a batch: every entry `reserved → settling(tx)` with
/// the relayer nonce, all or none; `send: false` stands for a process that dies between the
/// claim and the broadcast.
struct LedgerBatchClaim<'a> {
    h: &'a Harness,
    ids: Vec<EntryId>,
    send: bool,
    claimed: Vec<B256>,
}

#[async_trait::async_trait]
impl Claim for LedgerBatchClaim<'_> {
    async fn claim(&mut self, tx_hash: B256, relayer: Address, nonce: u64) -> bool {
        let detail = serde_json::json!({ "relayer": relayer, "nonce": nonce }).to_string();
        let entries = self.h.gateway.ledger.entries();
        let ok = entries
            .claim_batch(&self.ids, EntryState::Reserved, tx_hash, "batch_settlement", Some(&detail), self.h.now)
            .await
            .unwrap();
        assert!(ok, "every entry claimed");
        self.claimed.push(tx_hash);
        self.send
    }
}

/// `n` `before`-mode reservations (settled before forwarding, so claimed from `reserved`),
/// valid long past the sweeps below; the first payer also makes the second.
async fn reserved_batch(h: &Harness, n: usize) -> (Vec<PaymentBuilder>, Vec<VerifiedPayment>, Vec<EntryId>) {
    let offer = h.offer("/weather/rome").await;
    let (mut builders, mut verified, mut ids) = (Vec::new(), Vec::new(), Vec::new());
    let mut keys: Vec<PrivateKeySigner> = Vec::new();
    for i in 0..n {
        // The first payer pays twice (same payee and value): only the authorization's nonce
        // tells its two transfers apart in one receipt.
        let key = if i == 1 { keys[0].clone() } else { tollgate_test_support::random_key() };
        if i != 1 {
            h.chain.mint(key.address(), 1_000_000).await.unwrap();
        }
        keys.push(key.clone());
        let mut b = PaymentBuilder::new(&offer, &key, h.now);
        b.valid_before = h.now + 20_000;
        let v = h.gateway.verifier.verify(&offer, &b.v2()).await.unwrap();
        let id = h
            .gateway
            .ledger
            .entries()
            .reserve(&NewEntry {
                valid_before_unix_s: b.valid_before,
                payment: StoredPayment::to_json(&v).unwrap(),
                ..h.weather_entry(&b, "/weather/rome", SettlementMode::Before)
            })
            .await
            .unwrap();
        builders.push(b);
        verified.push(v);
        ids.push(id);
    }
    (builders, verified, ids)
}

async fn sweep_later(h: &Harness, at_unix_s: u64) {
    h.clock.set(at_unix_s);
    tollgate_gateway::settlement::recover_once(&h.gateway.settlements).await.unwrap();
}

// Goal: a batch claimed and mined by a process that died before recording anything — one of
// its payers having cancelled in the same block, ahead of it — is resolved by the sweep entry
// by entry: the others `settled` with the batch's hash and each its own log index, the
// cancelled one `settle_failed` (`authorization_used_elsewhere`, not charged) once the
// cancellation is 10 blocks deep, `settling` until then; a second sweep
// changes nothing, and the payee holds exactly the settled payments.
async fn mined_batch_recovers_per_entry(h: &Harness) {
    let (builders, verified, ids) = reserved_batch(h, 4).await;
    let settler = h.gateway.settlements.settlers.get(&h.chain.chain_id).unwrap().clone();
    let cancelled = &builders[2];
    h.chain.fund_gas(cancelled.from).await.unwrap();
    h.chain.rpc("evm_setAutomine", serde_json::json!([false])).await.unwrap();
    let mut claim = LedgerBatchClaim { h, ids: ids.clone(), send: true, claimed: Vec::new() };
    let sent = settler.submit_batch(&verified, &mut claim).await.unwrap().expect("sent");
    assert_eq!(claim.claimed, vec![sent.tx_hash]);
    let (v, r, s) = sign_cancel(&cancelled.key, &cancelled.domain(), cancelled.from, cancelled.nonce);
    let cancel = TokenCall::cancelAuthorizationCall { authorizer: cancelled.from, nonce: cancelled.nonce, v, r, s };
    h.chain.submit_priority(cancelled.key.clone(), h.chain.token, cancel.abi_encode()).await.unwrap();
    h.chain.rpc("evm_mine", serde_json::json!([])).await.unwrap();
    h.chain.rpc("evm_setAutomine", serde_json::json!([true])).await.unwrap();

    // The cancellation is one block deep: the sweep settles the others and waits for its
    // `[reconciliation] confirmations` (10) before booking the cancelled one.
    sweep_later(h, h.now + 7_200).await;
    let e = h.gateway.ledger.entries().get(&ids[2]).await.unwrap().unwrap();
    assert_eq!(e.state, EntryState::Settling, "{e:?}");
    h.chain.rpc("anvil_mine", serde_json::json!([10])).await.unwrap();
    for _ in 0..2 {
        sweep_later(h, h.now + 7_200).await;
        let mut indexes = std::collections::BTreeSet::new();
        for (i, id) in ids.iter().enumerate() {
            let e = h.gateway.ledger.entries().get(id).await.unwrap().unwrap();
            if i == 2 {
                assert_eq!(e.state, EntryState::SettleFailed, "{e:?}");
                assert_eq!(e.reason.as_deref(), Some("authorization_used_elsewhere"));
            } else {
                assert_eq!(e.state, EntryState::Settled, "{e:?}");
                assert_eq!(e.tx_hash, Some(sent.tx_hash));
                indexes.insert(e.log_index.unwrap());
            }
        }
        assert_eq!(indexes.len(), 3, "each settled entry has its own Transfer log");
    }
    assert_eq!(h.payee_balance().await, U256::from(3 * PRICE_ATOMIC));
}
both_engines!(batch_mined_recovery, mined_batch_recovers_per_entry);

// Goal: a batch claimed by a process that died before its broadcast (the hash on every entry,
// nothing sent) is never sent by the sweep for these calls not known to be served: it closes
// the claimed relayer nonce, then voids every entry, and no authorization is used.
async fn unsent_batch_is_voided(h: &Harness) {
    let (builders, verified, ids) = reserved_batch(h, 3).await;
    let settler = h.gateway.settlements.settlers.get(&h.chain.chain_id).unwrap().clone();
    let mut claim = LedgerBatchClaim { h, ids: ids.clone(), send: false, claimed: Vec::new() };
    assert_eq!(settler.submit_batch(&verified, &mut claim).await.unwrap(), None);
    assert_eq!(claim.claimed.len(), 1);
    // The first sweep closes the nonce; the next one sees it passed and voids.
    sweep_later(h, h.now + 7_200).await;
    sweep_later(h, h.now + 7_300).await;
    for (id, b) in ids.iter().zip(&builders) {
        let e = h.gateway.ledger.entries().get(id).await.unwrap().unwrap();
        assert_eq!(e.state, EntryState::Voided, "{e:?}");
        assert_eq!(e.reason.as_deref(), Some("recovery_tx_never_landed"));
        assert!(!h.chain.authorization_used(b.from, b.nonce).await.unwrap());
    }
    assert_eq!(h.payee_balance().await, U256::ZERO);
}
both_engines!(batch_unsent_recovery, unsent_batch_is_voided);
