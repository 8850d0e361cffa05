//! Output that never panics: Rust's runtime ignores SIGPIPE, so `println!` and `eprintln!`
//! panic (exit 101) when the reader went away (`tollgate admin openapi | head`). Every command
//! writes through here instead: a closed stdout or stderr ends that stream's output quietly
//! and the command finishes with its own exit code.
//!
//! Must not: hide a write error other than a closed pipe on stdout (a full disk is reported).

use std::fmt::Display;
use std::io::{self, ErrorKind, Write};

use crate::{EXIT_FAILURE, Failure};

/// Stdout that swallows a closed pipe: once the reader is gone, the rest is discarded.
#[derive(Debug, Default)]
pub struct Stdout {
    closed: bool,
}

/// Stdout for a command's output (see [`Stdout`]).
pub fn stdout() -> Stdout {
    Stdout::default()
}

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.closed {
            return Ok(buf.len());
        }
        match io::stdout().lock().write(buf) {
            Err(e) if e.kind() == ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(buf.len())
            }
            other => other,
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.closed {
            return Ok(());
        }
        match io::stdout().lock().flush() {
            Err(e) if e.kind() == ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(())
            }
            other => other,
        }
    }
}

/// Writes `bytes` to stdout and flushes (a closed pipe is not an error).
pub fn print_bytes(bytes: &[u8]) -> Result<(), Failure> {
    let mut out = stdout();
    out.write_all(bytes).and_then(|()| out.flush()).map_err(|e| Failure::new(EXIT_FAILURE, format!("stdout: {e}")))
}

/// Writes one line to stdout (a closed pipe is not an error).
pub fn print_line(line: impl Display) -> Result<(), Failure> {
    print_bytes(format!("{line}\n").as_bytes())
}

/// Writes one line to stderr. A failure is dropped: stderr is where it would be reported.
pub fn say(line: impl Display) {
    let mut err = io::stderr().lock();
    // Dropping is safe: a closed or broken stderr leaves no place to report anything, and the
    // exit code still tells the outcome.
    let _ = writeln!(err, "{line}");
}
