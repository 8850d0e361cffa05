//! What differs between the configuration file's catalog and the live one (the database):
//! the one comparison behind the startup warnings of `tollgate serve` and
//! `tollgate admin diff --config FILE`.
//!
//! The model it serves (docs/admin-api.md, "The file and the admin API"): the file seeds what
//! the database does not have and keeps the records it owns (`source = config`) in step; a
//! record changed through the admin API (price, description, enablement, deletion) belongs to
//! the admin API from then on and a restart keeps it. Whatever the file says differently about
//! such a record is reported here, field by field, never applied.
//!
//! Must not: read anything (the callers pass both sides), or print a secret (the stored specs
//! hold none: a credential is named by its variable, file or vault entry).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::{EndpointSpec, ProviderSpec};

/// A live endpoint, as the comparison needs it.
#[derive(Debug, Clone)]
pub struct LiveEndpoint {
    /// Its stored spec (`None` when it no longer reads).
    pub spec: Option<EndpointSpec>,
    /// Whether it is served.
    pub enabled: bool,
    /// Whether it is deleted.
    pub deleted: bool,
}

/// A live provider with its endpoints by path.
#[derive(Debug, Clone)]
pub struct LiveProvider {
    /// Its stored spec (`None` when it no longer reads).
    pub spec: Option<ProviderSpec>,
    /// Whether it is deleted.
    pub deleted: bool,
    /// Its endpoints by path.
    pub endpoints: BTreeMap<String, LiveEndpoint>,
}

/// One difference: which record, which field, and both values.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Difference {
    /// The provider id, or the endpoint's `provider:path`.
    pub target: String,
    /// The field (`price`, `description`, ...), or `enabled`, `deleted`, `present`.
    pub field: String,
    /// The file's value (`null`: the file does not set it).
    pub file: Value,
    /// The live value (`null`: not set).
    pub live: Value,
}

/// Every difference between the file's providers (each with its routes) and the live ones.
/// Records only in the database (made through the admin API) are not differences.
pub fn catalog(file: &[(ProviderSpec, Vec<EndpointSpec>)], live: &BTreeMap<String, LiveProvider>) -> Vec<Difference> {
    let mut out = Vec::new();
    for (provider, routes) in file {
        let id = provider.id.clone();
        let Some(lp) = live.get(&id) else {
            out.push(missing(&id));
            continue;
        };
        if lp.deleted {
            out.push(flag(&id, "deleted", false, true));
            continue;
        }
        out.extend(fields(&id, provider, lp.spec.as_ref()));
        for route in routes {
            let target = format!("{id}:{}", route.path);
            let Some(le) = lp.endpoints.get(&route.path) else {
                out.push(missing(&target));
                continue;
            };
            if le.deleted {
                out.push(flag(&target, "deleted", false, true));
                continue;
            }
            if !le.enabled {
                out.push(flag(&target, "enabled", true, false));
            }
            out.extend(fields(&target, route, le.spec.as_ref()));
        }
    }
    out
}

fn missing(target: &str) -> Difference {
    flag(target, "present", true, false)
}

fn flag(target: &str, field: &str, file: bool, live: bool) -> Difference {
    Difference { target: target.to_owned(), field: field.to_owned(), file: Value::Bool(file), live: Value::Bool(live) }
}

/// The fields of two specs that differ, in key order (a field one side leaves unset is
/// `null` there).
fn fields<T: Serialize>(target: &str, file: &T, live: Option<&T>) -> Vec<Difference> {
    let object = |v: Option<Value>| match v {
        Some(Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    let f = object(serde_json::to_value(file).ok());
    let l = object(live.and_then(|l| serde_json::to_value(l).ok()));
    let keys: std::collections::BTreeSet<&String> = f.keys().chain(l.keys()).collect();
    keys.into_iter()
        .filter_map(|k| {
            let (a, b) = (f.get(k).cloned().unwrap_or(Value::Null), l.get(k).cloned().unwrap_or(Value::Null));
            (a != b).then(|| Difference { target: target.to_owned(), field: k.clone(), file: a, live: b })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;

    fn endpoint(v: Value) -> EndpointSpec {
        serde_json::from_value(v).unwrap()
    }

    // Goal: each kind of difference is reported once, naming record and field, and records
    // only in the database are not reported.
    #[test]
    fn differences_name_record_and_field() {
        let provider: ProviderSpec = serde_json::from_value(serde_json::json!({
            "id": "weather", "pay_to": "0x1111111111111111111111111111111111111111", "upstream": "https://a.example"
        }))
        .unwrap();
        let file = vec![(
            provider.clone(),
            vec![
                endpoint(serde_json::json!({ "path": "/a", "price": "0.001", "description": "A" })),
                endpoint(serde_json::json!({ "path": "/b", "price": "0.001" })),
                endpoint(serde_json::json!({ "path": "/c", "price": "0.001" })),
                endpoint(serde_json::json!({ "path": "/d", "price": "0.001" })),
            ],
        )];
        let le = |v: Value, enabled: bool, deleted: bool| LiveEndpoint { spec: Some(endpoint(v)), enabled, deleted };
        let mut endpoints = BTreeMap::new();
        endpoints.insert("/a".to_owned(), le(serde_json::json!({ "path": "/a", "price": "0.002" }), true, false));
        endpoints.insert("/b".to_owned(), le(serde_json::json!({ "path": "/b", "price": "0.001" }), false, false));
        endpoints.insert("/c".to_owned(), le(serde_json::json!({ "path": "/c", "price": "0.001" }), true, true));
        endpoints.insert("/z".to_owned(), le(serde_json::json!({ "path": "/z", "price": "0.001" }), true, false));
        let mut live = BTreeMap::new();
        live.insert("weather".to_owned(), LiveProvider { spec: Some(provider), deleted: false, endpoints });
        let d = catalog(&file, &live);
        let got: Vec<(&str, &str)> = d.iter().map(|d| (d.target.as_str(), d.field.as_str())).collect();
        assert_eq!(
            got,
            [
                ("weather:/a", "description"),
                ("weather:/a", "price"),
                ("weather:/b", "enabled"),
                ("weather:/c", "deleted"),
                ("weather:/d", "present"),
            ]
        );
        assert_eq!((d[1].file.clone(), d[1].live.clone()), (Value::from("0.001"), Value::from("0.002")));
        assert!(catalog(&file[..0], &live).is_empty());
    }
}
