//! `TestGateway::binary` on a stand-in binary (a shell script that prints what `tollgate serve`
//! prints): readiness, SIGKILL, restart on the same config and the log files. The real
//! binary is exercised by the cli crate's fault tests.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use tollgate_test_support::TestGateway;

const FAKE_SERVE: &str = r#"#!/bin/sh
# Stands in for `tollgate serve --config FILE`: prints the config's contents and the lines
# the fixture waits for, then runs until killed.
[ "$1" = serve ] && [ "$2" = --config ] || exit 2
echo "stdout line with $FAKE_SECRET"
echo "tollgate: admin API on http://127.0.0.1:2" >&2
echo "tollgate: config says $(cat "$3")" >&2
echo "tollgate: listening on http://127.0.0.1:1" >&2
exec sleep 600
"#;

fn fake_binary(dir: &Path) -> std::path::PathBuf {
    let bin = dir.join("fake-tollgate");
    std::fs::write(&bin, FAKE_SERVE).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

// Goal: the process is ready on its `listening on` line with both URLs read; kill9 ends it;
// restart runs it again with the config file as it is now; each run's output is kept and
// searchable for a secret, verbatim or percent-encoded.
#[tokio::test]
async fn spawn_kill_restart_and_logs() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tollgate.toml");
    std::fs::write(&config, "first").unwrap();
    let secret = "s3cr/t";
    let mut gw = TestGateway::binary(
        fake_binary(dir.path()),
        &config,
        &[("FAKE_SECRET", secret.to_owned())],
        dir.path().join("logs"),
    )
    .await
    .unwrap();
    assert_eq!(gw.url(), "http://127.0.0.1:1");
    assert_eq!(gw.admin_url(), Some("http://127.0.0.1:2"));
    let pid = gw.pid().unwrap();

    gw.kill9().await.unwrap();
    assert!(gw.pid().is_none());
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "process {pid} is gone");

    std::fs::write(&config, "second").unwrap();
    gw.restart().await.unwrap();
    assert_eq!(gw.runs(), 2);
    gw.kill9().await.unwrap();

    let logs = gw.logs();
    assert!(logs.contains("config says first") && logs.contains("config says second"), "{logs}");
    let hits = gw.find_secret(secret);
    assert_eq!(hits.len(), 2, "once per run's stdout: {hits:?}");
    assert!(hits.iter().all(|h| h.contains(".stdout:1")), "{hits:?}");
    assert!(gw.find_secret("absent").is_empty());
}

// Goal: a process that exits before listening is an error carrying its output.
#[tokio::test]
async fn exit_before_listening_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = TestGateway::binary("/bin/false", dir.path().join("cfg"), &[], dir.path().join("logs2"))
        .await
        .map(|_| ())
        .unwrap_err();
    assert!(err.to_string().contains("exited before listening"), "{err}");
}
