//! [`GatewayProcess`]: the real `tollgate serve` as a child process — started from a config
//! file, ready when it prints its `listening on` line, killed with SIGKILL and restarted on
//! the same config (so the same database), with every run's stdout and stderr kept in files
//! for a later scan for secrets.
//!
//! Owns the process and its log files. Does not know where the binary is: only the cli
//! crate's tests have `env!("CARGO_BIN_EXE_tollgate")`, so they pass the path in. Does not
//! read or write the config: a test may rewrite the file between runs (shorter grace, other
//! RPC URL) and [`GatewayProcess::restart`] picks that up.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

/// How long a start may take before it counts as failed.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A `tollgate serve` process (or one that was killed and may be restarted).
#[derive(Debug)]
pub struct GatewayProcess {
    bin: PathBuf,
    config: PathBuf,
    env: Vec<(String, String)>,
    log_dir: PathBuf,
    child: Option<Child>,
    stderr_tee: Option<JoinHandle<()>>,
    url: String,
    admin_url: Option<String>,
    runs: u32,
}

impl GatewayProcess {
    /// Starts `bin serve --config <config>` with the extra environment `env`, writing each
    /// run's output to `log_dir/run-<n>.{stdout,stderr}`, and waits until it listens.
    pub async fn spawn(
        bin: impl Into<PathBuf>,
        config: impl Into<PathBuf>,
        env: &[(&str, String)],
        log_dir: impl Into<PathBuf>,
    ) -> anyhow::Result<GatewayProcess> {
        let mut gw = GatewayProcess {
            bin: bin.into(),
            config: config.into(),
            env: env.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect(),
            log_dir: log_dir.into(),
            child: None,
            stderr_tee: None,
            url: String::new(),
            admin_url: None,
            runs: 0,
        };
        std::fs::create_dir_all(&gw.log_dir).context("log directory")?;
        gw.launch().await?;
        Ok(gw)
    }

    /// The paid listener's base URL (`http://127.0.0.1:<port>`) of the current run. With
    /// `listen = "127.0.0.1:0"` it changes on every restart.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The admin listener's base URL of the current run, when the config enables it.
    pub fn admin_url(&self) -> Option<&str> {
        self.admin_url.as_deref()
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// How many times the process was started.
    pub fn runs(&self) -> u32 {
        self.runs
    }

    /// Kills the process with SIGKILL (no shutdown, no flush: a crash) and waits for it to
    /// be gone and its output written out.
    pub async fn kill9(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            // tokio's `start_kill` is SIGKILL on Unix.
            child.start_kill().context("SIGKILL")?;
            child.wait().await.context("waiting for the killed gateway")?;
        }
        self.drain().await;
        Ok(())
    }

    /// Asks the process to shut down gracefully (SIGTERM) and waits up to `timeout` for it;
    /// returns whether it exited successfully.
    pub async fn terminate(&mut self, timeout: Duration) -> anyhow::Result<bool> {
        let Some(mut child) = self.child.take() else { return Ok(false) };
        if let Some(pid) = child.id() {
            let status = Command::new("kill").args(["-TERM", &pid.to_string()]).status().await?;
            if !status.success() {
                bail!("kill -TERM {pid} failed");
            }
        }
        let exited = match tokio::time::timeout(timeout, child.wait()).await {
            Ok(status) => status?.success(),
            Err(_) => {
                child.start_kill()?;
                child.wait().await?;
                false
            }
        };
        self.drain().await;
        Ok(exited)
    }

    /// SIGKILLs the process if it still runs, then starts it again with the same binary,
    /// environment and config file (read afresh), and waits until it listens.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill9().await?;
        self.launch().await
    }

    /// Files holding every run's stdout and stderr so far.
    pub fn log_files(&self) -> Vec<PathBuf> {
        (1..=self.runs).flat_map(|n| [self.out_path(n, "stdout"), self.out_path(n, "stderr")]).collect()
    }

    /// Everything every run printed so far (stdout and stderr, run after run). Lines of a
    /// still-running process may lag by a moment.
    pub fn logs(&self) -> String {
        let mut all = String::new();
        for path in self.log_files() {
            all.push_str(&format!("==> {} <==\n", path.display()));
            all.push_str(&String::from_utf8_lossy(&std::fs::read(&path).unwrap_or_default()));
        }
        all
    }

    /// The log files (file name and 1-based line) that contain `secret` verbatim or
    /// percent-encoded; empty when none does.
    pub fn find_secret(&self, secret: &str) -> Vec<String> {
        let needles = secret_forms(secret);
        let mut hits = Vec::new();
        for path in self.log_files() {
            let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap_or_default()).into_owned();
            for (i, line) in text.lines().enumerate() {
                if needles.iter().any(|n| line.contains(n.as_str())) {
                    hits.push(format!("{}:{}", path.display(), i + 1));
                }
            }
        }
        hits
    }

    fn out_path(&self, run: u32, stream: &str) -> PathBuf {
        self.log_dir.join(format!("run-{run}.{stream}"))
    }

    async fn launch(&mut self) -> anyhow::Result<()> {
        self.runs += 1;
        let run = self.runs;
        let stdout = std::fs::File::create(self.out_path(run, "stdout")).context("stdout file")?;
        let mut command = Command::new(&self.bin);
        command.args(["serve", "--config"]).arg(&self.config).envs(self.env.iter().map(|(k, v)| (k, v)));
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawning {}", self.bin.display()))?;
        let stderr = child.stderr.take().context("stderr pipe")?;
        let mut file = tokio::fs::File::create(self.out_path(run, "stderr")).await.context("stderr file")?;
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        // Copies stderr to its file line by line, picking the URLs out on the way; keeps
        // reading after readiness so a full pipe never blocks the gateway.
        let tee = tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            let mut admin_url = None;
            let mut ready_tx = Some(ready_tx);
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = file.write_all(line.as_bytes()).await;
                let _ = file.write_all(b"\n").await;
                let _ = file.flush().await;
                if let Some(url) = line.split("admin API on ").nth(1) {
                    admin_url = Some(url.trim().to_owned());
                }
                if let Some(url) = line.split("listening on ").nth(1)
                    && let Some(tx) = ready_tx.take()
                {
                    let _ = tx.send((url.trim().to_owned(), admin_url.clone()));
                }
            }
        });
        self.child = Some(child);
        self.stderr_tee = Some(tee);
        match tokio::time::timeout(READY_TIMEOUT, ready_rx).await {
            Ok(Ok((url, admin_url))) => {
                self.url = url;
                self.admin_url = admin_url;
                Ok(())
            }
            outcome => {
                self.kill9().await?;
                let why = if outcome.is_err() { "did not listen within 30 s" } else { "exited before listening" };
                bail!("gateway {why}:\n{}", self.logs())
            }
        }
    }

    async fn drain(&mut self) {
        if let Some(tee) = self.stderr_tee.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), tee).await;
        }
    }
}

/// `secret` as it may appear in a log: verbatim and percent-encoded (as a query value),
/// with upper- or lower-case hex.
fn secret_forms(secret: &str) -> Vec<String> {
    let encode = |lower: bool| -> String {
        secret
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
                _ if lower => format!("%{b:02x}"),
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    let mut forms = vec![secret.to_owned(), encode(false), encode(true)];
    forms.dedup();
    forms
}
