//! Pays one x402-priced URL with the SDK alone: the key from `TOLLGATE_KEY`, spend limits,
//! the spending record in `TOLLGATE_SPEND_FILE` (default `spend.json`), and an extra CA for
//! https from `TOLLGATE_CA_FILE` (optional; the Mozilla roots are always trusted).
//!
//! ```text
//! TOLLGATE_KEY=0x<64 hex> cargo run -p tollgate-client --example pay -- https://gateway.example/weather/paris
//! ```
//!
//! The test suite runs [`pay`] against a gateway served over TLS, so this file cannot rot.

use std::path::PathBuf;

use tollgate_client::{ClientConfig, ClientError, ClientTls, HeaderMap, Method, Paid, PayingClient, Spent, U256, keys};

/// The configuration from the environment (`lookup` is `std::env::var` in `main`).
pub fn config_from_env(lookup: &dyn Fn(&str) -> Option<String>) -> Result<ClientConfig, ClientError> {
    let signer = keys::signer_from_env("TOLLGATE_KEY", lookup)?;
    let store = lookup("TOLLGATE_SPEND_FILE").unwrap_or_else(|| "spend.json".to_owned());
    let mut config = ClientConfig::new(signer, PathBuf::from(store));
    // Atomic units of USDC (6 decimals): at most 1 cent a call, 1 USDC a UTC day.
    config.limits.max_per_call_atomic = Some(U256::from(10_000u64));
    config.limits.daily_budget_atomic = Some(U256::from(1_000_000u64));
    let ca = lookup("TOLLGATE_CA_FILE").map(PathBuf::from);
    let tls = ClientTls::new(ca.as_deref()).map_err(|e| ClientError::InvalidRequest { reason: format!("TLS: {e}") })?;
    config.tls = Some(tls);
    Ok(config)
}

/// GETs `url`, paying its 402 within the limits; returns the answer and what the record counts.
pub async fn pay(config: ClientConfig, url: &str) -> Result<(Paid, Spent), ClientError> {
    let client = PayingClient::new(config)?;
    let paid = client.send(Method::GET, url, HeaderMap::new(), "").await?;
    Ok((paid, client.spent().await?))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args().nth(1).ok_or("usage: pay URL")?;
    let config = config_from_env(&|name| std::env::var(name).ok())?;
    let (paid, spent) = pay(config, &url).await?;
    if let Some(p) = &paid.payment {
        eprintln!("paid {} atomic on {} (tx {:?}), state {:?}", p.amount, p.network, p.transaction, p.state);
    }
    eprintln!("HTTP {}; the record counts {} atomic in all", paid.status, spent.total_atomic);
    println!("{}", String::from_utf8_lossy(&paid.body));
    Ok(())
}
