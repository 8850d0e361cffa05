//! The route table: every admin route once, with who may call it and how it is documented.
//! The gateway mounts its handlers from it; the OpenAPI document is generated from it.

use utoipa::openapi::path::{Parameter, ParameterIn};
use utoipa::{IntoParams, ToSchema};

use crate::types::*;

/// An admin token's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Everything.
    Operator,
    /// Its own provider's records only.
    Provider,
    /// Read-only ledger, audit, revenue and reconciliation.
    Finance,
}

impl Role {
    /// The spelling in tokens, bodies and the document.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Provider => "provider",
            Role::Finance => "finance",
        }
    }
}

/// The HTTP methods the admin API uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Method {
    Get,
    Put,
    Post,
}

impl Method {
    /// Upper case, as on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Put => "PUT",
            Method::Post => "POST",
        }
    }
}

/// Every admin operation; the gateway maps each to its handler with an exhaustive match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Operation {
    Openapi,
    Metrics,
    Whoami,
    ListTokens,
    CreateToken,
    RevokeToken,
    ListProviders,
    PutProvider,
    ListEndpoints,
    PutEndpoint,
    DisableEndpoint,
    EnableEndpoint,
    EndpointPrices,
    ListCredentials,
    UploadCredential,
    RevokeCredential,
    Revenue,
    ListWallets,
    PutWallet,
    RevokeWallet,
    ReinstateWallet,
    GetSettings,
    PutSettings,
    AuditQuery,
    AuditExport,
    AuditVerify,
    LedgerEntries,
    Reconcile,
    ReconRuns,
    ReconExceptions,
    ReconNotes,
    AddReconNote,
}

/// What a route answers with on success.
#[derive(Debug, Clone, Copy)]
pub enum Answer {
    /// A JSON body of this schema.
    Json(fn() -> String),
    /// The OpenAPI document.
    Document,
    /// The audit chain's verification (the ledger's record).
    Verification,
    /// A reconciliation report (JSON), its items as CSV with `?format=csv`, or its totals as CSV
    /// with `?format=totals_csv`.
    ReportOrCsv,
    /// Text of this content type.
    Text(&'static str),
}

/// One admin route.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// Method.
    pub method: Method,
    /// Path template (`{name}` segments).
    pub path: &'static str,
    /// The operation behind it.
    pub operation: Operation,
    /// The roles that may call it; a provider token only on its own provider's records.
    pub roles: &'static [Role],
    /// One line.
    pub summary: &'static str,
    /// More, when there is more to say.
    pub notes: &'static str,
    /// How the CLI calls it.
    pub cli: &'static str,
    /// The request body's schema, if it takes one.
    pub body: Option<fn() -> String>,
    /// Its query parameters, if it takes any.
    pub query: Option<fn() -> Vec<Parameter>>,
    /// The success answer.
    pub answer: Answer,
    /// The error statuses it documents (each answered in the error envelope).
    pub errors: &'static [u16],
}

fn name<T: ToSchema>() -> String {
    T::name().into_owned()
}

fn params<T: IntoParams>() -> Vec<Parameter> {
    T::into_params(|| Some(ParameterIn::Query))
}

/// The route of an operation.
pub fn route(operation: Operation) -> Option<&'static Route> {
    ROUTES.iter().find(|r| r.operation == operation)
}

/// Every admin route.
pub static ROUTES: &[Route] = &[
    Route {
        method: Method::Get,
        path: "/admin/openapi.json",
        operation: Operation::Openapi,
        roles: &[Role::Operator, Role::Provider, Role::Finance],
        summary: "This document",
        notes: "",
        cli: "`tollgate admin openapi`",
        body: None,
        query: None,
        answer: Answer::Document,
        errors: &[401, 503],
    },
    Route {
        method: Method::Get,
        path: "/metrics",
        operation: Operation::Metrics,
        roles: &[Role::Operator, Role::Finance],
        summary: "Prometheus metrics (text exposition format)",
        notes: "Paid calls by route pattern, mode and outcome; phase latency histograms; deferred backlog and settlement lag; ledger entries by state; relayer balance, nonce and pending per network; RPC calls and errors by method; audit queue depth; control-plane version; the gateway's counters (docs/operations.md).",
        cli: "none (scraped by Prometheus with a bearer token file)",
        body: None,
        query: None,
        answer: Answer::Text("application/openmetrics-text"),
        errors: &[401, 403],
    },
    Route {
        method: Method::Get,
        path: "/admin/whoami",
        operation: Operation::Whoami,
        roles: &[Role::Operator, Role::Provider, Role::Finance],
        summary: "The caller's token id, role and provider",
        notes: "",
        cli: "`tollgate admin whoami`",
        body: None,
        query: None,
        answer: Answer::Json(name::<Whoami>),
        errors: &[401, 503],
    },
    Route {
        method: Method::Get,
        path: "/admin/tokens",
        operation: Operation::ListTokens,
        roles: &[Role::Operator],
        summary: "List token records (never the tokens)",
        notes: "",
        cli: "`tollgate admin token list`",
        body: None,
        query: None,
        answer: Answer::Json(name::<TokenList>),
        errors: &[401, 403, 503],
    },
    Route {
        method: Method::Post,
        path: "/admin/tokens",
        operation: Operation::CreateToken,
        roles: &[Role::Operator],
        summary: "Create a token (shown once; only its SHA-256 is stored)",
        notes: "",
        cli: "`tollgate admin token create --role provider --provider weather --label ci`",
        body: Some(name::<NewToken>),
        query: None,
        answer: Answer::Json(name::<CreatedToken>),
        errors: &[400, 401, 403, 404, 503],
    },
    Route {
        method: Method::Post,
        path: "/admin/tokens/{id}/revoke",
        operation: Operation::RevokeToken,
        roles: &[Role::Operator],
        summary: "Revoke a token (immediate; idempotent)",
        notes: "",
        cli: "`tollgate admin token revoke ID`",
        body: None,
        query: None,
        answer: Answer::Json(name::<TokenRevoked>),
        errors: &[401, 403, 404, 503],
    },
    Route {
        method: Method::Get,
        path: "/admin/providers",
        operation: Operation::ListProviders,
        roles: &[Role::Operator, Role::Provider],
        summary: "List providers (a provider token sees its own)",
        notes: "",
        cli: "`tollgate admin provider list`",
        body: None,
        query: None,
        answer: Answer::Json(name::<ProviderList>),
        errors: &[401, 403, 503],
    },
    Route {
        method: Method::Put,
        path: "/admin/providers/{id}",
        operation: Operation::PutProvider,
        roles: &[Role::Operator],
        summary: "Create or replace a provider",
        notes: "",
        cli: "`tollgate admin provider put weather --pay-to 0x... --upstream https://api.example --vault weather-key`",
        body: Some(name::<ProviderBody>),
        query: None,
        answer: Answer::Json(name::<ProviderPut>),
        errors: &[400, 401, 403, 409, 503],
    },
    Route {
        method: Method::Get,
        path: "/admin/providers/{id}/endpoints",
        operation: Operation::ListEndpoints,
        roles: &[Role::Operator, Role::Provider],
        summary: "List a provider's endpoints with current prices",
        notes: "",
        cli: "`tollgate admin endpoint list weather`",
        body: None,
        query: None,
        answer: Answer::Json(name::<EndpointList>),
        errors: &[401, 403, 503],
    },
    Route {
        method: Method::Put,
        path: "/admin/providers/{id}/endpoints",
        operation: Operation::PutEndpoint,
        roles: &[Role::Operator, Role::Provider],
        summary: "Create or replace an endpoint; a changed price creates a new price version",
        notes: "",
        cli: "`tollgate admin endpoint put weather --path '/weather/{city}' --price 0.001`",
        body: Some(name::<EndpointBody>),
        query: None,
        answer: Answer::Json(name::<EndpointWrite>),
        errors: &[400, 401, 403, 404, 409, 503],
    },
    Route {
        method: Method::Post,
        path: "/admin/providers/{id}/endpoints/disable",
        operation: Operation::DisableEndpoint,
        roles: &[Role::Operator, Role::Provider],
        summary: "Stop serving an endpoint",
        notes: "",
        cli: "`tollgate admin endpoint disable weather --path '/weather/{city}'`",
        body: Some(name::<EndpointPath>),
        query: None,
        answer: Answer::Json(name::<EndpointEnabled>),
        errors: &[400, 401, 403, 404, 503],
    },
    Route {
        method: Method::Post,
        path: "/admin/providers/{id}/endpoints/enable",
        operation: Operation::EnableEndpoint,
        roles: &[Role::Operator, Role::Provider],
        summary: "Serve a disabled endpoint again",
        notes: "",
        cli: "`tollgate admin endpoint enable weather --path '/weather/{city}'`",
        body: Some(name::<EndpointPath>),
        query: None,
        answer: Answer::Json(name::<EndpointEnabled>),
        errors: &[400, 401, 403, 404, 503],
    },
    Route {
        method: Method::Get,
        path: "/admin/providers/{id}/endpoints/prices",
        operation: Operation::EndpointPrices,
        roles: &[Role::Operator, Role::Finance, Role::Provider],
        summary: "An endpoint's price versions",
        notes: "",
        cli: "`tollgate admin endpoint prices weather --path '/weather/{city}'`",
        body: None,
        query: Some(params::<EndpointPath>),
        answer: Answer::Json(name::<PriceHistory>),
        errors: &[400, 401, 403, 404, 503],
    },
    Route {
        method: Method::Get,
        path: "/admin/providers/{id}/credentials",
        operation: Operation::ListCredentials,
        roles: &[Role::Operator, Role::Provider],
        summary: "List credential versions (metadata only)",
        notes: "",
        cli: "`tollgate admin credential list weather`",
        body: None,
        query: None,
        answer: Answer::Json(name::<CredentialList>),
        errors: &[401, 403, 503],
    },
    Route {
        method: Method::Post,
        path: "/admin/providers/{id}/credentials/{name}",
        operation: Operation::UploadCredential,
        roles: &[Role::Operator, Role::Provider],
        summary: "Upload a new version of a vault credential (write-only; serves from the next request)",
        notes: "",
        cli: "`printf %s \"$KEY\" | tollgate admin credential rotate weather weather-key`",
        body: Some(name::<SecretBody>),
        query: None,
        answer: Answer::Json(name::<CredentialUploaded>),
        errors: &[400, 401, 403, 404, 409, 503],
    },
    Route {
        method: Method::Post,
        path: "/admin/providers/{id}/credentials/{name}/{version}/revoke",
        operation: Operation::RevokeCredential,
        roles: &[Role::Operator, Role::Provider],
        summary: "Revoke a credential version",
        notes: "",
        cli: "`tollgate admin credential revoke weather weather-key 1`",
        body: None,
        query: None,
        answer: Answer::Json(name::<CredentialRevoked>),
        errors: &[400, 401, 403, 404, 503],
    },
    Route {
        method: Method::Get,
        path: "/admin/providers/{id}/revenue",
        operation: Operation::Revenue,
        roles: &[Role::Operator, Role::Finance, Role::Provider],
        summary: "Revenue by endpoint and ledger state, for entries reserved in [from, to)",
        notes: "",
        cli: "`tollgate admin revenue weather --from-unix-s 1767225600 --to-unix-s 1769904000`",
        body: None,
        query: Some(params::<RangeQuery>),
        answer: Answer::Json(name::<Revenue>),
        errors: &[400, 401, 403, 503],
    },
    Route {
        method: Method::Get,
        path: "/admin/wallets",
        operation: Operation::ListWallets,
        roles: &[Role::Operator, Role::Provider],
        summary: "List wallet policies",
        notes: "Operators see every scope unless one is given; a provider token sees its own scope.",
        cli: "`tollgate admin wallet list --scope '*'`",
        body: None,
        query: Some(params::<WalletsQuery>),
        answer: Answer::Json(name::<WalletPolicyList>),
        errors: &[400, 401, 403, 503],
    },
    Route {
        method: Method::Put,
        path: "/admin/wallets/{wallet}",
        operation: Operation::PutWallet,
        roles: &[Role::Operator, Role::Provider],
        summary: "Set (replace) a wallet's policy in a scope",
        notes: "",
        cli: "`tollgate admin wallet set 0x... --registered --daily-cap 5000000`",
        body: Some(name::<WalletPolicyBody>),
        query: Some(params::<ScopeQuery>),
        answer: Answer::Json(name::<WalletPolicySet>),
        errors: &[400, 401, 403, 503],
    },
    Route {
        method: Method::Post,
        path: "/admin/wallets/{wallet}/revoke",
        operation: Operation::RevokeWallet,
        roles: &[Role::Operator, Role::Provider],
        summary: "Revoke a wallet in a scope (other policy fields kept)",
        notes: "",
        cli: "`tollgate admin wallet revoke 0x...`",
        body: None,
        query: Some(params::<ScopeQuery>),
        answer: Answer::Json(name::<WalletRevoked>),
        errors: &[400, 401, 403, 503],
    },
    Route {
        method: Method::Post,
        path: "/admin/wallets/{wallet}/reinstate",
        operation: Operation::ReinstateWallet,
        roles: &[Role::Operator, Role::Provider],
        summary: "Lift a wallet's revocation in a scope",
        notes: "",
        cli: "`tollgate admin wallet reinstate 0x...`",
        body: None,
        query: Some(params::<ScopeQuery>),
        answer: Answer::Json(name::<WalletRevoked>),
        errors: &[400, 401, 403, 503],
    },
    Route {
        method: Method::Get,
        path: "/admin/settings",
        operation: Operation::GetSettings,
        roles: &[Role::Operator],
        summary: "Global settings and the change counter",
        notes: "",
        cli: "`tollgate admin settings show`",
        body: None,
        query: None,
        answer: Answer::Json(name::<Settings>),
        errors: &[401, 403, 503],
    },
    Route {
        method: Method::Put,
        path: "/admin/settings",
        operation: Operation::PutSettings,
        roles: &[Role::Operator],
        summary: "Change global settings (allowlist mode)",
        notes: "",
        cli: "`tollgate admin allowlist on`",
        body: Some(name::<SettingsBody>),
        query: None,
        answer: Answer::Json(name::<SettingsSet>),
        errors: &[400, 401, 403, 503],
    },
    Route {
        method: Method::Get,
        path: "/admin/audit",
        operation: Operation::AuditQuery,
        roles: &[Role::Operator, Role::Finance, Role::Provider],
        summary: "One page of audit records by sequence number",
        notes: "A provider token sees only its provider's records (asking for another is 403).",
        cli: "`tollgate admin audit query --provider weather --limit 50`",
        body: None,
        query: Some(params::<AuditParams>),
        answer: Answer::Json(name::<AuditPage>),
        errors: &[400, 401, 403, 503],
    },
    Route {
        method: Method::Get,
        path: "/admin/audit/export",
        operation: Operation::AuditExport,
        roles: &[Role::Operator, Role::Finance, Role::Provider],
        summary: "Every matching audit record as JSON lines (at most 1,000,000)",
        notes: "",
        cli: "`tollgate admin audit export > audit.jsonl`",
        body: None,
        query: Some(params::<AuditParams>),
        answer: Answer::Text("application/x-ndjson"),
        errors: &[400, 401, 403, 503],
    },
    Route {
        method: Method::Get,
        path: "/admin/audit/verify",
        operation: Operation::AuditVerify,
        roles: &[Role::Operator, Role::Finance],
        summary: "Verify the whole audit hash chain",
        notes: "Checks sequence numbers without gaps, each prev_hash linking to the previous hash, each hash recomputed, and the head matching the last record. 200 even when broken: read `intact`.",
        cli: "`tollgate admin audit verify`",
        body: None,
        query: None,
        answer: Answer::Verification,
        errors: &[401, 403, 503],
    },
    Route {
        method: Method::Get,
        path: "/admin/ledger/entries",
        operation: Operation::LedgerEntries,
        roles: &[Role::Operator, Role::Finance, Role::Provider],
        summary: "Ledger entries, oldest first (without the signed payment)",
        notes: "",
        cli: "`tollgate admin ledger entries --provider weather --limit 20`",
        body: None,
        query: Some(params::<EntriesQuery>),
        answer: Answer::Json(name::<LedgerEntries>),
        errors: &[400, 401, 403, 503],
    },
    Route {
        method: Method::Post,
        path: "/admin/reconcile",
        operation: Operation::Reconcile,
        roles: &[Role::Operator, Role::Finance],
        summary: "Run a reconciliation and record it (JSON report; CSV items with ?format=csv; CSV totals with ?format=totals_csv)",
        notes: "",
        cli: "`tollgate admin reconcile run --from-block 100 --to-block 200`",
        body: Some(name::<ReconcileBody>),
        query: Some(params::<FormatQuery>),
        answer: Answer::ReportOrCsv,
        errors: &[400, 401, 403, 503],
    },
    Route {
        method: Method::Get,
        path: "/admin/reconcile/runs",
        operation: Operation::ReconRuns,
        roles: &[Role::Operator, Role::Finance],
        summary: "Recorded reconciliation runs of a network",
        notes: "",
        cli: "`tollgate admin reconcile runs`",
        body: None,
        query: Some(params::<RunsQuery>),
        answer: Answer::Json(name::<ReconRuns>),
        errors: &[400, 401, 403, 503],
    },
    Route {
        method: Method::Get,
        path: "/admin/reconcile/runs/{id}/exceptions",
        operation: Operation::ReconExceptions,
        roles: &[Role::Operator, Role::Finance],
        summary: "A run's exceptions (every item not matched)",
        notes: "",
        cli: "`tollgate admin reconcile exceptions 7`",
        body: None,
        query: None,
        answer: Answer::Json(name::<ReconExceptions>),
        errors: &[400, 401, 403, 503],
    },
    Route {
        method: Method::Get,
        path: "/admin/reconcile/exceptions/{id}/notes",
        operation: Operation::ReconNotes,
        roles: &[Role::Operator, Role::Finance],
        summary: "Resolution notes of an exception, oldest first",
        notes: "",
        cli: "`tollgate admin reconcile notes 12`",
        body: None,
        query: None,
        answer: Answer::Json(name::<ReconNotes>),
        errors: &[400, 401, 403, 503],
    },
    Route {
        method: Method::Post,
        path: "/admin/reconcile/exceptions/{id}/notes",
        operation: Operation::AddReconNote,
        roles: &[Role::Operator, Role::Finance],
        summary: "Append a resolution note (append-only; the author is the calling token)",
        notes: "",
        cli: "`tollgate admin reconcile note 12 --why 'refunded by hand'`",
        body: Some(name::<NoteBody>),
        query: None,
        answer: Answer::Json(name::<NoteAdded>),
        errors: &[400, 401, 403, 404, 503],
    },
];
