//! A crash between signing and the receipt: `tollgate call` is SIGKILLed while the gateway
//! works on its paid request.

use std::process::Stdio;
use std::time::Duration;

use alloy_primitives::U256;
use tollgate_client::{Budget, ClientError, HeaderMap, Method, PayingClient, RecordState, SpendStore};
use tollgate_metering::EntryState;

use crate::harness::{Harness, PRICE, client_config};

// Goal: SIGKILL `tollgate call` after its payment reached the gateway (the upstream is
// still sleeping). The store keeps the record `sent`; a new client on the same store counts
// it against its budget; the gateway finishes on its own (settled, or voided by its
// recovery); budget and ledger name the same authorization and amount, and what the
// ledger charged never exceeds what the budget counts; a re-send of the same header learns
// that the first delivery was processed, and the spend stays counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_between_sign_and_receipt_stays_counted() {
    let h = Harness::start(1).await;
    let payer = h.funded_payer(1_000_000).await;
    let home = tempfile::tempdir().unwrap();
    let store_path = home.path().join("spend.json");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["call", "--key-env", "AGENT_KEY", "--store", store_path.to_str().unwrap(), &format!("{}/slow", h.url)])
        .env("AGENT_KEY", format!("{:#x}", payer.to_bytes()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // The gateway has reserved the payment: the request was sent.
    for _ in 0..1000 {
        if !h.entries(payer.address()).await.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.start_kill().unwrap(); // SIGKILL
    child.wait().await.unwrap();

    let records = SpendStore::open(&store_path).unwrap().records().unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].state, RecordState::Sent, "{records:?}");
    let nonce = records[0].nonce;

    let mut config = client_config(&payer, &store_path);
    config.limits.total_budget_atomic = Some(U256::from(PRICE + PRICE / 2));
    let client = PayingClient::new(config).unwrap();
    assert_eq!(client.resume().await.unwrap().len(), 1);
    let spent = client.spent().await.unwrap();
    assert_eq!((spent.total_atomic, spent.unresolved), (U256::from(PRICE), 1));
    match client.send(Method::GET, &format!("{}/weather/x", h.url), HeaderMap::new(), "").await {
        Err(ClientError::BudgetExceeded { budget: Budget::Total, spent, .. }) => assert_eq!(spent, U256::from(PRICE)),
        other => panic!("expected the crashed payment to be counted: {other:?}"),
    }

    let entries = h.wait_terminal(payer.address()).await;
    assert_eq!(entries.len(), 1, "one authorization reached the gateway");
    let entry = &entries[0];
    assert_eq!(entry.nonce, nonce, "budget and ledger name the same authorization");
    assert_eq!(U256::from(entry.amount.get()), records[0].amount.0);
    let charged = if entry.state == EntryState::Settled { U256::from(PRICE) } else { U256::ZERO };
    assert!(matches!(entry.state, EntryState::Settled | EntryState::Voided), "{:?}", entry.state);
    assert_eq!(h.payee_balance().await, charged);
    assert!(charged <= spent.total_atomic, "the budget never counts less than the ledger charged");

    // The same header, so the same x402 payment identifier: the gateway answers 409
    // payment_already_processed with the receipt its entry says. Settled: the record is paid.
    // Voided: the receipt says so without a transaction, which the client, having lost the
    // first answer, still counts as unknown (paid_pending) rather than free.
    let resent = client.resend(nonce, HeaderMap::new(), "").await;
    let expected = match (entry.state, &resent) {
        (EntryState::Settled, Ok(paid)) if paid.receipt.as_ref().is_some_and(|r| r.success) => RecordState::Paid,
        (EntryState::Voided, Err(ClientError::PaymentOutcomeUnknown { .. })) => RecordState::PaidPending,
        other => panic!("{other:?}"),
    };
    let records = client.records().await.unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].state, expected);
    assert_eq!(client.spent().await.unwrap().total_atomic, U256::from(PRICE));
    assert_eq!(h.entries(payer.address()).await.len(), 1);
    eprintln!("gateway outcome for the killed call: {:?}", entry.state);
}
