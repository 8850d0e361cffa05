//! [`ThrowawayPg`]: a PostgreSQL server of a test's own (initdb into a temporary directory,
//! pg_ctl on a free loopback port), which the test can stop — immediate mode, like a crash
//! or an outage — and start again on the same port and data, to take the database away from
//! a running gateway.
//!
//! Owns the server's process and directory, nothing else: the shared server of
//! [`crate::PgDatabase`] is never touched. initdb and postgres refuse to run as root, so as
//! root both run as the `postgres` user through `runuser` (the directory is handed to that
//! user). Binaries come from `TOLLGATE_PG_BIN_DIR`, else from `PATH`; when they are missing
//! the fixture prints a visible `SKIPPED` line, unless `CI=true`, where that is a failure.
//! With [`ThrowawayPg::start_new_ssl`] the server has `ssl = on` with a given certificate and
//! accepts TCP connections only over TLS (`hostssl` in `pg_hba.conf`).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context, bail};

/// A running (or stopped) throw-away PostgreSQL server; dropped, it is stopped and its
/// directory removed.
#[derive(Debug)]
pub struct ThrowawayPg {
    dir: tempfile::TempDir,
    bin_dir: PathBuf,
    /// `Some(user)` when commands run as that user (we are root).
    run_as: Option<String>,
    port: u16,
    running: bool,
    /// `ssl = on` with `server.crt` / `server.key` in the data directory.
    ssl: bool,
}

impl ThrowawayPg {
    /// Creates and starts a server for `test`. `Ok(None)` (after a `SKIPPED` line on stderr)
    /// when the PostgreSQL binaries are missing and `CI` is not `true`.
    pub async fn start_new(test: &str) -> anyhow::Result<Option<ThrowawayPg>> {
        Self::start_new_with(test, None).await
    }

    /// Like [`ThrowawayPg::start_new`], with `ssl = on` serving `cert` (its `cert_pem` and
    /// `key_pem`), and TCP clients admitted over TLS only.
    pub async fn start_new_ssl(test: &str, cert: &crate::IssuedCert) -> anyhow::Result<Option<ThrowawayPg>> {
        Self::start_new_with(test, Some((cert.cert_pem.clone(), cert.key_pem.clone()))).await
    }

    async fn start_new_with(test: &str, ssl: Option<(String, String)>) -> anyhow::Result<Option<ThrowawayPg>> {
        let Some(bin_dir) = find_bin_dir() else {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                bail!("{test}: initdb/pg_ctl not found (TOLLGATE_PG_BIN_DIR or PATH) and CI=true");
            }
            eprintln!("SKIPPED throwaway postgres: {test} (initdb/pg_ctl not found; set TOLLGATE_PG_BIN_DIR)");
            return Ok(None);
        };
        let test = test.to_owned();
        // initdb and pg_ctl block for a second or two: keep them off the async workers.
        tokio::task::spawn_blocking(move || ThrowawayPg::create(&test, bin_dir, ssl)).await?.map(Some)
    }

    fn create(test: &str, bin_dir: PathBuf, ssl: Option<(String, String)>) -> anyhow::Result<ThrowawayPg> {
        let dir = tempfile::Builder::new().prefix("tollgate-pg-").tempdir().context("temporary directory")?;
        let run_as = if is_root()? { Some("postgres".to_owned()) } else { None };
        let mut owner = None;
        if let Some(user) = &run_as {
            let (uid, gid) = user_ids(user).with_context(|| {
                format!("{test}: running as root needs a `{user}` user for initdb (none found: `id {user}`)")
            })?;
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).context("handing the directory over")?;
            owner = Some((uid, gid));
        }
        let port = free_port()?;
        let mut pg = ThrowawayPg { dir, bin_dir, run_as, port, running: false, ssl: ssl.is_some() };
        let data = pg.data_dir();
        let initdb = pg.run(
            "initdb",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-U".as_ref(),
                "postgres".as_ref(),
                "--auth=trust".as_ref(),
                "-E".as_ref(),
                "UTF8".as_ref(),
                "--no-sync".as_ref(),
                "--no-instructions".as_ref(),
            ],
        )?;
        if !initdb.status.success() {
            bail!("{test}: initdb failed: {}", String::from_utf8_lossy(&initdb.stderr));
        }
        if let Some((cert_pem, key_pem)) = ssl {
            pg.install_ssl(&cert_pem, &key_pem, owner)?;
        }
        pg.start_blocking()?;
        Ok(pg)
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres` (trust auth).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The URL of database `name` on this server.
    pub fn url_of(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// The port it listens on (the same across stop/start).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether the server is started.
    pub fn is_running(&self) -> bool {
        self.running
    }

    /// The server's own log (startup, shutdown, crash recovery), for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Stops the server in immediate mode (no checkpoint, connections cut: a crash as far as
    /// clients can tell); returns once it is down.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        let data = self.data_dir();
        let out = self
            .run_blocking(
                "pg_ctl",
                vec!["-D".into(), data.into(), "-m".into(), "immediate".into(), "-w".into(), "stop".into()],
            )
            .await?;
        if !out.status.success() {
            bail!("pg_ctl stop failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        self.running = false;
        Ok(())
    }

    /// Starts the server again on the same port and data directory; returns once it accepts
    /// connections (it runs crash recovery after an immediate stop).
    pub async fn start(&mut self) -> anyhow::Result<()> {
        let args = self.start_args();
        let out = self.run_blocking("pg_ctl", args).await?;
        if !out.status.success() {
            bail!("pg_ctl start failed: {}\n{}", String::from_utf8_lossy(&out.stderr), self.log());
        }
        self.running = true;
        Ok(())
    }

    fn start_blocking(&mut self) -> anyhow::Result<()> {
        let args = self.start_args();
        let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        let out = self.run("pg_ctl", &refs)?;
        if !out.status.success() {
            bail!("pg_ctl start failed: {}\n{}", String::from_utf8_lossy(&out.stderr), self.log());
        }
        self.running = true;
        Ok(())
    }

    /// Puts the certificate and key into the data directory (the key owner-only, as
    /// postgres demands) and admits TCP clients over TLS only.
    fn install_ssl(&self, cert_pem: &str, key_pem: &str, owner: Option<(u32, u32)>) -> anyhow::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let data = self.data_dir();
        for (name, text, mode) in [("server.crt", cert_pem, 0o644), ("server.key", key_pem, 0o600)] {
            let path = data.join(name);
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
            if let Some((uid, gid)) = owner {
                std::os::unix::fs::chown(&path, Some(uid), Some(gid))?;
            }
        }
        // Unix-socket connections (pg_ctl's readiness probe) stay trusted; TCP needs TLS.
        let hba = "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 0.0.0.0/0 reject\n";
        std::fs::write(data.join("pg_hba.conf"), hba).context("writing pg_hba.conf")?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(data.join("pg_hba.conf"), Some(uid), Some(gid))?;
        }
        Ok(())
    }

    fn start_args(&self) -> Vec<std::ffi::OsString> {
        // Loopback only, the unix socket inside our directory (not /var/run/postgresql, which
        // may not exist or belong to the shared server). fsync is off (the machine does not
        // crash under a test; the server only stops), but commits stay synchronous, so a
        // committed row survives an immediate stop as it would on a real server.
        let mut options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off",
            self.port,
            self.dir.path().display()
        );
        if self.ssl {
            options.push_str(" -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key");
        }
        vec![
            "-D".into(),
            self.data_dir().into(),
            "-l".into(),
            self.log_path().into(),
            "-o".into(),
            options.into(),
            "-t".into(),
            "60".into(),
            "-w".into(),
            "start".into(),
        ]
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    async fn run_blocking(&self, tool: &'static str, args: Vec<std::ffi::OsString>) -> anyhow::Result<Output> {
        let cmd = self.command(tool, &args.iter().map(|a| a.as_os_str()).collect::<Vec<_>>());
        tokio::task::spawn_blocking(move || run_command(cmd, tool)).await?
    }

    fn run(&self, tool: &'static str, args: &[&std::ffi::OsStr]) -> anyhow::Result<Output> {
        run_command(self.command(tool, args), tool)
    }

    fn command(&self, tool: &str, args: &[&std::ffi::OsStr]) -> Command {
        let bin = self.bin_dir.join(tool);
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        cmd.args(args).current_dir(self.dir.path()).stdin(std::process::Stdio::null());
        // The shared server's environment must not leak into ours.
        for var in ["PGDATA", "PGPORT", "PGHOST"] {
            cmd.env_remove(var);
        }
        cmd
    }
}

impl Drop for ThrowawayPg {
    fn drop(&mut self) {
        if self.running {
            let data = self.data_dir();
            let cmd = self.command(
                "pg_ctl",
                &["-D".as_ref(), data.as_os_str(), "-m".as_ref(), "immediate".as_ref(), "-w".as_ref(), "stop".as_ref()],
            );
            let _ = run_command(cmd, "pg_ctl");
        }
    }
}

fn run_command(mut cmd: Command, tool: &str) -> anyhow::Result<Output> {
    cmd.output().with_context(|| format!("running {tool}"))
}

fn find_bin_dir() -> Option<PathBuf> {
    let has_tools = |d: &Path| d.join("initdb").is_file() && d.join("pg_ctl").is_file();
    if let Ok(d) = std::env::var("TOLLGATE_PG_BIN_DIR") {
        return Some(PathBuf::from(d)).filter(|d| has_tools(d));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).find(|d| has_tools(d))
}

fn is_root() -> anyhow::Result<bool> {
    let out = Command::new("id").arg("-u").output().context("running `id -u`")?;
    Ok(String::from_utf8_lossy(&out.stdout).trim() == "0")
}

fn user_ids(user: &str) -> Option<(u32, u32)> {
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").args([flag, user]).output().ok()?;
        if !out.status.success() {
            return None;
        }
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    Some((id("-u")?, id("-g")?))
}

/// A port free right now on 127.0.0.1 (the kernel picks; we release it for postgres).
fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}
