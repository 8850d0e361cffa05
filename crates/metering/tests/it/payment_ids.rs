//! The x402 payment-identifier records (`ledger.payment_ids()`): claims, entries, outcomes,
//! release, expiry, and the schema's write-once rule.

use anyhow::ensure;
use tollgate_metering::{PaymentIdKey, payment_id_valid};

use crate::{each_engine, new_entry, payer};

fn key(id: &str) -> PaymentIdKey {
    PaymentIdKey { payer: payer(), route: "weather".to_owned(), id: id.to_owned() }
}

const ID: &str = "pay_0123456789abcdef";
const FP_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const FP_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_attach_outcome_and_expiry() {
    // Goal: an id is claimed once (a second claim loses while the first is fresh), bound to its entry and outcome once each, scoped per payer and route, kept until it expires and then reusable and purged; an unused claim is released, or taken over once stale by its own payment.
    each_engine(|db| async move {
        let ids = db.ledger.payment_ids();
        ensure!(ids.get(&key(ID), 100).await?.is_none());
        ensure!(ids.claim(&key(ID), FP_A, 100, 1000, 0).await?, "first claim wins");
        ensure!(!ids.claim(&key(ID), FP_B, 101, 1000, 0).await?, "a fresh claim is not taken over");
        let other_route = PaymentIdKey { route: "other".to_owned(), ..key(ID) };
        ensure!(ids.claim(&other_route, FP_B, 101, 1000, 0).await?, "another route is another scope");

        let entry = db.ledger.entries().reserve(&new_entry(1, 10, 100)).await?;
        ensure!(ids.attach_entry(&key(ID), FP_A, &entry).await?);
        ensure!(!ids.attach_entry(&key(ID), FP_A, &entry).await?, "the entry is written once");
        ensure!(!ids.claim(&key(ID), FP_B, 500, 1000, 400).await?, "a used claim is never stale");
        ensure!(ids.record_outcome(&key(ID), FP_A, "{\"v\":1}").await?);
        ensure!(!ids.record_outcome(&key(ID), FP_A, "{\"v\":2}").await?, "the outcome is written once");
        let got = ids.get(&key(ID), 200).await?.expect("record");
        ensure!(
            got.fingerprint == FP_A
                && got.entry_id == Some(entry.clone())
                && got.outcome.as_deref() == Some("{\"v\":1}")
        );
        ensure!((got.created_unix_s, got.expires_unix_s) == (100, 1100));

        // The schema holds the write-once rule too.
        let edit = format!("UPDATE payment_ids SET outcome = 'x' WHERE id = '{ID}' AND route = 'weather'");
        ensure!(db.raw.exec_rolled_back(&edit).await.is_err(), "outcome rewritten behind the ledger's back");
        let bad_id = "INSERT INTO payment_ids (payer, route, id, fingerprint, created_unix_s, expires_unix_s) VALUES \
            ('0xa1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1', 'weather', 'short', \
            'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', 1, 2)";
        ensure!(db.raw.exec_rolled_back(bad_id).await.is_err(), "an id under 16 characters stored");

        // Expired: not found, claimable again, purged.
        ensure!(ids.get(&key(ID), 1100).await?.is_none());
        ensure!(ids.claim(&key(ID), FP_B, 1100, 1000, 0).await?, "an expired id is reusable");
        ensure!(ids.get(&key(ID), 1101).await?.is_some_and(|r| r.fingerprint == FP_B && r.entry_id.is_none()));
        // Unused claims: released by their own payment only, taken over once stale.
        ids.release(&key(ID), FP_A).await?;
        ensure!(ids.get(&key(ID), 1101).await?.is_some(), "another payment's release does nothing");
        ensure!(!ids.claim(&key(ID), FP_B, 1200, 1000, 1099).await?, "fresh unused claim kept");
        ensure!(!ids.claim(&key(ID), FP_A, 1200, 1000, 1100).await?, "stale claim taken by another payment");
        ensure!(ids.claim(&key(ID), FP_B, 1200, 1000, 1100).await?, "stale unused claim taken over");
        ids.release(&key(ID), FP_B).await?;
        ensure!(ids.get(&key(ID), 1201).await?.is_none());
        ensure!(ids.purge_expired(1101).await? == 1, "the other route's record expired at 1101");
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_claim_taken_over_only_by_its_payment() {
    // Goal: a stale unused claim (its process died before the reservation) stays bound to its payment: another fingerprint cannot take it over (the gateway answers 409) until the record expires, the same fingerprint can.
    each_engine(|db| async move {
        let ids = db.ledger.payment_ids();
        ensure!(ids.claim(&key(ID), FP_A, 100, 1000, 0).await?);
        ensure!(!ids.claim(&key(ID), FP_B, 500, 1000, 400).await?, "a stale claim taken over by another payment");
        let kept = ids.get(&key(ID), 500).await?.expect("record");
        ensure!((kept.fingerprint.as_str(), kept.created_unix_s) == (FP_A, 100), "the stale claim changed: {kept:?}");
        ensure!(ids.claim(&key(ID), FP_A, 500, 1000, 400).await?, "the same payment takes its stale claim over");
        let taken = ids.get(&key(ID), 501).await?.expect("record");
        ensure!((taken.fingerprint.as_str(), taken.created_unix_s, taken.expires_unix_s) == (FP_A, 500, 1500));
        // Once expired the id is free again, for any payment.
        ensure!(ids.claim(&key(ID), FP_B, 1500, 1000, 0).await?, "an expired id is reusable");
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_one_wins() {
    // Goal: of 16 concurrent claims of one id, exactly one wins, on both engines.
    each_engine(|db| async move {
        let mut tasks = Vec::new();
        for i in 0..16u8 {
            let ids = db.ledger.payment_ids().clone();
            let fp = format!("{:064x}", i);
            tasks.push(tokio::spawn(async move { ids.claim(&key(ID), &fp, 100, 1000, 0).await }));
        }
        let mut won = 0;
        for t in tasks {
            won += usize::from(t.await??);
        }
        ensure!(won == 1, "{won} claims won");
        Ok(())
    })
    .await;
}

#[test]
fn id_format() {
    // Goal: the id rule is 16 to 128 characters of A-Z, a-z, 0-9, '_' and '-'.
    assert!(payment_id_valid("pay_7d5d747be160e280504c099d984bcfe0"));
    assert!(payment_id_valid(&"a".repeat(16)) && payment_id_valid(&"Z-_9".repeat(32)));
    assert!(!payment_id_valid(&"a".repeat(15)) && !payment_id_valid(&"a".repeat(129)));
    assert!(!payment_id_valid("pay_7d5d747be160e280504c099d984bcfe0!") && !payment_id_valid("pay 7d5d747be160e2805"));
}
