//! The stored spec format, pinned by golden files: what was stored must keep reading the same.

use std::path::PathBuf;

use tollgate_control::{CredentialSpec, DiscoverySpec, EndpointSpec, ProviderSpec, SpecError};

fn full_provider() -> ProviderSpec {
    ProviderSpec {
        id: "weather".into(),
        pay_to: "0x00000000000000000000000000000000000000aa".into(),
        upstream: "https://api.example.com/v1".into(),
        strip_prefix: Some("/weather".into()),
        credential: Some(CredentialSpec {
            inject: "header".into(),
            secret_env: Some("WEATHER_KEY".into()),
            secret_file: Some(PathBuf::from("/run/secrets/weather")),
            vault: Some("main".into()),
            header: Some("X-Api-Key".into()),
            template: Some("Key {secret}".into()),
            param: Some("key".into()),
            username: Some("user".into()),
        }),
        upstream_timeout_ms: Some(5000),
        allow_insecure_http: Some(false),
        // Added after the golden file was written (discovery): optional, absent there.
        service_name: None,
        tags: None,
        icon_url: None,
    }
}

fn full_endpoint() -> EndpointSpec {
    EndpointSpec {
        path: "/weather/{city}".into(),
        methods: Some(vec!["GET".into(), "POST".into()]),
        price: Some("0.001".into()),
        price_atomic: Some("1000".into()),
        // Added after the golden file was written: optional, absent there, so the records
        // stored before free routes read unchanged.
        free: None,
        networks: Some(vec!["eip155:8453".into()]),
        description: Some("Current weather".into()),
        mime_type: Some("application/json".into()),
        settlement: Some("deferred".into()),
        max_timeout_seconds: Some(60),
        upstream_timeout_ms: Some(5000),
        body_bytes_max: Some(65536),
        charge_redirects: Some(true),
        allow_set_cookie: Some(false),
        payment_id_required: None,
        replay_body_bytes_max: None,
        settlement_wait: None,
        // Added after the golden file was written (discovery): optional, absent there.
        discovery: None,
    }
}

#[test]
fn version_1_golden_files_read_and_write_byte_for_byte() {
    // Goal: the golden files of version 1 (every field, and only the required ones) read into the expected specs and are written back byte for byte, so a renamed or reordered field fails here, not on stored records.
    let golden = include_str!("../golden/provider-v1.json");
    assert_eq!(ProviderSpec::from_stored(golden).unwrap(), full_provider());
    assert_eq!(full_provider().to_stored(), golden);
    let golden = include_str!("../golden/endpoint-v1.json");
    assert_eq!(EndpointSpec::from_stored(golden).unwrap(), full_endpoint());
    assert_eq!(full_endpoint().to_stored(), golden);
    let minimal = include_str!("../golden/provider-v1-minimal.json");
    let p = ProviderSpec::from_stored(minimal).unwrap();
    assert_eq!((p.strip_prefix.as_deref(), p.credential.is_none()), (None, true));
    assert_eq!(p.to_stored(), minimal);
    let minimal = include_str!("../golden/endpoint-v1-minimal.json");
    let e = EndpointSpec::from_stored(minimal).unwrap();
    assert_eq!((e.price.as_deref(), e.methods.is_none()), (Some("0.001"), true));
    assert_eq!(e.to_stored(), minimal);
}

#[test]
fn version_marker_is_read_and_unknown_versions_are_refused() {
    // Goal: a record marked `"v": 1` reads like an unmarked one; a newer version or a malformed record is refused with its reason, never misread.
    let marked = r#"{"v":1,"path":"/weather/{city}","price":"0.001"}"#;
    assert_eq!(EndpointSpec::from_stored(marked).unwrap().path, "/weather/{city}");
    let newer = r#"{"v":2,"path":"/weather/{city}","price":"0.001"}"#;
    assert!(matches!(EndpointSpec::from_stored(newer), Err(SpecError::UnknownVersion { found: 2 })));
    let renamed = r#"{"path":"/weather/{city}","prize":"0.001"}"#;
    let err = EndpointSpec::from_stored(renamed).unwrap_err();
    assert!(matches!(&err, SpecError::Malformed { reason } if reason.contains("prize")), "{err}");
    assert!(matches!(ProviderSpec::from_stored("[]"), Err(SpecError::Malformed { .. })));
}

#[test]
fn discovery_fields_golden_files_read_and_write_byte_for_byte() {
    // Goal: the fields discovery added (a provider's service_name, tags, icon_url; an endpoint's discovery table) are pinned by golden files of version 1, read into the expected specs and written back byte for byte.
    let golden = include_str!("../golden/provider-v1-service.json");
    let p = ProviderSpec::from_stored(golden).unwrap();
    assert_eq!(
        (p.service_name.as_deref(), p.tags.clone(), p.icon_url.as_deref()),
        (
            Some("Weather"),
            Some(vec!["weather".to_owned(), "forecast".to_owned()]),
            Some("https://img.example.com/w.png")
        )
    );
    assert_eq!(p.to_stored(), golden);
    let golden = include_str!("../golden/endpoint-v1-discovery.json");
    let e = EndpointSpec::from_stored(golden).unwrap();
    assert_eq!(
        e.discovery,
        Some(DiscoverySpec {
            query_example: Some(serde_json::json!({ "units": "metric" })),
            query_schema: Some(
                serde_json::json!({ "properties": { "units": { "type": "string" } }, "type": "object" })
            ),
            body_type: None,
            body_example: None,
            body_schema: None,
            output_example: Some(serde_json::json!({ "temp": 12 })),
            output_schema: None,
        })
    );
    assert_eq!(e.to_stored(), golden);
}
