//! The deployable image, checked without Docker (none runs on the development machines):
//! docker-compose.yml parses and has the documented shape, every deploy/*.toml parses as a
//! configuration with the environment compose gives it, and the Dockerfile builds what CI
//! builds and serves the files compose mounts.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// docker-compose.yml as JSON through PyYAML (no YAML parser is in Cargo.lock); `None`, said
/// loudly, where python3 with PyYAML is missing.
fn compose() -> Option<Value> {
    let script = "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))";
    let out =
        std::process::Command::new("python3").args(["-c", script]).arg(root().join("docker-compose.yml")).output();
    match out {
        Ok(o) if o.status.success() => Some(serde_json::from_slice(&o.stdout).expect("JSON from PyYAML")),
        Ok(o) if String::from_utf8_lossy(&o.stderr).contains("No module named 'yaml'") => {
            eprintln!("!! python3 has no PyYAML: SKIPPING the docker-compose.yml parse check");
            None
        }
        Ok(o) => panic!("docker-compose.yml does not parse: {}", String::from_utf8_lossy(&o.stderr)),
        Err(e) => {
            eprintln!("!! python3 not found ({e}): SKIPPING the docker-compose.yml parse check");
            None
        }
    }
}

/// `${NAME:-default}` / `${NAME:?message}` / `${NAME}` in a compose value: the default, or a
/// placeholder standing for what the operator must set.
fn interpolate(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').expect("closed ${") + start;
        let inner = &rest[start + 2..end];
        out.push_str(match inner.split_once(":-") {
            Some((_, default)) => default,
            None => "SET_BY_OPERATOR",
        });
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

// Goal: docker-compose.yml parses and declares PostgreSQL, two gateway replicas built from the
// Dockerfile that share it and mount deploy/ as /etc/tollgate, and a `demo` profile with anvil
// (the pinned npm package) and the token placement; the gateways' environment names every
// variable deploy/*.toml reads, and the configuration file they are started with exists.
#[test]
fn compose_file_has_the_documented_shape() {
    let Some(c) = compose() else { return };
    let services = c["services"].as_object().expect("services");
    assert_eq!(services["postgres"]["image"], "postgres:15");
    let gateways: Vec<&Value> = ["gateway-1", "gateway-2"].iter().map(|g| &services[*g]).collect();
    let configs = deploy_configs();
    for g in &gateways {
        assert_eq!(g["build"], ".", "{g}");
        assert_eq!(g["depends_on"]["postgres"]["condition"], "service_healthy");
        assert!(g["volumes"].as_array().unwrap().iter().any(|v| v == "./deploy:/etc/tollgate:ro"), "{g}");
        assert!(g.get("profiles").is_none(), "the replicas run without a profile");
        let command: Vec<String> =
            g["command"].as_array().unwrap().iter().map(|v| interpolate(v.as_str().unwrap())).collect();
        assert_eq!(command[0], "--config");
        let file = command[1].strip_prefix("/etc/tollgate/").expect("a file under /etc/tollgate");
        assert!(root().join("deploy").join(file).is_file(), "deploy/{file}");
        let env = g["environment"].as_object().unwrap();
        assert!(env["TOLLGATE_DATABASE_URL"].as_str().unwrap().contains("@postgres:5432/"), "the shared database");
        for (path, text) in &configs {
            for name in env_names(text) {
                assert!(env.contains_key(&name), "{path} reads {name}, which compose does not set");
            }
        }
    }
    assert_eq!(gateways[0]["environment"], gateways[1]["environment"], "the replicas are configured alike");
    let pinned: Value = serde_json::from_str(&read("package.json")).unwrap();
    let anvil_version = pinned["devDependencies"]["@foundry-rs/anvil"].as_str().unwrap();
    let anvil = &services["anvil"];
    assert_eq!(anvil["profiles"], serde_json::json!(["demo"]));
    assert!(anvil["image"].as_str().unwrap().starts_with("node:"));
    let command: Vec<&str> = anvil["command"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert!(command.contains(&format!("@foundry-rs/anvil@{anvil_version}").as_str()), "{command:?}");
    assert!(command.windows(2).any(|w| w == ["--chain-id", "8453"]), "a local Base: {command:?}");
    assert_eq!(services["demo-token"]["profiles"], serde_json::json!(["demo"]));
    assert!(root().join("deploy/demo-token.mjs").is_file());
}

/// Every deploy/*.toml with its text.
fn deploy_configs() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = std::fs::read_dir(root().join("deploy"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .map(|p| (p.display().to_string(), std::fs::read_to_string(&p).unwrap()))
        .collect();
    out.sort();
    assert!(out.len() >= 2, "deploy/tollgate.toml and deploy/tollgate.demo.toml");
    out
}

/// The environment variables a configuration reads (`*_env = "NAME"`).
fn env_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    for part in text.split(['\n', ',', '{', '}']) {
        let part = part.trim();
        if part.starts_with('#') {
            continue;
        }
        if let Some((key, value)) = part.split_once('=')
            && key.trim().ends_with("_env")
        {
            names.push(value.trim().trim_matches('"').to_owned());
        }
    }
    names
}

// Goal: every deploy/*.toml is a valid configuration (`Config::parse`, unknown keys refused)
// with the variables compose sets, and says what the image expects: the public listener on
// 0.0.0.0:8402 (where HEALTHCHECK looks), the admin listener on loopback, PostgreSQL.
#[test]
fn deploy_configs_parse() {
    let env: HashMap<&str, &str> = HashMap::from([
        ("TOLLGATE_DATABASE_URL", "postgres://tollgate:tollgate@postgres:5432/tollgate"),
        ("TOLLGATE_RELAYER_KEY", "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"),
        ("TOLLGATE_VAULT_KEY", "0000000000000000000000000000000000000000000000000000000000000001"),
        ("BASE_RPC_URL", "https://mainnet.base.org"),
        ("WEATHER_API_KEY", "unset"),
    ]);
    for (path, text) in deploy_configs() {
        let config = tollgate_gateway::Config::parse(&text, &|k| env.get(k).map(|v| (*v).to_owned()))
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(config.server.listen.to_string(), "0.0.0.0:8402", "{path}");
        assert!(config.admin.listen.ip().is_loopback(), "{path}");
        assert!(
            secrecy::ExposeSecret::expose_secret(&config.database.url).starts_with("postgres://"),
            "{path}: replicas share PostgreSQL"
        );
    }
}

// Goal: the Dockerfile builds with exactly the command CI runs (.ci/run), runs as a non-root
// user, starts `tollgate serve --config /etc/tollgate/tollgate.toml` (a file in deploy/), and
// checks health on /readyz of the listener deploy/tollgate.toml opens.
#[test]
fn dockerfile_builds_what_ci_builds() {
    let dockerfile = read("Dockerfile");
    let build: Vec<&str> = dockerfile.lines().filter_map(|l| l.strip_prefix("RUN cargo ")).collect();
    assert_eq!(build, ["build --release -p tollgate-cli --locked"], "one cargo command in the image");
    // CI runs the same command in the debug profile (see .ci/run for why).
    let ci = read(".ci/run");
    let debug = build[0].replace("build --release ", "build ");
    assert!(ci.lines().any(|l| l.trim() == format!("cargo {debug}")), "CI runs the image's build");
    assert!(dockerfile.lines().any(|l| l.starts_with("FROM rust:") && l.ends_with(" AS builder")));
    let runtime = dockerfile.lines().rfind(|l| l.starts_with("FROM ")).unwrap();
    assert!(runtime == "FROM debian:bookworm-slim" || runtime.starts_with("FROM gcr.io/distroless/cc"), "{runtime}");
    assert!(dockerfile.lines().any(|l| l.starts_with("USER ") && !l.contains("root") && !l.contains(" 0")));
    assert!(dockerfile.contains(r#"ENTRYPOINT ["tollgate", "serve"]"#));
    assert!(dockerfile.contains(r#"CMD ["--config", "/etc/tollgate/tollgate.toml"]"#));
    assert!(root().join("deploy/tollgate.toml").is_file());
    assert!(dockerfile.contains("http://127.0.0.1:8402/readyz"), "HEALTHCHECK on /readyz");
    let ignore = read(".dockerignore");
    for dir in ["target", "node_modules"] {
        assert!(ignore.lines().any(|l| l.trim() == dir), ".dockerignore: {dir}");
    }
}
