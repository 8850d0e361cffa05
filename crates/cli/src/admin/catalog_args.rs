//! The `tollgate admin provider` and `endpoint` command lines: their subcommands, flags, help
//! text and examples (split from `args` to keep files short).
//!
//! Must not: send anything (`client` does).

pub(crate) const PROVIDER_HELP: &str = "\
Examples:
  tollgate admin provider list
  tollgate admin provider put weather --pay-to 0x209693Bc6afc0C5328bA36FaF03C514EF312287C \\
      --upstream https://api.weather.example --vault weather-key
  tollgate admin provider delete weather";

#[derive(Debug, clap::Subcommand)]
pub(crate) enum ProviderCommand {
    /// List providers (a provider token sees its own).
    #[command(after_help = "Example:\n  tollgate admin provider list")]
    List,
    /// Create or replace a provider (the whole spec; its endpoints are kept).
    ///
    /// The upstream credential comes from the vault: `--vault NAME` with the injection flags,
    /// or `--credential-json` (the `credential` object of docs/configuration.md with `vault`).
    #[command(after_help = "Examples:\n  tollgate admin provider put weather \
                            --pay-to 0x209693Bc6afc0C5328bA36FaF03C514EF312287C \\\n      \
                            --upstream https://api.weather.example --strip-prefix /weather --vault weather-key\n  \
                            tollgate admin provider put maps --pay-to 0x209693Bc6afc0C5328bA36FaF03C514EF312287C \\\n      \
                            --upstream http://10.0.0.7:9000 --credential-json '{\"inject\":\"query\",\"param\":\"key\",\"vault\":\"maps\"}'")]
    Put(Box<ProviderPut>),
    /// Delete a provider and its endpoints (softly: history, price versions and ledger
    /// references are kept; its routes answer 404; a restart does not bring it back).
    #[command(after_help = "Example:\n  tollgate admin provider delete weather")]
    Delete {
        /// The provider id.
        id: String,
    },
}

#[derive(Debug, clap::Args)]
pub(crate) struct ProviderPut {
    /// The provider id (letters, digits, '-' and '_').
    pub(crate) id: String,
    /// The payee address.
    #[arg(long, value_name = "ADDRESS")]
    pub(crate) pay_to: String,
    /// The upstream base URL.
    #[arg(long, value_name = "URL")]
    pub(crate) upstream: String,
    /// Prefix removed from the gateway path before forwarding.
    #[arg(long, value_name = "PATH")]
    pub(crate) strip_prefix: Option<String>,
    /// Default upstream timeout of its endpoints.
    #[arg(long, value_name = "MS")]
    pub(crate) upstream_timeout_ms: Option<u64>,
    /// The credential as JSON (`vault` names the secret).
    #[arg(long, value_name = "JSON", conflicts_with_all = ["vault", "inject", "header", "template", "param", "username"])]
    pub(crate) credential_json: Option<String>,
    /// Inject the latest unrevoked version of this vault credential.
    #[arg(long, value_name = "NAME")]
    pub(crate) vault: Option<String>,
    /// How the credential is injected: header, query or basic [default: header].
    #[arg(long, value_parser = ["header", "query", "basic"], requires = "vault")]
    pub(crate) inject: Option<String>,
    /// Header name (inject header) [default: Authorization].
    #[arg(long, requires = "vault")]
    pub(crate) header: Option<String>,
    /// Header value template with {secret} (inject header) [default: "Bearer {secret}"].
    #[arg(long, requires = "vault")]
    pub(crate) template: Option<String>,
    /// Query parameter (inject query).
    #[arg(long, requires = "vault")]
    pub(crate) param: Option<String>,
    /// Basic-auth user (inject basic).
    #[arg(long, requires = "vault")]
    pub(crate) username: Option<String>,
}

pub(crate) const ENDPOINT_HELP: &str = "\
Examples:
  tollgate admin endpoint list weather
  tollgate admin endpoint put weather --path '/weather/{city}' --price 0.001
  tollgate admin endpoint set-price 'weather:/weather/{city}' 0.002
  tollgate admin endpoint set 'weather:/weather/{city}' --description 'Current weather'
  tollgate admin endpoint prices weather --path '/weather/{city}'
  tollgate admin endpoint disable weather --path '/weather/{city}'
  tollgate admin endpoint delete 'weather:/weather/{city}'";

#[derive(Debug, clap::Subcommand)]
pub(crate) enum EndpointCommand {
    /// List a provider's endpoints with their current prices.
    #[command(after_help = "Example:\n  tollgate admin endpoint list weather")]
    List {
        /// The provider id.
        provider: String,
    },
    /// Create or replace an endpoint; a changed price creates a new price version.
    #[command(after_help = "Examples:\n  tollgate admin endpoint put weather --path '/weather/{city}' --price 0.001 \
                            --description 'Current weather'\n  \
                            tollgate admin endpoint put weather --path /forecast --price-atomic 2500 --methods GET,POST \
                            --settlement deferred\n  \
                            tollgate admin endpoint put weather --spec-json '{\"path\":\"/alerts\",\"price\":\"0.01\"}'")]
    Put(Box<EndpointPut>),
    /// Stop serving an endpoint (its prices and history are kept).
    #[command(after_help = "Example:\n  tollgate admin endpoint disable weather --path '/weather/{city}'")]
    Disable(EndpointRef),
    /// Serve a disabled endpoint again.
    #[command(after_help = "Example:\n  tollgate admin endpoint enable weather --path '/weather/{city}'")]
    Enable(EndpointRef),
    /// An endpoint's price versions (ledger entries record the version they were charged at).
    #[command(after_help = "Example:\n  tollgate admin endpoint prices weather --path '/weather/{city}'")]
    Prices(EndpointRef),
    /// Change an endpoint's price, keeping everything else (a new price version).
    #[command(after_help = "Examples:\n  tollgate admin endpoint set-price 'weather:/weather/{city}' 0.002\n  \
                            tollgate admin endpoint set-price 'weather:/weather/{city}' 2000 --atomic")]
    SetPrice {
        /// The endpoint: `PROVIDER:PATH` (as `endpoint list` names it).
        route: String,
        /// The price in token units (`0.002`), or atomic units with --atomic; 0 makes it free.
        price: String,
        /// The price is in atomic units.
        #[arg(long)]
        atomic: bool,
    },
    /// Change some fields of an endpoint; the fields not given are kept.
    #[command(
        after_help = "Examples:\n  tollgate admin endpoint set 'weather:/weather/{city}' --description 'Current weather'\n  \
                            tollgate admin endpoint set 'weather:/weather/{city}' --networks eip155:8453 --disable"
    )]
    Set(Box<EndpointSet>),
    /// Delete an endpoint (softly: price versions and ledger references are kept; it answers
    /// 404; a restart does not bring it back).
    #[command(after_help = "Example:\n  tollgate admin endpoint delete 'weather:/weather/{city}'")]
    Delete {
        /// The endpoint: `PROVIDER:PATH`.
        route: String,
    },
}

#[derive(Debug, clap::Args)]
pub(crate) struct EndpointSet {
    /// The endpoint: `PROVIDER:PATH` (as `endpoint list` names it).
    pub(crate) route: String,
    /// Human price in token units (`0.002`).
    #[arg(long, conflicts_with_all = ["price_atomic", "free"])]
    pub(crate) price: Option<String>,
    /// Price in atomic units.
    #[arg(long, value_name = "N", conflicts_with = "free")]
    pub(crate) price_atomic: Option<String>,
    /// Make it free (forwarded and audited, never paid).
    #[arg(long)]
    pub(crate) free: bool,
    /// Allowed methods, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub(crate) methods: Option<Vec<String>>,
    /// Accepted networks (CAIP-2), comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub(crate) networks: Option<Vec<String>>,
    /// after, before or deferred.
    #[arg(long, value_parser = ["after", "before", "deferred"])]
    pub(crate) settlement: Option<String>,
    /// Shown in the 402 challenge.
    #[arg(long)]
    pub(crate) description: Option<String>,
    /// Response media type.
    #[arg(long)]
    pub(crate) mime_type: Option<String>,
    /// `maxTimeoutSeconds` offered.
    #[arg(long, value_name = "S")]
    pub(crate) max_timeout_seconds: Option<u64>,
    /// Upstream timeout.
    #[arg(long, value_name = "MS")]
    pub(crate) upstream_timeout_ms: Option<u64>,
    /// Request body cap.
    #[arg(long, value_name = "BYTES")]
    pub(crate) body_bytes_max: Option<u64>,
    /// Serve it.
    #[arg(long, conflicts_with = "disable")]
    pub(crate) enable: bool,
    /// Stop serving it.
    #[arg(long)]
    pub(crate) disable: bool,
}

#[derive(Debug, clap::Args)]
pub(crate) struct EndpointRef {
    /// The provider id.
    pub(crate) provider: String,
    /// The endpoint's path pattern, as written when it was put.
    #[arg(long)]
    pub(crate) path: String,
}

#[derive(Debug, clap::Args)]
pub(crate) struct EndpointPut {
    /// The provider id.
    pub(crate) provider: String,
    /// The path pattern (`/exact`, `/{param}` segments, trailing `/*`).
    #[arg(long, required_unless_present = "spec_json")]
    pub(crate) path: Option<String>,
    /// Human price in token units (`0.001`).
    #[arg(long, conflicts_with = "price_atomic")]
    pub(crate) price: Option<String>,
    /// Price in atomic units (`1000`).
    #[arg(long, value_name = "N")]
    pub(crate) price_atomic: Option<String>,
    /// Allowed methods, comma-separated [default: GET].
    #[arg(long, value_delimiter = ',')]
    pub(crate) methods: Option<Vec<String>>,
    /// Accepted networks (CAIP-2), comma-separated [default: every configured network].
    #[arg(long, value_delimiter = ',')]
    pub(crate) networks: Option<Vec<String>>,
    /// after, before or deferred [default: after].
    #[arg(long, value_parser = ["after", "before", "deferred"])]
    pub(crate) settlement: Option<String>,
    /// Shown in the 402 challenge.
    #[arg(long)]
    pub(crate) description: Option<String>,
    /// Response media type [default: application/json].
    #[arg(long)]
    pub(crate) mime_type: Option<String>,
    /// `maxTimeoutSeconds` offered [default: 60].
    #[arg(long, value_name = "S")]
    pub(crate) max_timeout_seconds: Option<u64>,
    /// Upstream timeout [default: the provider's].
    #[arg(long, value_name = "MS")]
    pub(crate) upstream_timeout_ms: Option<u64>,
    /// Request body cap [default: server.body_bytes_max].
    #[arg(long, value_name = "BYTES")]
    pub(crate) body_bytes_max: Option<u64>,
    /// The whole endpoint as JSON (the keys of [[providers.routes]]), instead of the flags.
    #[arg(long, value_name = "JSON", conflicts_with_all = [
        "path", "price", "price_atomic", "methods", "networks", "settlement", "description",
        "mime_type", "max_timeout_seconds", "upstream_timeout_ms", "body_bytes_max",
    ])]
    pub(crate) spec_json: Option<String>,
}
