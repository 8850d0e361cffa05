//! `tollgate admin diff`: the configuration file's providers and endpoints against the live
//! ones (read through the admin API), field by field — the same comparison `tollgate serve`
//! logs at startup (`tollgate_control::diff`).
//!
//! Must not: change anything, or need the file's secrets (the file is read as written).

use std::collections::BTreeMap;
use std::path::Path;

use reqwest::Method;
use tollgate_admin_api::types as api;
use tollgate_control::diff::{self, LiveEndpoint, LiveProvider};
use tollgate_control::{EndpointSpec, ProviderSpec};
use tollgate_gateway::Config;

use super::client::Api;
use super::output::print_json;
use crate::{EXIT_FAILURE, EXIT_OK, Failure};

/// Prints `{"differences": [...]}` (empty when the file and the live catalog agree).
pub(super) async fn run(api: &Api, config: &Path) -> Result<u8, Failure> {
    let raw = Config::raw_providers_at(config).map_err(|e| Failure::new(EXIT_FAILURE, e))?;
    let file = tollgate_gateway::control::file_catalog(&raw);
    let deleted = [("include_deleted", Some("true".to_owned()))];
    let answer = api.json(Method::GET, &["providers"], &deleted, None).await?;
    let providers: api::ProviderList = decode(answer)?;
    let mut live = BTreeMap::new();
    for p in providers.providers {
        let mut endpoints = BTreeMap::new();
        if p.deleted_unix_s.is_none() {
            let answer = api.json(Method::GET, &["providers", &p.id, "endpoints"], &deleted, None).await?;
            let list: api::EndpointList = decode(answer)?;
            for e in list.endpoints {
                let spec = serde_json::from_value::<EndpointSpec>(e.spec).ok();
                endpoints
                    .insert(e.path, LiveEndpoint { spec, enabled: e.enabled, deleted: e.deleted_unix_s.is_some() });
            }
        }
        let spec = serde_json::from_value::<ProviderSpec>(p.spec).ok();
        live.insert(p.id, LiveProvider { spec, deleted: p.deleted_unix_s.is_some(), endpoints });
    }
    let differences = diff::catalog(&file, &live);
    print_json(&serde_json::json!({ "config": config.display().to_string(), "differences": differences }));
    Ok(EXIT_OK)
}

fn decode<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T, Failure> {
    serde_json::from_value(v)
        .map_err(|e| Failure::new(EXIT_FAILURE, format!("the admin API answered with an unexpected shape: {e}")))
}
