//! Counting fsyncs: a tool (strace or perf) attached to the gateway's process for the measured
//! window.

use super::*;

// ---------------------------------------------------------------------------------------
// Counting fsyncs: a tool attached to the gateway's process for the window.

pub(super) struct SyscallProbe {
    tool: Syscalls,
    child: tokio::process::Child,
    out: PathBuf,
}

/// Attaches the counting tool to `pid`; `Err` says why no count will be made.
pub(super) async fn attach(tool: Syscalls, pid: u32, dir: &Path) -> Result<SyscallProbe, String> {
    let out = dir.join(format!("syscalls-{pid}.txt"));
    let mut cmd = match tool {
        Syscalls::Off => return Err("not counted (TOLLGATE_LOAD_SYSCALLS=off)".to_owned()),
        Syscalls::Perf => {
            let mut c = tokio::process::Command::new("perf");
            c.args(["stat", "-x", ",", "-e", "syscalls:sys_enter_fsync,syscalls:sys_enter_fdatasync", "-p"]);
            c
        }
        Syscalls::Strace => {
            let mut c = tokio::process::Command::new("strace");
            c.args(["-f", "-c", "-e", "trace=fsync,fdatasync", "-p"]);
            c
        }
    };
    cmd.arg(pid.to_string()).arg("-o").arg(&out);
    cmd.stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    let mut child = cmd.kill_on_drop(true).spawn().map_err(|e| format!("unavailable ({tool:?}: {e})"))?;
    // Neither tool says when it is attached; a moment is enough, and a tool that failed to
    // attach has exited by then.
    tokio::time::sleep(Duration::from_millis(500)).await;
    if let Ok(Some(status)) = child.try_wait() {
        return Err(format!("unavailable ({tool:?} exited at once: {status})"));
    }
    Ok(SyscallProbe { tool, child, out })
}

impl SyscallProbe {
    /// Detaches (SIGINT, as after Ctrl-C both tools print their counts) and reads the count.
    pub(super) async fn finish(mut self) -> Result<u64, String> {
        let pid = self.child.id().ok_or("the counting tool is gone")?;
        let _ = tokio::process::Command::new("kill").args(["-INT", &pid.to_string()]).status().await;
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
        let text = std::fs::read_to_string(&self.out).map_err(|e| format!("no {:?} output: {e}", self.tool))?;
        let mut total = 0;
        let mut seen = false;
        for line in text.lines() {
            let n = match self.tool {
                // `count,unit,event,...`
                Syscalls::Perf if line.contains("sys_enter_f") => line.split(',').next().map(str::trim),
                // `% time  seconds  usecs/call  calls  [errors]  syscall`
                Syscalls::Strace if line.ends_with(" fsync") || line.ends_with(" fdatasync") => {
                    line.split_whitespace().nth(3)
                }
                _ => None,
            };
            if let Some(n) = n {
                seen = true;
                total += n.parse::<u64>().map_err(|_| format!("unreadable {:?} count: {line:?}", self.tool))?;
            }
        }
        // strace prints no line for a syscall that never ran; perf always prints its events.
        if !seen && self.tool == Syscalls::Perf {
            return Err(format!("no count in the perf output: {text:?}"));
        }
        Ok(total)
    }
}
