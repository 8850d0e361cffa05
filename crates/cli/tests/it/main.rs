//! Tests of the `tollgate` binary as a process.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

mod admin;
mod agent;
mod agent_crash;
mod architecture;
mod crash;
mod deploy;
mod faults;
#[path = "../../../client/tests/it/harness.rs"]
mod harness;
mod interop;
mod propagation;
mod reconcile_cli;
mod startup;
mod tls;

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Starts `tollgate serve --config <config>` with `env`, and returns it with its base URL
/// (read from its `listening on` line). Its other stderr lines go to `log`, for failure
/// messages.
pub async fn spawn_serve(config: &Path, env: &[(&str, String)], log: Arc<Mutex<Vec<String>>>) -> (Child, String) {
    let served = spawn_serve_with_admin(config, env, log).await;
    (served.child, served.url)
}

/// A running `tollgate serve`.
pub struct Served {
    pub child: Child,
    /// The paid listener's base URL.
    pub url: String,
    /// The admin listener's base URL (its `admin API on` line), when enabled.
    pub admin_url: Option<String>,
}

/// [`spawn_serve`], also reading the admin API's address (printed before `listening on`).
pub async fn spawn_serve_with_admin(config: &Path, env: &[(&str, String)], log: Arc<Mutex<Vec<String>>>) -> Served {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    command.args(["serve", "--config"]).arg(config);
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child =
        command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).kill_on_drop(true).spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut admin_url = None;
    let url = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(url) = line.split("listening on ").nth(1) {
                return url.trim().to_owned();
            }
            if let Some(url) = line.split("admin API on ").nth(1) {
                admin_url = Some(url.trim().to_owned());
            }
            log.lock().unwrap().push(line);
        }
        panic!("gateway exited before listening:\n{}", log.lock().unwrap().join("\n"));
    })
    .await
    .expect("gateway started");
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            log.lock().unwrap().push(line);
        }
    });
    Served { child, url, admin_url }
}
