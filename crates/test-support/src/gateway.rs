//! [`TestGateway`]: the one way tests, the bench and the demo run a gateway — in-process
//! (the library's `Gateway::start` and `serve`, on free loopback ports, with the paid and the
//! admin listener) or as the real `tollgate serve` binary, started from a config file, ready
//! when it prints its `listening on` line, killed with SIGKILL (a crash: no shutdown, no
//! flush) and restarted on the same config (so the same database), with every run's stdout
//! and stderr kept in files for a later scan for secrets.
//!
//! Owns the running gateway (task or process) and the binary's log files. Does not know
//! where the binary is: only the cli crate's tests have `env!("CARGO_BIN_EXE_tollgate")`, so
//! they pass the path in. Does not write the config: [`crate::ConfigBuilder`] does, and a test
//! may rewrite the file between runs (shorter grace, other RPC URL), which
//! [`TestGateway::restart`] picks up. The in-process mode needs this crate's `gateway`
//! feature (the crates below the gateway never build it).

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
struct GatewayProcess {
    bin: PathBuf,
    config: PathBuf,
    env: Vec<(String, String)>,
    log_dir: PathBuf,
    child: Option<Child>,
    stderr_tee: Option<JoinHandle<()>>,
    url: String,
    admin_url: Option<String>,
    runs: u32,
    /// Where every stderr line is also pushed as it arrives, when a test reads them live.
    sink: Option<LogSink>,
    /// The log directory, when the process owns a temporary one.
    _tmp: Option<tempfile::TempDir>,
}

/// Stderr lines of a binary gateway as they arrive (see [`TestGateway::binary_logged`]).
pub type LogSink = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

impl GatewayProcess {
    /// Starts `bin serve --config <config>` with the extra environment `env`, writing each
    /// run's output to `log_dir/run-<n>.{stdout,stderr}`, and waits until it listens.
    pub(crate) async fn spawn(
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
            sink: None,
            _tmp: None,
        };
        std::fs::create_dir_all(&gw.log_dir).context("log directory")?;
        gw.launch().await?;
        Ok(gw)
    }

    /// Like [`GatewayProcess::spawn`], logging to a temporary directory of its own and pushing
    /// every stderr line into `sink` too.
    pub(crate) async fn spawn_logged(
        bin: impl Into<PathBuf>,
        config: impl Into<PathBuf>,
        env: &[(&str, String)],
        sink: LogSink,
    ) -> anyhow::Result<GatewayProcess> {
        let tmp = tempfile::Builder::new().prefix("tollgate-gw-logs-").tempdir().context("log directory")?;
        let mut gw = GatewayProcess {
            bin: bin.into(),
            config: config.into(),
            env: env.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect(),
            log_dir: tmp.path().to_owned(),
            child: None,
            stderr_tee: None,
            url: String::new(),
            admin_url: None,
            runs: 0,
            sink: Some(sink),
            _tmp: Some(tmp),
        };
        gw.launch().await?;
        Ok(gw)
    }

    /// Sends SIGKILL without waiting for the process to be gone.
    pub(crate) fn start_kill(&mut self) -> std::io::Result<()> {
        match &mut self.child {
            Some(child) => child.start_kill(),
            None => Ok(()),
        }
    }

    /// Waits for the process to exit.
    pub(crate) async fn wait(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let child = self.child.as_mut().context("the gateway process is not running")?;
        Ok(child.wait().await?)
    }

    /// The paid listener's base URL (`http://127.0.0.1:<port>`) of the current run. With
    /// `listen = "127.0.0.1:0"` it changes on every restart.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// The admin listener's base URL of the current run, when the config enables it.
    pub(crate) fn admin_url(&self) -> Option<&str> {
        self.admin_url.as_deref()
    }

    /// The process id, while it runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// How many times the process was started.
    pub(crate) fn runs(&self) -> u32 {
        self.runs
    }

    /// Kills the process with SIGKILL (no shutdown, no flush: a crash) and waits for it to
    /// be gone and its output written out.
    pub(crate) async fn kill9(&mut self) -> anyhow::Result<()> {
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
    pub(crate) async fn terminate(&mut self, timeout: Duration) -> anyhow::Result<bool> {
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
    pub(crate) async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill9().await?;
        self.launch().await
    }

    /// Files holding every run's stdout and stderr so far.
    pub(crate) fn log_files(&self) -> Vec<PathBuf> {
        (1..=self.runs).flat_map(|n| [self.out_path(n, "stdout"), self.out_path(n, "stderr")]).collect()
    }

    /// Everything every run printed so far (stdout and stderr, run after run). Lines of a
    /// still-running process may lag by a moment.
    pub(crate) fn logs(&self) -> String {
        let mut all = String::new();
        for path in self.log_files() {
            all.push_str(&format!("==> {} <==\n", path.display()));
            all.push_str(&String::from_utf8_lossy(&std::fs::read(&path).unwrap_or_default()));
        }
        all
    }

    /// The log files (file name and 1-based line) that contain `secret` verbatim or
    /// percent-encoded; empty when none does.
    pub(crate) fn find_secret(&self, secret: &str) -> Vec<String> {
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
        let sink = self.sink.clone();
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
                if let Some(sink) = &sink {
                    sink.lock().expect("log sink").push(line.clone());
                }
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

/// A gateway under test: in-process or the real binary.
#[derive(Debug)]
pub struct TestGateway {
    mode: Mode,
}

#[derive(Debug)]
enum Mode {
    #[cfg(feature = "gateway")]
    InProcess(in_process::InProcess),
    Binary(Box<GatewayProcess>),
}

impl TestGateway {
    /// Starts `bin serve --config <config>` with the extra environment `env`, writing each
    /// run's output to `log_dir/run-<n>.{stdout,stderr}`, and waits until it listens.
    pub async fn binary(
        bin: impl Into<PathBuf>,
        config: impl Into<PathBuf>,
        env: &[(&str, String)],
        log_dir: impl Into<PathBuf>,
    ) -> anyhow::Result<TestGateway> {
        Ok(TestGateway { mode: Mode::Binary(Box::new(GatewayProcess::spawn(bin, config, env, log_dir).await?)) })
    }

    /// The paid listener's base URL (`http://127.0.0.1:<port>`, `https://` with `[server.tls]`).
    /// For the binary with `listen = "127.0.0.1:0"` it changes on every restart.
    pub fn url(&self) -> &str {
        match &self.mode {
            #[cfg(feature = "gateway")]
            Mode::InProcess(g) => &g.url,
            Mode::Binary(p) => p.url(),
        }
    }

    /// The admin listener's base URL, when there is one (in-process: always; the binary: when
    /// its config enables `[admin] listen`).
    pub fn admin_url(&self) -> Option<&str> {
        match &self.mode {
            #[cfg(feature = "gateway")]
            Mode::InProcess(g) => g.admin_url.as_deref(),
            Mode::Binary(p) => p.admin_url(),
        }
    }

    /// Like [`TestGateway::binary`], logging to a temporary directory of its own and pushing
    /// every stderr line into `sink` as it arrives (tests that read the log while it runs).
    pub async fn binary_logged(
        bin: impl Into<PathBuf>,
        config: impl Into<PathBuf>,
        env: &[(&str, String)],
        sink: LogSink,
    ) -> anyhow::Result<TestGateway> {
        Ok(TestGateway { mode: Mode::Binary(Box::new(GatewayProcess::spawn_logged(bin, config, env, sink).await?)) })
    }

    /// Sends the binary SIGKILL without waiting (see [`TestGateway::kill9`] to wait).
    pub fn start_kill(&mut self) -> std::io::Result<()> {
        self.process_mut().start_kill()
    }

    /// Waits for the binary to exit.
    pub async fn wait(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        self.process_mut().wait().await
    }

    fn process(&self) -> &GatewayProcess {
        match &self.mode {
            Mode::Binary(p) => p,
            #[cfg(feature = "gateway")]
            Mode::InProcess(_) => panic!("an in-process gateway has no process"),
        }
    }

    fn process_mut(&mut self) -> &mut GatewayProcess {
        match &mut self.mode {
            Mode::Binary(p) => p,
            #[cfg(feature = "gateway")]
            Mode::InProcess(_) => panic!("an in-process gateway has no process"),
        }
    }

    /// The binary's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process().pid()
    }

    /// How many times the binary was started.
    pub fn runs(&self) -> u32 {
        self.process().runs()
    }

    /// Kills the binary with SIGKILL (no shutdown, no flush: a crash) and waits for it to be
    /// gone and its output written out.
    pub async fn kill9(&mut self) -> anyhow::Result<()> {
        self.process_mut().kill9().await
    }

    /// Asks the binary to shut down gracefully (SIGTERM) and waits up to `timeout` for it;
    /// returns whether it exited successfully.
    pub async fn terminate(&mut self, timeout: Duration) -> anyhow::Result<bool> {
        self.process_mut().terminate(timeout).await
    }

    /// SIGKILLs the binary if it still runs, then starts it again with the same binary,
    /// environment and config file (read afresh), and waits until it listens.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.process_mut().restart().await
    }

    /// Files holding every run's stdout and stderr so far.
    pub fn log_files(&self) -> Vec<PathBuf> {
        self.process().log_files()
    }

    /// Everything every run of the binary printed so far (stdout and stderr, run after run).
    /// Lines of a still-running process may lag by a moment.
    pub fn logs(&self) -> String {
        self.process().logs()
    }

    /// The log files (file name and 1-based line) that contain `secret` verbatim or
    /// percent-encoded; empty when none does.
    pub fn find_secret(&self, secret: &str) -> Vec<String> {
        self.process().find_secret(secret)
    }
}

#[cfg(feature = "gateway")]
mod in_process {
    //! The in-process mode: the library's start and serve functions on free ports.

    use std::collections::HashMap;
    use std::sync::Arc;

    use anyhow::Context;
    use tokio::sync::oneshot;
    use tollgate_gateway::{Config, Gateway};
    use tollgate_metering::Role;
    use tollgate_verifier::Clock;

    use super::{Mode, TestGateway};

    pub(super) struct InProcess {
        pub(super) gateway: Arc<Gateway>,
        pub(super) url: String,
        pub(super) admin_url: Option<String>,
        config_text: String,
        env: HashMap<String, String>,
        clock: Arc<dyn Clock>,
        // Dropping the sender stops the paid listener.
        shutdown: Option<oneshot::Sender<()>>,
    }

    impl std::fmt::Debug for InProcess {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("InProcess").field("url", &self.url).field("admin_url", &self.admin_url).finish()
        }
    }

    impl TestGateway {
        /// Parses `config_text` (environment variables from `env`), starts the gateway with
        /// `clock`, and serves its paid listener and its admin API on free loopback ports.
        pub async fn start(
            config_text: &str,
            env: &[(&str, String)],
            clock: Arc<dyn Clock>,
        ) -> anyhow::Result<TestGateway> {
            let env: HashMap<String, String> = env.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
            Self::start_parts(config_text.to_owned(), env, clock, true).await
        }

        /// Like [`TestGateway::start`], serving the paid listener only (no admin API).
        pub async fn start_paid(
            config_text: &str,
            env: &[(&str, String)],
            clock: Arc<dyn Clock>,
        ) -> anyhow::Result<TestGateway> {
            let env: HashMap<String, String> = env.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
            Self::start_parts(config_text.to_owned(), env, clock, false).await
        }

        async fn start_parts(
            config_text: String,
            env: HashMap<String, String>,
            clock: Arc<dyn Clock>,
            admin: bool,
        ) -> anyhow::Result<TestGateway> {
            let config = Config::parse(&config_text, &|k| env.get(k).cloned()).context("config")?;
            let gateway = Gateway::start(config, clock.clone()).await.context("gateway starts")?;
            let (url, shutdown) = serve_paid(gateway.clone()).await?;
            let admin_url = if admin { Some(serve_admin(gateway.clone()).await?) } else { None };
            let g = InProcess { gateway, url, admin_url, config_text, env, clock, shutdown: Some(shutdown) };
            Ok(TestGateway { mode: Mode::InProcess(g) })
        }

        fn inner(&self) -> &InProcess {
            match &self.mode {
                Mode::InProcess(g) => g,
                Mode::Binary(_) => panic!("the binary gateway is out of process"),
            }
        }

        /// The in-process gateway (its ledger, config, control plane).
        pub fn gateway(&self) -> &Arc<Gateway> {
            &self.inner().gateway
        }

        /// The configuration text it started with.
        pub fn config_text(&self) -> &str {
            &self.inner().config_text
        }

        /// The environment its configuration was read with.
        pub fn env(&self) -> &HashMap<String, String> {
            &self.inner().env
        }

        /// Another gateway on the same configuration and database (a replica), serving its paid
        /// listener until dropped; with `admin`, its admin API too.
        pub async fn replica(&self, admin: bool) -> anyhow::Result<TestGateway> {
            let g = self.inner();
            Self::start_parts(g.config_text.clone(), g.env.clone(), g.clock.clone(), admin).await
        }

        /// The gateway, its paid URL and the sender whose drop stops the paid listener.
        pub fn into_parts(self) -> (Arc<Gateway>, String, Option<String>, oneshot::Sender<()>) {
            match self.mode {
                Mode::InProcess(mut g) => {
                    let tx = g.shutdown.take().unwrap_or_else(|| oneshot::channel().0);
                    (g.gateway, g.url, g.admin_url, tx)
                }
                Mode::Binary(_) => panic!("the binary gateway is out of process"),
            }
        }

        /// A token of `role` made directly in the database (as `tollgate admin bootstrap` does).
        pub async fn admin_token(&self, role: Role, provider: Option<&str>) -> String {
            admin_token(self.gateway(), role, provider).await
        }

        /// Stops the paid listener and closes the ledger.
        pub async fn stop(self) {
            let (gateway, _, _, tx) = self.into_parts();
            let _ = tx.send(());
            gateway.ledger.close().await;
        }
    }

    /// A token of `role` made directly in the database of `gw`.
    pub async fn admin_token(gw: &Gateway, role: Role, provider: Option<&str>) -> String {
        let actor = tollgate_metering::Actor("test".to_owned());
        tollgate_gateway::admin::create_token_record(gw, role, provider, "test", &actor).await.expect("admin token").1
    }

    /// Serves `gateway`'s paid listener on a free loopback port until the sender is used or
    /// dropped; returns its URL (`https` when `[server.tls]` is set).
    pub async fn serve_paid(gateway: Arc<Gateway>) -> anyhow::Result<(String, oneshot::Sender<()>)> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let scheme = if gateway.config.server.tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{}", listener.local_addr()?);
        let (tx, rx) = oneshot::channel::<()>();
        let (serving_tx, serving) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let stop = async move {
                let _ = rx.await;
            };
            tollgate_gateway::serve_then(listener, gateway, stop, move || {
                let _ = serving_tx.send(());
            })
            .await
        });
        // Returns once the first readiness check is made: a test that then drains the relayer
        // or stops the database sees its own change refused by the node or the ledger, not a
        // first check that ran after it.
        if serving.await.is_err() {
            anyhow::bail!("the gateway stopped before serving: {:?}", task.await);
        }
        Ok((url, tx))
    }

    /// Serves `gateway`'s admin API on a free loopback port for the life of the runtime.
    pub async fn serve_admin(gateway: Arc<Gateway>) -> anyhow::Result<String> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        tokio::spawn(tollgate_gateway::serve_admin(listener, gateway, std::future::pending()));
        Ok(url)
    }
}

#[cfg(feature = "gateway")]
pub use in_process::{admin_token, serve_admin, serve_paid};
