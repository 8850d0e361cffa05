//! The control plane's storage: wallet policies enforced at reservation (caps atomic under
//! concurrency, across two pools), the hash-chained audit log and its tamper detection, admin
//! tokens, endpoints with price versions, credential versions, and the change counter.

use anyhow::ensure;
use tollgate_metering::{
    Actor, AuditQuery, Decision, Engine, Ledger, MeteringError, NewAuditRecord, PolicyDenial, Role, Source,
    WalletPolicy, token_hash,
};

use crate::{each_engine, new_entry, payer, test_options};

fn actor() -> Actor {
    Actor("test".to_owned())
}

fn policy(scope: &str) -> WalletPolicy {
    WalletPolicy {
        scope: scope.to_owned(),
        wallet: payer(),
        revoked: false,
        registered: true,
        endpoints: None,
        per_call_max: None,
        daily_cap: None,
        monthly_cap: None,
        updated_unix_s: 1,
    }
}

/// 2026-11-30T12:00:00Z.
const NOW: u64 = 1_796_040_000;

fn denial(r: Result<tollgate_metering::EntryId, MeteringError>) -> Option<PolicyDenial> {
    match r {
        Err(MeteringError::PolicyDenied(d)) => Some(d),
        _ => None,
    }
}

#[tokio::test]
async fn policies_refuse_at_reservation_and_leave_nothing() {
    // Goal: revoked, out of scope, over the per-call maximum, unregistered in allowlist mode, and over the daily and monthly caps are each refused with their code, nothing reserved; reinstating lets the call through.
    each_engine(|db| async move {
        let l = &db.ledger;
        l.entries().reserve(&new_entry(1, 1_000, NOW)).await?; // no policy: allowed
        let mut p = policy("*");
        p.revoked = true;
        l.policies().put(&p, &actor()).await?;
        ensure!(
            denial(l.entries().reserve(&new_entry(2, 1_000, NOW)).await).map(|d| d.code()) == Some("wallet_revoked")
        );
        p.revoked = false;
        p.endpoints = Some(vec!["other".to_owned()]);
        l.policies().put(&p, &actor()).await?;
        ensure!(
            denial(l.entries().reserve(&new_entry(3, 1_000, NOW)).await).map(|d| d.code())
                == Some("endpoint_not_in_wallet_scope")
        );
        p.endpoints = Some(vec!["chat".to_owned()]);
        p.per_call_max = Some(999);
        l.policies().put(&p, &actor()).await?;
        ensure!(
            denial(l.entries().reserve(&new_entry(4, 1_000, NOW)).await).map(|d| d.code())
                == Some("per_call_max_exceeded")
        );
        p.per_call_max = None;
        // 1_000 already spent today; a daily cap of 2_500 leaves room for one more 1_000.
        p.daily_cap = Some(2_500);
        l.policies().put(&p, &actor()).await?;
        l.entries().reserve(&new_entry(5, 1_000, NOW)).await?;
        let d = denial(l.entries().reserve(&new_entry(6, 1_000, NOW)).await);
        ensure!(matches!(d, Some(PolicyDenial::DailyCap { cap: 2_500, spent: 2_000, amount: 1_000, .. })), "{d:?}");
        // Without the daily cap, a monthly cap of 3_000 has no room for 1_500 more.
        p.daily_cap = None;
        p.monthly_cap = Some(3_000);
        l.policies().put(&p, &actor()).await?;
        let d = denial(l.entries().reserve(&new_entry(7, 1_500, NOW)).await);
        ensure!(matches!(d, Some(PolicyDenial::MonthlyCap { cap: 3_000, spent: 2_000, .. })), "{d:?}");
        // A provider-scoped revocation only blocks that provider.
        p.daily_cap = None;
        p.monthly_cap = None;
        p.endpoints = None;
        l.policies().put(&p, &actor()).await?;
        let mut q = policy("openai");
        q.revoked = true;
        l.policies().put(&q, &actor()).await?;
        let d = denial(l.entries().reserve(&new_entry(8, 1_000, NOW)).await);
        ensure!(matches!(&d, Some(PolicyDenial::Revoked { scope }) if scope == "openai"), "{d:?}");
        let mut elsewhere = new_entry(9, 1_000, NOW);
        elsewhere.provider = "weather".to_owned();
        l.entries().reserve(&elsewhere).await?;
        q.revoked = false;
        l.policies().put(&q, &actor()).await?;
        l.entries().reserve(&new_entry(10, 1_000, NOW)).await?;
        // Allowlist mode: registered wallets only.
        l.settings().set_allowlist_mode(true, &actor(), NOW).await?;
        l.entries().reserve(&new_entry(11, 1_000, NOW)).await?;
        let mut stranger = new_entry(12, 1_000, NOW);
        stranger.payer = alloy_primitives::Address::repeat_byte(0x77);
        ensure!(denial(l.entries().reserve(&stranger).await).map(|d| d.code()) == Some("wallet_not_registered"));
        ensure!(db.raw.count("SELECT COUNT(*) FROM ledger_entries").await == 5, "refusals reserved nothing");
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reservations_cannot_overspend_a_cap() {
    // Goal: 40 concurrent reservations of 1_000 each against a daily cap of 10_000, split over two pools (two replicas on PostgreSQL), reserve exactly 10 and refuse 30 with daily_cap_exceeded.
    each_engine(|db| async move {
        let mut p = policy("*");
        p.daily_cap = Some(10_000);
        db.ledger.policies().put(&p, &actor()).await?;
        let replica = match db.engine {
            Engine::Postgres => Ledger::connect(&db.url, test_options()).await?,
            Engine::Sqlite => db.ledger.clone(),
        };
        let mut tasks = Vec::new();
        for i in 0..40u64 {
            let ledger = if i % 2 == 0 { db.ledger.clone() } else { replica.clone() };
            tasks.push(tokio::spawn(async move { ledger.entries().reserve(&new_entry(100 + i, 1_000, NOW)).await }));
        }
        let (mut ok, mut capped) = (0, 0);
        for t in tasks {
            match t.await? {
                Ok(_) => ok += 1,
                Err(MeteringError::PolicyDenied(PolicyDenial::DailyCap { .. })) => capped += 1,
                Err(e) => anyhow::bail!("unexpected: {e}"),
            }
        }
        ensure!(ok == 10 && capped == 30, "ok {ok}, capped {capped}");
        ensure!(db.raw.count("SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM ledger_entries").await == 10_000);
        Ok(())
    })
    .await;
}

fn audit_record(i: u64, decision: Decision) -> NewAuditRecord {
    NewAuditRecord {
        at_unix_ms: 1_000 + i,
        wallet: Some(payer()),
        provider: Some("openai".into()),
        endpoint: Some("openai:/v1/chat".into()),
        method: "POST".into(),
        path: "/v1/chat".into(),
        price_version: Some(1),
        decision,
        reason: if decision == Decision::Accepted { "ok".into() } else { "wallet_revoked".into() },
        credential: Some("vault:main".into()),
        credential_version: Some(2),
        upstream_status: Some(200),
        latency_ms: 4,
        entry_id: None,
        tx_hash: None,
    }
}

#[tokio::test]
async fn audit_chain_detects_edits_and_deletions() {
    // Goal: appended records chain (query, filters, pages); an edited record, a deleted middle record and a deleted tail are each detected by verify_audit.
    each_engine(|db| async move {
        let l = &db.ledger;
        ensure!(l.audit().verify().await?.intact, "empty chain is intact");
        l.audit().append(&[audit_record(1, Decision::Accepted), audit_record(2, Decision::Denied)]).await?;
        let last =
            l.audit().append(&[audit_record(3, Decision::Accepted), audit_record(4, Decision::Accepted)]).await?;
        ensure!(last == 4);
        let v = l.audit().verify().await?;
        ensure!(v.intact && v.records == 4, "{v:?}");
        let denied =
            l.audit().query(&AuditQuery { decision: Some(Decision::Denied), limit: 10, ..Default::default() }).await?;
        ensure!(denied.len() == 1 && denied[0].seq == 2);
        let page = l.audit().query(&AuditQuery { after_seq: Some(2), limit: 1, ..Default::default() }).await?;
        ensure!(page.len() == 1 && page[0].seq == 3);
        ensure!(page[0].prev_hash == l.audit().query(&AuditQuery { limit: 10, ..Default::default() }).await?[1].hash);

        // The triggers refuse edits through SQL ...
        ensure!(db.raw.exec("UPDATE audit_log SET reason = 'x' WHERE seq = 2").await.is_err());
        // ... so tampering means disabling them first, as someone with the database could.
        let (off, on) = match db.engine {
            Engine::Sqlite => ("DROP TRIGGER audit_log_no_update", ""),
            Engine::Postgres => (
                "ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only",
                "ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only",
            ),
        };
        db.raw.exec(off).await.map_err(anyhow::Error::msg)?;
        db.raw.exec("UPDATE audit_log SET reason = 'ok' WHERE seq = 2").await.map_err(anyhow::Error::msg)?;
        let v = l.audit().verify().await?;
        ensure!(!v.intact && v.broken_at_seq == Some(2), "edit: {v:?}");
        db.raw
            .exec("UPDATE audit_log SET reason = 'wallet_revoked' WHERE seq = 2")
            .await
            .map_err(anyhow::Error::msg)?;
        ensure!(l.audit().verify().await?.intact, "restored");
        if db.engine == Engine::Sqlite {
            db.raw.exec("DROP TRIGGER audit_log_no_delete").await.map_err(anyhow::Error::msg)?;
        }
        db.raw.exec("DELETE FROM audit_log WHERE seq = 4").await.map_err(anyhow::Error::msg)?;
        let v = l.audit().verify().await?;
        ensure!(!v.intact && v.broken_at_seq == Some(4), "deleted tail: {v:?}");
        db.raw.exec("DELETE FROM audit_log WHERE seq = 2").await.map_err(anyhow::Error::msg)?;
        let v = l.audit().verify().await?;
        ensure!(!v.intact && v.broken_at_seq == Some(2), "deleted middle: {v:?}");
        if !on.is_empty() {
            db.raw.exec(on).await.map_err(anyhow::Error::msg)?;
        }
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_audit_appends_make_one_chain() {
    // Goal: 20 concurrent appenders over two pools produce one gapless, verifiable chain of 40 records.
    each_engine(|db| async move {
        let replica = match db.engine {
            Engine::Postgres => Ledger::connect(&db.url, test_options()).await?,
            Engine::Sqlite => db.ledger.clone(),
        };
        let mut tasks = Vec::new();
        for i in 0..20u64 {
            let l = if i % 2 == 0 { db.ledger.clone() } else { replica.clone() };
            tasks.push(tokio::spawn(async move {
                l.audit().append(&[audit_record(i, Decision::Accepted), audit_record(i, Decision::Denied)]).await
            }));
        }
        for t in tasks {
            t.await??;
        }
        let v = db.ledger.audit().verify().await?;
        ensure!(v.intact && v.records == 40, "{v:?}");
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn tokens_endpoints_credentials_and_the_change_counter() {
    // Goal: tokens are found by hash and revocable; a price change makes a new price version and an unchanged put does not; credential versions number 1, 2 and revoke once; every change bumps the counter.
    each_engine(|db| async move {
        let l = &db.ledger;
        let v0 = l.settings().state().await?.version;
        let h = token_hash("tg_secret");
        let t = l.tokens().create(Role::Finance, None, &h, "books", &actor(), NOW).await?;
        ensure!(l.tokens().by_hash(&h).await?.map(|x| x.id) == Some(t.id.clone()));
        ensure!(l.tokens().create(Role::Provider, None, &token_hash("x"), "", &actor(), NOW).await.is_err());
        ensure!(l.tokens().revoke(&t.id, &actor(), NOW).await?);
        ensure!(!l.tokens().revoke(&t.id, &actor(), NOW).await?, "revoked once");
        ensure!(l.tokens().by_hash(&h).await?.and_then(|x| x.revoked_unix_s) == Some(NOW));

        let missing = l.catalog().put_endpoint("nobody", "/x", "{}", "[]", true, Source::Admin, &actor(), NOW).await;
        ensure!(matches!(missing, Err(MeteringError::UnknownRecord { .. })));
        l.catalog().put_provider("openai", r#"{"id":"openai"}"#, Source::Config, &actor(), NOW).await?;
        let a =
            l.catalog().put_endpoint("openai", "/v1/chat", "{}", r#"[1]"#, true, Source::Config, &actor(), NOW).await?;
        let b =
            l.catalog().put_endpoint("openai", "/v1/chat", "{}", r#"[1]"#, true, Source::Config, &actor(), NOW).await?;
        let c =
            l.catalog().put_endpoint("openai", "/v1/chat", "{}", r#"[2]"#, true, Source::Admin, &actor(), NOW).await?;
        ensure!(a.new_price_version && !b.new_price_version && c.new_price_version);
        ensure!(a.endpoint_id == c.endpoint_id && c.price_version > a.price_version);
        ensure!(l.catalog().price_versions(a.endpoint_id).await?.len() == 2);
        let eps = l.catalog().endpoints(Some("openai")).await?;
        ensure!(eps.len() == 1 && eps[0].price_version == c.price_version && eps[0].prices == "[2]");
        ensure!(l.catalog().set_endpoint_enabled("openai", "/v1/chat", false, Source::Admin, &actor(), NOW).await?);
        ensure!(!l.catalog().endpoints(None).await?[0].enabled);

        let nonce = "00".repeat(12);
        ensure!(
            l.catalog().add_credential_version("openai", "main", &nonce, &"ab".repeat(20), &actor(), NOW).await? == 1
        );
        ensure!(
            l.catalog().add_credential_version("openai", "main", &nonce, &"cd".repeat(20), &actor(), NOW).await? == 2
        );
        ensure!(l.catalog().revoke_credential_version("openai", "main", 1, &actor(), NOW).await?);
        ensure!(!l.catalog().revoke_credential_version("openai", "main", 1, &actor(), NOW).await?);
        let versions = l.catalog().credential_versions(Some("openai")).await?;
        ensure!(versions.len() == 2 && versions[0].revoked_unix_s.is_some() && versions[1].revoked_unix_s.is_none());
        ensure!(db.raw.exec("UPDATE credentials SET ciphertext = 'ff' WHERE version = 2").await.is_err());

        let v1 = l.settings().state().await?.version;
        // token create+revoke, provider, 2 endpoint puts with changes, disable, 2 adds, 1 revoke.
        ensure!(v1 == v0 + 9, "counter {v0} -> {v1}");
        ensure!(db.raw.count("SELECT COUNT(*) FROM admin_log").await == 9);
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_seeding_at_once_make_one_endpoint_and_one_price_version() {
    // Goal: 10 concurrent writers of the same endpoint and price over two pools (replicas starting together) all succeed, leaving one endpoint and one price version; a concurrent price change leaves exactly one more.
    each_engine(|db| async move {
        db.ledger.catalog().put_provider("p", "{}", Source::Config, &actor(), NOW).await?;
        let replica = match db.engine {
            Engine::Postgres => Ledger::connect(&db.url, test_options()).await?,
            Engine::Sqlite => db.ledger.clone(),
        };
        let mut tasks = Vec::new();
        for i in 0..10 {
            let l = if i % 2 == 0 { db.ledger.clone() } else { replica.clone() };
            tasks.push(tokio::spawn(async move {
                l.catalog().put_endpoint("p", "/x", "{}", "[1]", true, Source::Config, &actor(), NOW).await
            }));
        }
        for t in tasks {
            t.await??;
        }
        ensure!(db.raw.count("SELECT COUNT(*) FROM endpoints").await == 1);
        ensure!(db.raw.count("SELECT COUNT(*) FROM price_versions").await == 1);
        let mut tasks = Vec::new();
        for i in 0..10 {
            let l = if i % 2 == 0 { db.ledger.clone() } else { replica.clone() };
            tasks.push(tokio::spawn(async move {
                l.catalog().put_endpoint("p", "/x", "{}", "[2]", true, Source::Admin, &actor(), NOW).await
            }));
        }
        for t in tasks {
            t.await??;
        }
        ensure!(db.raw.count("SELECT COUNT(*) FROM price_versions").await == 2);
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_during_appends_is_intact() {
    // Goal: verifying the audit chain while another pool appends to it never reports a break (records beyond the head read first are not judged).
    each_engine(|db| async move {
        let replica = match db.engine {
            Engine::Postgres => Ledger::connect(&db.url, test_options()).await?,
            Engine::Sqlite => db.ledger.clone(),
        };
        let writer = tokio::spawn(async move {
            for i in 0..60u64 {
                replica.audit().append(&[audit_record(i, Decision::Accepted)]).await?;
            }
            anyhow::Ok(())
        });
        let mut checks = 0;
        while !writer.is_finished() {
            let v = db.ledger.audit().verify().await?;
            ensure!(v.intact, "{v:?}");
            checks += 1;
        }
        writer.await??;
        ensure!(db.ledger.audit().verify().await?.records == 60);
        eprintln!("[{}] {checks} verifications during appends", db.engine);
        Ok(())
    })
    .await;
}
