//! The phases one at a time, through the gateway's public APIs: the whole handler in process,
//! the deferred path's decode, signature check, pending spend, reserve, forward and ledger
//! transition (with the settlement worker idle, and the ledger calls again while it drains a
//! backlog), and `after` mode's verification, settlement broadcast and receipt wait.

use super::*;

impl Stack {
    /// The whole gateway handler for a deferred call, in process (no client TCP hop); the
    /// worker settles these calls meanwhile, as it does under load.
    pub(crate) async fn probe_handler(&self, payments: &[PaymentBuilder]) -> anyhow::Result<Phase> {
        let router = tollgate_gateway::router(self.gateway.clone());
        let requests = payments
            .iter()
            .enumerate()
            .map(|(i, b)| {
                axum::http::Request::get(format!("/deferred/weather/probe{i}"))
                    .header("payment-signature", v2_header(b))
                    .body(Body::empty())
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut requests = requests.into_iter();
        let (samples, _) = timed(payments.len(), |_| {
            let (router, req) = (router.clone(), requests.next());
            async move {
                let resp = router.oneshot(req.context("request")?).await?;
                let status = resp.status();
                let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await?;
                ensure!(
                    status == StatusCode::OK,
                    "in-process deferred call: {status} {}",
                    String::from_utf8_lossy(&body)
                );
                Ok(())
            }
        })
        .await?;
        Ok(Phase::new("handler_in_process".to_owned(), false, samples))
    }

    /// The deferred path's phases, one at a time, through the gateway's public APIs, plus
    /// references (a primary-key read, a raw fsync, one eth_call, a full verification).
    pub(crate) async fn probe_phases(
        &self,
        http: &reqwest::Client,
        probes: &ProbeSet,
        offer: &v2::PaymentRequirements,
        after_offer: &v2::PaymentRequirements,
    ) -> anyhow::Result<(Vec<Phase>, Vec<EntryId>)> {
        let gw = &self.gateway;
        let offers = vec![offer.clone()];
        let headers: Vec<String> = probes.idle.iter().map(v2_header).collect();
        let n = headers.len();
        let mut out = Vec::new();

        let cap = gw.config.server.payment_header_bytes_max;
        let (samples, decoded) = timed(n, |i| {
            let (h, offers) = (&headers[i], &offers);
            async move {
                let p = PaymentPayload::from_header(h.as_bytes(), cap)?;
                find_offer(offers, &p).map_err(|e| anyhow::anyhow!("offer mismatch: {e:?}"))?;
                Ok(p)
            }
        })
        .await?;
        out.push(Phase::new("decode+find_offer".to_owned(), true, samples));

        let decoded = &decoded;
        let (samples, _) =
            timed(n, |i| async move { Ok(gw.verifier.verify_signature_only(offer, &decoded[i]).await?) }).await?;
        out.push(Phase::new("verify_signature_only".to_owned(), true, samples));

        let (ledger, ids) = self.probe_ledger(&probes.idle, "").await?;
        let mut ledger = ledger.into_iter();
        // In request order: pending spend (verify phase), reserve, forward, transition.
        out.extend(ledger.by_ref().take(3));

        let provider = self.provider(DEFERRED_PROVIDER)?;
        let route = provider.routes.first().context("deferred route")?;
        let mut agent_headers = HeaderMap::new();
        agent_headers.insert("payment-signature", HeaderValue::from_str(&headers[0])?);
        agent_headers.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        let (samples, _) = timed(n, |i| {
            let target = Target {
                url: proxy::upstream_url(
                    &provider.upstream,
                    &format!("/deferred/weather/probe{i}"),
                    provider.strip_prefix.as_deref(),
                    None,
                ),
                credential: provider.credential.as_ref().and_then(|c| match &c.secret {
                    tollgate_gateway::config::SecretSource::Static { secret, .. } => Some((&c.injection, secret)),
                    tollgate_gateway::config::SecretSource::Vault { .. } => None,
                }),
                timeout: route.upstream_timeout,
                response_bytes_max: gw.config.server.response_bytes_max,
                provider: &provider.id,
                base: &provider.upstream,
                strip_prefix: provider.strip_prefix.as_deref(),
                forwarded: None,
                allow_set_cookie: route.allow_set_cookie,
            };
            let agent_headers = &agent_headers;
            async move {
                let up = proxy::forward(&gw.http, target, Method::GET, agent_headers, bytes::Bytes::new(), true)
                    .await
                    .map_err(|e| anyhow::anyhow!("forward: {e}"))?;
                ensure!(up.status == StatusCode::OK, "forward probe: upstream said {}", up.status);
                Ok(())
            }
        })
        .await?;
        out.push(Phase::new("forward_upstream".to_owned(), true, samples));
        out.extend(ledger);

        let direct = self.direct_calls(n);
        let (samples, _) = timed(n, |i| {
            let c = &direct[i];
            async move {
                let resp = http.get(&c.url).header(c.header.0, &c.header.1).send().await?;
                let status = resp.status();
                resp.bytes().await?;
                ensure!(status == StatusCode::OK, "direct probe: {status}");
                Ok(())
            }
        })
        .await?;
        out.push(Phase::new("direct_call_for_reference".to_owned(), false, samples));

        let path = self.db_dir.path().join("fsync-probe");
        let samples = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<Duration>> {
            use std::io::Write;
            let mut f = std::fs::File::create(&path)?;
            let block = [7u8; 4096];
            let mut samples = Vec::with_capacity(n);
            for _ in 0..n {
                let t = Instant::now();
                f.write_all(&block)?;
                f.sync_data()?;
                samples.push(t.elapsed());
            }
            std::fs::remove_file(&path)?;
            Ok(samples)
        })
        .await??;
        out.push(Phase::new("disk_write_fsync_4k".to_owned(), false, samples));

        let payer = self.payers[0].address();
        let token = self.chain.token;
        let (samples, _) =
            timed(n, |_| async move { Ok(gw.verifier.token_balance(CHAIN_ID, token, payer).await?) }).await?;
        out.push(Phase::new("rpc_eth_call_balance".to_owned(), false, samples));

        let full: Vec<PaymentPayload> = probes.verify_full.iter().map(|b| b.v2()).collect();
        let full = &full;
        let (samples, verified) =
            timed(n, |i| async move { Ok(gw.verifier.verify(after_offer, &full[i]).await?) }).await?;
        out.push(Phase::new("verify_full_after_mode".to_owned(), false, samples));

        // The settlement of after mode, without the ledger's claim and record around it:
        // these payments really settle (the caller counts them in the on-chain check).
        let settler = gw.settlers.get(&CHAIN_ID).context("no settler")?;
        let verified = &verified;
        let (chain, relayer) = (settler.chain(), settler.address());
        let (samples, _) = timed(n, |i| async move {
            let v = &verified[i];
            match chain.estimate_gas(relayer, v.asset, v.transfer_calldata()).await? {
                CallOutcome::Success(gas) => Ok(gas),
                CallOutcome::Reverted(_) => bail!("estimate_gas reverted for an unused authorization"),
            }
        })
        .await?;
        out.push(Phase::new("rpc_estimate_gas".to_owned(), false, samples));
        let (samples, _) = timed(n, |_| async move { Ok(chain.fees().await?) }).await?;
        out.push(Phase::new("rpc_fees".to_owned(), false, samples));
        let (samples, hashes) = timed(n, |i| async move { Ok(settler.submit(&verified[i]).await?) }).await?;
        let mut submit = Phase::new("settle_submit_after_mode".to_owned(), false, samples);
        submit.note = "estimate_gas+fees+sign+send_raw".to_owned();
        out.push(submit);
        let hashes = &hashes;
        let (samples, _) = timed(n, |i| async move {
            match settler.await_receipt(&verified[i], hashes[i]).await? {
                SettleOutcome::Settled(_) => Ok(()),
                SettleOutcome::Pending { tx_hash } => bail!("settlement {tx_hash} not mined in time"),
            }
        })
        .await?;
        let mut receipt = Phase::new("settle_await_receipt_after_mode".to_owned(), false, samples);
        receipt.note = format!("poll_ms={}", gw.config.settlement.receipt_poll_interval.as_millis());
        out.push(receipt);
        Ok((out, ids))
    }

    pub(crate) fn provider(&self, id: &str) -> anyhow::Result<&tollgate_gateway::config::ProviderConfig> {
        self.gateway.config.providers.iter().find(|p| p.id == id).with_context(|| format!("provider {id}"))
    }

    /// The ledger calls of a deferred request — pending spend, reserve, `reserved →
    /// forwarded` — plus a primary-key read for reference, for the payments in `payments`.
    /// The entries belong to the probe's own payer and provider and are voided at the end,
    /// so they never settle and never count in the drain or on-chain checks.
    pub(crate) async fn probe_ledger(
        &self,
        payments: &[PaymentBuilder],
        suffix: &str,
    ) -> anyhow::Result<(Vec<Phase>, Vec<EntryId>)> {
        let gw = &self.gateway;
        let offer = payments.first().context("no probe payments")?.offer.clone();
        let verified = {
            let mut v = Vec::with_capacity(payments.len());
            for b in payments {
                v.push(gw.verifier.verify_signature_only(&offer, &b.v2()).await?);
            }
            v
        };
        let n = verified.len();
        let (token, busy_payer) = (self.chain.token, self.payers[0].address());
        let route_name = gw
            .live
            .get()
            .routes
            .iter()
            .find(|r| r.provider.id == DEFERRED_PROVIDER)
            .context("deferred route entry")?
            .name
            .clone();
        let route_name = &route_name;

        // A load payer, whose many entries the sum has to go through, as under load.
        let (pending, _) =
            timed(n, |_| async move { Ok(gw.ledger.spend().pending(CHAIN_ID, token, busy_payer).await?) }).await?;

        let (reserve, ids) = timed(n, |i| {
            let v = &verified[i];
            async move {
                let a = &v.authorization;
                let entry = NewEntry {
                    chain_id: v.chain_id,
                    asset: v.asset,
                    payer: a.from,
                    pay_to: a.to,
                    nonce: a.nonce,
                    amount: AtomicAmount::from_u256(a.value).context("amount")?,
                    valid_before_unix_s: u64::try_from(a.valid_before)?,
                    provider: "bench-probe".to_owned(),
                    route: route_name.clone(),
                    method: "GET".to_owned(),
                    path: format!("/deferred/weather/probe{i}"),
                    mode: SettlementMode::After,
                    payment: serde_json::to_string(v)?,
                    price_version: None,
                    credential: None,
                    credential_version: None,
                    now_unix_s: gw.clock.now_unix_s(),
                };
                Ok(gw.ledger.entries().reserve(&entry).await?)
            }
        })
        .await?;

        let (transition, _) = timed(n, |i| {
            let id = &ids[i];
            async move {
                let t = Transition::Forwarded { upstream_status: Some(200) };
                let moved = gw
                    .ledger
                    .entries()
                    .transition_from(id, EntryState::Reserved, t, "upstream_ok", None, gw.clock.now_unix_s())
                    .await?;
                ensure!(moved, "probe entry {id} was not in reserved");
                Ok(())
            }
        })
        .await?;

        let (by_id, _) = timed(n, |i| {
            let id = &ids[i];
            async move { gw.ledger.entries().get(id).await?.context("probe entry vanished") }
        })
        .await?;

        // The same sum for an address with no history, for reference: the query reads every
        // entry the payer ever had (through the unique index's prefix) to filter on state.
        let fresh = random_key().address();
        let (pending_fresh, _) =
            timed(n, |_| async move { Ok(gw.ledger.spend().pending(CHAIN_ID, token, fresh).await?) }).await?;
        let history = self.entries_of(busy_payer).await?;

        let mut pending = Phase::new(format!("ledger_pending_spend{suffix}"), true, pending);
        pending.note = format!("payer_entries={history}");
        Ok((
            vec![
                pending,
                Phase::new(format!("ledger_pending_spend_no_history{suffix}"), false, pending_fresh),
                Phase::new(format!("ledger_reserve{suffix}"), true, reserve),
                // Written beside the response on deferred routes, so not in the path's sum.
                Phase::new(format!("ledger_transition_forwarded{suffix}"), false, transition),
                Phase::new(format!("ledger_entry_by_id{suffix}"), false, by_id),
            ],
            ids,
        ))
    }

    /// How many ledger entries `payer` has, in any state.
    pub(crate) async fn entries_of(&self, payer: Address) -> anyhow::Result<u64> {
        let q = SpendQuery {
            chain_id: CHAIN_ID,
            asset: self.chain.token,
            payer,
            provider: None,
            route: None,
            created_from_unix_s: None,
            created_before_unix_s: None,
        };
        let t = self.gateway.ledger.spend().totals(&q).await?;
        Ok(t.settled.count + t.pending.count + t.refund_owed.count)
    }

    pub(crate) async fn void_probe_entries(&self, ids: &[EntryId]) -> anyhow::Result<()> {
        let gw = &self.gateway;
        for id in ids {
            let t = Transition::Voided { reason: "bench_probe".to_owned() };
            gw.ledger
                .entries()
                .transition_from(id, EntryState::Forwarded, t, "bench_probe", None, gw.clock.now_unix_s())
                .await?;
        }
        Ok(())
    }
}
