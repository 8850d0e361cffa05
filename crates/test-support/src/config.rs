//! [`ConfigBuilder`]: the gateway's TOML configuration as tests, the bench and the demo write
//! it — one builder instead of a copied block per suite. Tables are written in a fixed order
//! (`[server]`, `[admin]`, `[database]`, `[vault]`, `[control]`, `[settlement]`, then any
//! other table in the order first set), then `[[networks]]`, `[[providers]]` with their
//! `[[providers.routes]]`, then raw text appended verbatim (a test's extra table).
//!
//! Owns text only: it does not parse or check the result (the gateway's `Config::parse` does,
//! and a test that wants a refused configuration builds one on purpose). Knows no defaults
//! beyond `listen = "127.0.0.1:0"`; each suite states the knobs it relies on.

use std::fmt::Write as _;
use std::path::Path;

use alloy_primitives::Address;

use crate::BASE_USDC;

/// A TOML value, rendered when the configuration is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TomlValue {
    /// A basic string (quoted and escaped).
    Str(String),
    /// An integer.
    Int(i128),
    /// A boolean.
    Bool(bool),
    /// TOML written verbatim (arrays, inline tables).
    Raw(String),
}

impl TomlValue {
    fn render(&self) -> String {
        match self {
            TomlValue::Str(s) => quote(s),
            TomlValue::Int(n) => n.to_string(),
            TomlValue::Bool(b) => b.to_string(),
            TomlValue::Raw(r) => r.clone(),
        }
    }
}

impl From<&str> for TomlValue {
    fn from(s: &str) -> Self {
        TomlValue::Str(s.to_owned())
    }
}

impl From<String> for TomlValue {
    fn from(s: String) -> Self {
        TomlValue::Str(s)
    }
}

impl From<&String> for TomlValue {
    fn from(s: &String) -> Self {
        TomlValue::Str(s.clone())
    }
}

impl From<bool> for TomlValue {
    fn from(b: bool) -> Self {
        TomlValue::Bool(b)
    }
}

macro_rules! int_value {
    ($($t:ty),*) => {$(
        impl From<$t> for TomlValue {
            fn from(n: $t) -> Self {
                TomlValue::Int(n as i128)
            }
        }
    )*};
}
int_value!(u16, u32, u64, usize, i32, i64);

/// A TOML basic string.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A TOML array of strings (`["a", "b"]`).
pub fn string_array(items: &[&str]) -> TomlValue {
    TomlValue::Raw(format!("[{}]", items.iter().map(|s| quote(s)).collect::<Vec<_>>().join(", ")))
}

/// Keys of one table, in the order set; setting a key again replaces its value in place.
#[derive(Debug, Clone, Default)]
struct Keys {
    keys: Vec<(String, TomlValue)>,
    /// Lines added verbatim after the keys (a test's own lines for this table).
    lines: Vec<String>,
}

impl Keys {
    fn set(&mut self, key: &str, value: TomlValue) {
        match self.keys.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value,
            None => self.keys.push((key.to_owned(), value)),
        }
    }

    fn remove(&mut self, key: &str) {
        self.keys.retain(|(k, _)| k != key);
    }

    fn write(&self, out: &mut String) {
        for (k, v) in &self.keys {
            let _ = writeln!(out, "{k} = {}", v.render());
        }
        for line in &self.lines {
            out.push_str(line);
            if !line.ends_with('\n') {
                out.push('\n');
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.lines.iter().all(|l| l.trim().is_empty())
    }
}

/// The tables written first, in this order.
const TABLE_ORDER: [&str; 6] = ["server", "admin", "database", "vault", "control", "settlement"];

/// One `[[networks]]` entry.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    keys: Keys,
}

impl NetworkConfig {
    /// Chain `chain_id` at `rpc_url` with the token at `asset`, EIP-712 domain "USD Coin" / "2"
    /// (the test token's).
    pub fn new(chain_id: u64, rpc_url: &str, asset: Address) -> NetworkConfig {
        let mut keys = Keys::default();
        keys.set("id", format!("eip155:{chain_id}").into());
        keys.set("rpc_url", rpc_url.into());
        keys.set("asset", format!("{asset:#x}").into());
        keys.set("eip712_name", "USD Coin".into());
        keys.set("eip712_version", "2".into());
        NetworkConfig { keys }
    }

    /// Base (chain 8453) with USDC at Base's address: what `Deployment::BaseUsdc` puts on anvil.
    pub fn base(rpc_url: &str) -> NetworkConfig {
        let mut n = NetworkConfig::new(8453, rpc_url, BASE_USDC);
        // Base's USDC address as checksummed in the documentation and the tests.
        n.keys.set("asset", "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913".into());
        n
    }

    /// Sets any other key of the entry.
    pub fn set(mut self, key: &str, value: impl Into<TomlValue>) -> NetworkConfig {
        self.keys.set(key, value.into());
        self
    }
}

/// One `[[providers.routes]]` entry.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    keys: Keys,
}

impl RouteConfig {
    /// `path` priced at `price_atomic` (written as a string, as the configuration documents).
    pub fn new(path: &str, price_atomic: u64) -> RouteConfig {
        let mut keys = Keys::default();
        keys.set("path", path.into());
        keys.set("price_atomic", price_atomic.to_string().into());
        RouteConfig { keys }
    }

    /// `path` priced at `price` in whole tokens (`"0.01"`: the `price` key, in the asset's
    /// decimals).
    pub fn priced(path: &str, price: &str) -> RouteConfig {
        let mut keys = Keys::default();
        keys.set("path", path.into());
        keys.set("price", price.into());
        RouteConfig { keys }
    }

    /// `methods = [...]`.
    pub fn methods(self, methods: &[&str]) -> RouteConfig {
        self.set("methods", string_array(methods))
    }

    /// `description`.
    pub fn description(self, text: &str) -> RouteConfig {
        self.set("description", text)
    }

    /// `settlement` (`"after"`, `"deferred"` or `"before"`).
    pub fn settlement(self, mode: &str) -> RouteConfig {
        self.set("settlement", mode)
    }

    /// Sets any other key of the route.
    pub fn set(mut self, key: &str, value: impl Into<TomlValue>) -> RouteConfig {
        self.keys.set(key, value.into());
        self
    }
}

/// One `[[providers]]` entry and its routes.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    keys: Keys,
    routes: Vec<RouteConfig>,
}

impl ProviderConfig {
    /// Provider `id` paid to `pay_to`, forwarding to `upstream`.
    pub fn new(id: &str, pay_to: Address, upstream: &str) -> ProviderConfig {
        let mut keys = Keys::default();
        keys.set("id", id.into());
        keys.set("pay_to", format!("{pay_to:#x}").into());
        keys.set("upstream", upstream.into());
        ProviderConfig { keys, routes: Vec::new() }
    }

    /// `strip_prefix`.
    pub fn strip_prefix(self, prefix: &str) -> ProviderConfig {
        self.set("strip_prefix", prefix)
    }

    /// `upstream_timeout_ms`.
    pub fn upstream_timeout_ms(self, ms: u64) -> ProviderConfig {
        self.set("upstream_timeout_ms", ms)
    }

    /// The credential as a bearer header from the environment variable `env`.
    pub fn credential_header(self, env: &str) -> ProviderConfig {
        self.credential(&format!("{{ inject = \"header\", secret_env = {} }}", quote(env)))
    }

    /// The credential as query parameter `param` from the environment variable `env`.
    pub fn credential_query(self, param: &str, env: &str) -> ProviderConfig {
        self.credential(&format!("{{ inject = \"query\", param = {}, secret_env = {} }}", quote(param), quote(env)))
    }

    /// The credential as HTTP Basic with `username`, the password from the variable `env`.
    pub fn credential_basic(self, username: &str, env: &str) -> ProviderConfig {
        self.credential(&format!(
            "{{ inject = \"basic\", username = {}, secret_env = {} }}",
            quote(username),
            quote(env)
        ))
    }

    /// The credential as a bearer header from the vault entry `name`.
    pub fn credential_vault(self, name: &str) -> ProviderConfig {
        self.credential(&format!("{{ inject = \"header\", vault = {} }}", quote(name)))
    }

    /// `credential = <inline table>`, verbatim.
    pub fn credential(self, inline_table: &str) -> ProviderConfig {
        self.set("credential", TomlValue::Raw(inline_table.to_owned()))
    }

    /// Adds a route.
    pub fn route(mut self, route: RouteConfig) -> ProviderConfig {
        self.routes.push(route);
        self
    }

    /// Sets any other key of the provider.
    pub fn set(mut self, key: &str, value: impl Into<TomlValue>) -> ProviderConfig {
        self.keys.set(key, value.into());
        self
    }
}

/// The gateway's configuration file, built table by table.
#[derive(Debug, Clone)]
pub struct ConfigBuilder {
    tables: Vec<(String, Keys)>,
    networks: Vec<NetworkConfig>,
    providers: Vec<ProviderConfig>,
    tail: String,
}

impl Default for ConfigBuilder {
    fn default() -> Self {
        ConfigBuilder::new()
    }
}

impl ConfigBuilder {
    /// `[server] listen = "127.0.0.1:0"` and nothing else.
    pub fn new() -> ConfigBuilder {
        let mut b =
            ConfigBuilder { tables: Vec::new(), networks: Vec::new(), providers: Vec::new(), tail: String::new() };
        b = b.set("server", "listen", "127.0.0.1:0");
        b
    }

    /// Sets `key` of table `table` (`"server"`, `"settlement"`, `"reconciliation"`, ...).
    pub fn set(mut self, table: &str, key: &str, value: impl Into<TomlValue>) -> ConfigBuilder {
        self.table(table).set(key, value.into());
        self
    }

    /// Removes `key` from table `table` (a test that wants the key absent).
    pub fn unset(mut self, table: &str, key: &str) -> ConfigBuilder {
        self.table(table).remove(key);
        self
    }

    /// Adds lines verbatim inside table `table`, after its keys (a suite's pass-through knobs).
    pub fn lines(mut self, table: &str, text: &str) -> ConfigBuilder {
        self.table(table).lines.push(text.to_owned());
        self
    }

    /// Appends text verbatim after everything else (whole extra tables).
    pub fn raw(mut self, text: &str) -> ConfigBuilder {
        self.tail.push_str(text);
        if !self.tail.ends_with('\n') {
            self.tail.push('\n');
        }
        self
    }

    /// `[server] public_url`.
    pub fn public_url(self, url: &str) -> ConfigBuilder {
        self.set("server", "public_url", url)
    }

    /// `[database] url`.
    pub fn database(self, url: &str) -> ConfigBuilder {
        self.set("database", "url", url)
    }

    /// `[database] url` for a SQLite file `ledger.db` in `dir` (created on first use).
    pub fn sqlite_in(self, dir: &Path) -> ConfigBuilder {
        let url = sqlite_url(dir);
        self.database(&url)
    }

    /// `[admin] listen = "127.0.0.1:0"`: the admin API on a free port.
    pub fn admin_listen(self) -> ConfigBuilder {
        self.set("admin", "listen", "127.0.0.1:0")
    }

    /// `[admin] upstream_allow = ["127.0.0.1"]`: test upstreams are on loopback, which the
    /// SSRF guard refuses unless allowed.
    pub fn allow_loopback_upstreams(self) -> ConfigBuilder {
        self.set("admin", "upstream_allow", string_array(&["127.0.0.1"]))
    }

    /// `[vault] master_key_env`.
    pub fn vault_env(self, env: &str) -> ConfigBuilder {
        self.set("vault", "master_key_env", env)
    }

    /// `[settlement] relayer_key_env`.
    pub fn relayer_env(self, env: &str) -> ConfigBuilder {
        self.set("settlement", "relayer_key_env", env)
    }

    /// Adds a `[[networks]]` entry.
    pub fn network(mut self, network: NetworkConfig) -> ConfigBuilder {
        self.networks.push(network);
        self
    }

    /// Adds a `[[providers]]` entry with its routes.
    pub fn provider(mut self, provider: ProviderConfig) -> ConfigBuilder {
        self.providers.push(provider);
        self
    }

    /// The configuration text.
    pub fn build(&self) -> String {
        let mut out = String::new();
        let mut order: Vec<&(String, Keys)> = Vec::new();
        for name in TABLE_ORDER {
            order.extend(self.tables.iter().filter(|(t, _)| t == name));
        }
        order.extend(self.tables.iter().filter(|(t, _)| !TABLE_ORDER.contains(&t.as_str())));
        for (name, keys) in order {
            if keys.is_empty() {
                continue;
            }
            let _ = writeln!(out, "[{name}]");
            keys.write(&mut out);
            out.push('\n');
        }
        for n in &self.networks {
            out.push_str("[[networks]]\n");
            n.keys.write(&mut out);
            out.push('\n');
        }
        for p in &self.providers {
            out.push_str("[[providers]]\n");
            p.keys.write(&mut out);
            out.push('\n');
            for r in &p.routes {
                out.push_str("[[providers.routes]]\n");
                r.keys.write(&mut out);
                out.push('\n');
            }
        }
        out.push_str(&self.tail);
        out
    }

    /// Writes the configuration to `path`.
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        std::fs::write(path, self.build())?;
        Ok(())
    }

    fn table(&mut self, name: &str) -> &mut Keys {
        let i = match self.tables.iter().position(|(t, _)| t == name) {
            Some(i) => i,
            None => {
                self.tables.push((name.to_owned(), Keys::default()));
                self.tables.len() - 1
            }
        };
        &mut self.tables[i].1
    }
}

/// `sqlite://<dir>/ledger.db?mode=rwc`.
pub fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}?mode=rwc", dir.join("ledger.db").display())
}
