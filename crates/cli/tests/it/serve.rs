//! `tollgate serve` as a process for the suite, on the test kit's [`TestGateway::binary_logged`]:
//! started from a config file, ready on its `listening on` line, its stderr lines pushed into
//! a log the test reads.

use std::path::Path;

use tollgate_test_support::{LogSink, TestGateway};

/// Starts `tollgate serve --config <config>` with `env`, and returns it with its base URL
/// (read from its `listening on` line). Its stderr lines go to `log`, for failure messages.
pub async fn spawn_serve(config: &Path, env: &[(&str, String)], log: LogSink) -> (TestGateway, String) {
    let served = spawn_serve_with_admin(config, env, log).await;
    (served.gateway, served.url)
}

/// A running `tollgate serve`.
pub struct Served {
    pub gateway: TestGateway,
    /// The paid listener's base URL.
    pub url: String,
    /// The admin listener's base URL (its `admin API on` line), when enabled.
    pub admin_url: Option<String>,
}

/// [`spawn_serve`], also reading the admin API's address (printed before `listening on`).
pub async fn spawn_serve_with_admin(config: &Path, env: &[(&str, String)], log: LogSink) -> Served {
    let gateway = TestGateway::binary_logged(env!("CARGO_BIN_EXE_tollgate"), config, env, log)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let (url, admin_url) = (gateway.url().to_owned(), gateway.admin_url().map(str::to_owned));
    Served { gateway, url, admin_url }
}
