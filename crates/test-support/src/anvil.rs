//! A real anvil node, started on a free loopback port and killed on drop.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The repository root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("workspace root")
}

fn anvil_bin() -> anyhow::Result<PathBuf> {
    if let Ok(p) = std::env::var("TOLLGATE_ANVIL_BIN") {
        return Ok(PathBuf::from(p));
    }
    let p = workspace_root().join("node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil");
    if !p.exists() {
        bail!("anvil not found at {}: run `npm ci` at the repository root (the test command does)", p.display());
    }
    Ok(p)
}

/// A running anvil process.
#[derive(Debug)]
pub struct Anvil {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    /// The port it listens on.
    pub port: u16,
    /// Its chain id.
    pub chain_id: u64,
}

impl Anvil {
    /// Starts anvil with `chain_id` on a free port and waits until it listens (by reading
    /// its "Listening on" line, not by sleeping).
    pub async fn spawn(chain_id: u64) -> anyhow::Result<Anvil> {
        Self::spawn_with(chain_id, &[]).await
    }

    /// Like [`Anvil::spawn`] with extra command-line arguments.
    pub async fn spawn_with(chain_id: u64, extra_args: &[&str]) -> anyhow::Result<Anvil> {
        let mut child = Command::new(anvil_bin()?)
            .args(["--host", "127.0.0.1", "--port", "0", "--chain-id", &chain_id.to_string()])
            .args(extra_args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("spawning anvil")?;
        let stdout = child.stdout.take().context("anvil stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let port = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(addr) = line.strip_prefix("Listening on ") {
                    let port = addr.rsplit(':').next().unwrap_or_default().trim().parse::<u16>()?;
                    return Ok::<u16, anyhow::Error>(port);
                }
            }
            bail!("anvil exited before listening")
        })
        .await
        .context("anvil did not start within 20 s")??;
        // Keep draining its output so a full pipe never blocks the node.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Anvil { child, url: format!("http://127.0.0.1:{port}"), port, chain_id })
    }

    /// The node's process id (benches lower its CPU priority), while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Kills the node now (tests of an unreachable chain).
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }
}
