//! A provider's public description and a route's input and output descriptions, raw to
//! typed, by the rules of the x402 `bazaar` extension (`serviceName`, `tags`, `iconUrl`) and
//! with a size cap, since all of it travels in every 402's `PAYMENT-REQUIRED` header.
//!
//! Facilitators drop an invalid value quietly; the configuration refuses it instead, naming
//! the key, so an operator learns at startup (or from the admin API's 400) what agents would
//! never have seen. Must not import `provider` or `build` (they call this).

use super::error::{ConfigError, invalid};
use super::raw::{RawDiscovery, RawProvider};
use super::sections::{RouteDiscovery, ServiceInfo};

/// Longest `service_name` and tag, in characters (the bazaar extension's rule).
pub const SERVICE_TEXT_CHARS_MAX: usize = 32;
/// Most tags a provider may have (the bazaar extension's rule).
pub const TAGS_MAX: usize = 5;
/// Longest `icon_url` (the bazaar extension's rule).
pub const ICON_URL_BYTES_MAX: usize = 2048;
/// Largest route `discovery` table, as compact JSON: it is repeated in every 402 header of the
/// route, and header sizes are capped by clients and proxies (8 KiB is common).
pub const DISCOVERY_BYTES_MAX: usize = 4096;

/// Printable ASCII, 1 to 32 characters.
fn short_text(s: &str) -> bool {
    !s.is_empty() && s.len() <= SERVICE_TEXT_CHARS_MAX && s.bytes().all(|b| (0x20..=0x7e).contains(&b))
}

/// The provider's service description.
pub(super) fn service_info(key: &dyn Fn(&str) -> String, p: &RawProvider) -> Result<ServiceInfo, ConfigError> {
    if let Some(name) = &p.service_name
        && !short_text(name)
    {
        return Err(invalid(key("service_name"), "use 1 to 32 printable ASCII characters"));
    }
    let tags = p.tags.clone().unwrap_or_default();
    if tags.len() > TAGS_MAX {
        return Err(invalid(key("tags"), "at most 5 tags"));
    }
    for (i, t) in tags.iter().enumerate() {
        if !short_text(t) {
            return Err(invalid(key("tags"), "each tag is 1 to 32 printable ASCII characters"));
        }
        if tags.iter().take(i).any(|o| o.eq_ignore_ascii_case(t)) {
            return Err(invalid(key("tags"), "tags must differ (ignoring case)"));
        }
    }
    if let Some(icon) = &p.icon_url {
        check_icon_url(icon).map_err(|reason| invalid(key("icon_url"), reason))?;
    }
    Ok(ServiceInfo { name: p.service_name.clone(), tags, icon_url: p.icon_url.clone() })
}

/// The bazaar extension's `iconUrl` rule: absolute `http(s)`, at most 2048 bytes, no user
/// information, a host name that is not an IP literal, a number or a loopback name.
fn check_icon_url(icon: &str) -> Result<(), &'static str> {
    if icon.len() > ICON_URL_BYTES_MAX || icon.chars().any(char::is_control) {
        return Err("at most 2048 bytes, no control characters");
    }
    let url = reqwest::Url::parse(icon).map_err(|_| "not an absolute URL")?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("must be an http:// or https:// URL");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry user information");
    }
    // The URL parser normalises numeric IPv4 spellings (`2130706433`, `0x7f.1`) to dotted
    // form, so one parse as an address catches them with the literals.
    let host = url.host_str().ok_or("must name a host")?.to_ascii_lowercase();
    if host.starts_with('[') || host.parse::<std::net::IpAddr>().is_ok() {
        return Err("the host must be a name, not an IP address");
    }
    let loopback = ["localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"];
    if loopback.contains(&host.trim_end_matches('.'))
        || host.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        || host.starts_with("0x")
    {
        return Err("the host must be a public name, not a loopback name or a number");
    }
    Ok(())
}

/// A route's `discovery` table.
pub(super) fn route_discovery(
    key: &dyn Fn(&str) -> String,
    d: Option<&RawDiscovery>,
) -> Result<RouteDiscovery, ConfigError> {
    let Some(d) = d else { return Ok(RouteDiscovery { body_type: "json".to_owned(), ..RouteDiscovery::default() }) };
    let size = serde_json::to_vec(d).map(|v| v.len()).unwrap_or(usize::MAX);
    if size > DISCOVERY_BYTES_MAX {
        return Err(invalid(key("discovery"), "at most 4096 bytes as JSON (it is sent in every 402 header)"));
    }
    let object = |field: &str, v: &Option<serde_json::Value>| match v {
        Some(v) if !v.is_object() => {
            Err(invalid(key(&format!("discovery.{field}")), "must be a table (a JSON object)"))
        }
        _ => Ok(()),
    };
    object("query_example", &d.query_example)?;
    object("query_schema", &d.query_schema)?;
    object("body_schema", &d.body_schema)?;
    object("output_schema", &d.output_schema)?;
    if let Some(q) = d.query_example.as_ref().and_then(|v| v.as_object())
        && q.values().any(|v| !v.is_string())
    {
        return Err(invalid(key("discovery.query_example"), "query parameter examples are strings"));
    }
    let body_type = d.body_type.clone().unwrap_or_else(|| "json".to_owned());
    if !matches!(body_type.as_str(), "json" | "form-data" | "text") {
        return Err(invalid(key("discovery.body_type"), "expected json, form-data or text"));
    }
    Ok(RouteDiscovery {
        query_example: d.query_example.clone(),
        query_schema: d.query_schema.clone(),
        body_type,
        body_example: d.body_example.clone(),
        body_schema: d.body_schema.clone(),
        output_example: d.output_example.clone(),
        output_schema: d.output_schema.clone(),
    })
}
