//! After a run: the ledger drained, and every answer joined with the ledger and the chain.

use super::*;

pub(super) fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The commit measured (`git describe`), with `-dirty` when the tree has changes.
pub(super) fn commit() -> String {
    std::process::Command::new("git")
        .args(["describe", "--always", "--dirty", "--abbrev=7"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or_else(|| "unknown".to_owned(), |o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
}

/// Waits until no ledger entry is left unfinished, at most `max`: (the time it took, or
/// `None`; entries settled meanwhile; entries still unfinished).
pub(super) async fn drain(ledger: &Ledger, max: Duration) -> anyhow::Result<(Option<Duration>, u64, u64)> {
    let started = Instant::now();
    let counts = |c: &tollgate_metering::StateCounts| {
        let settled = c.by_state.iter().filter(|(s, _)| *s == EntryState::Settled).map(|(_, n)| n).sum::<u64>();
        let open = c.by_state.iter().filter(|(s, _)| !s.is_terminal()).map(|(_, n)| n).sum::<u64>();
        (settled, open)
    };
    let (settled_at_start, _) = counts(&ledger.spend().state_counts().await?);
    loop {
        let (settled, open) = counts(&ledger.spend().state_counts().await?);
        if open == 0 {
            return Ok((Some(started.elapsed()), settled - settled_at_start, 0));
        }
        if started.elapsed() >= max {
            return Ok((None, settled - settled_at_start, open));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Joins every answer with its ledger entry and the chain: a 2xx must be settled exactly
/// once by a successful transaction that used its authorization and paid the payee; any
/// other answer must have moved no money (or be owed back).
pub(super) async fn chain_check(
    stack: &Stack,
    ledger: &Ledger,
    runs: &[(&Arc<Vec<Call>>, &Vec<Answer>)],
) -> anyhow::Result<ChainCheck> {
    let (chain_id, token) = (stack.chain.chain_id, stack.chain.token);
    let mut check = ChainCheck::default();
    let mut txs: HashSet<B256> = HashSet::new();
    let mut expected: HashMap<(Address, B256), usize> = HashMap::new();
    for (calls, answers) in runs {
        for a in answers.iter() {
            let call = &calls[a.call];
            let entry = ledger.entries().by_authorization(chain_id, token, call.payer, call.nonce).await?;
            if !(200..300).contains(&a.status) {
                let used = stack.chain.authorization_used(call.payer, call.nonce).await?;
                let owed = entry.as_ref().is_some_and(|e| e.state == EntryState::RefundOwed);
                if used && !owed {
                    check.problems.push(format!("{} answered {} but its payment moved", call.url, a.status));
                }
                continue;
            }
            check.paid_2xx += 1;
            let Some(e) = entry else {
                check.problems.push(format!("{} answered {} with no ledger entry", call.url, a.status));
                continue;
            };
            if let Some(r) = &a.receipt
                && r != e.id.as_str()
            {
                check.problems.push(format!("{}: Tollgate-Receipt {r} names another entry than {}", call.url, e.id));
            }
            match (e.state, e.tx_hash) {
                (EntryState::Settled, Some(tx)) => {
                    if a.tx_hash.is_some_and(|told| told != tx) {
                        check.problems.push(format!("{}: told tx {:?}, ledger has {tx}", call.url, a.tx_hash));
                    }
                    txs.insert(tx);
                    expected.insert((call.payer, call.nonce), 0);
                }
                (state, _) if !state.is_terminal() => check.pending += 1,
                (state, _) => {
                    check.problems.push(format!("{} answered {} but entry {} is {state:?}", call.url, a.status, e.id))
                }
            }
        }
    }

    // Each settled authorization is used exactly once among the transactions, each of them
    // succeeded, and the payee received one transfer per settled call.
    let used_topic = keccak256("AuthorizationUsed(address,bytes32)");
    let transfer_topic = keccak256("Transfer(address,address,uint256)");
    let mut transfers_to_payee = 0usize;
    for tx in &txs {
        let Some(receipt) = stack.chain.provider.get_transaction_receipt(*tx).await? else {
            check.problems.push(format!("transaction {tx} has no receipt"));
            continue;
        };
        if !receipt.status() {
            check.problems.push(format!("transaction {tx} reverted"));
        }
        check.gas_used += u128::from(receipt.gas_used);
        for log in receipt.inner.logs().iter().filter(|l| l.address() == token) {
            let topics = log.topics();
            if topics.first() == Some(&used_topic) && topics.len() == 3 {
                let authorizer = Address::from_word(topics[1]);
                if let Some(n) = expected.get_mut(&(authorizer, topics[2])) {
                    *n += 1;
                }
            } else if topics.first() == Some(&transfer_topic)
                && topics.len() == 3
                && Address::from_word(topics[2]) == stack.payee
            {
                transfers_to_payee += 1;
            }
        }
    }
    for ((payer, nonce), n) in &expected {
        if *n == 1 {
            check.settled += 1;
        } else {
            check.problems.push(format!("authorization {payer}/{nonce} used {n} times in the recorded transactions"));
        }
    }
    if transfers_to_payee != expected.len() {
        check
            .problems
            .push(format!("{transfers_to_payee} transfers to the payee for {} settled calls", expected.len()));
    }
    let balance = stack.chain.balance(stack.payee).await?;
    // With entries still pending, a mined transfer may not be recorded yet.
    if check.pending == 0 && balance != U256::from(PRICE_ATOMIC) * U256::from(expected.len()) {
        check.problems.push(format!("the payee holds {balance}, not {} × {PRICE_ATOMIC}", expected.len()));
    }
    check.distinct_txs = txs.len();
    Ok(check)
}
