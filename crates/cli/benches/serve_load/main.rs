//! The paid path measured from outside (issue 17, "Measure"): a load generator in this
//! process, the real `tollgate serve` binary in another, a fresh anvil in a third. See
//! [`load`] for what is measured and how; this file reads the settings from the environment,
//! prints the usage and the results. Run with
//! `cargo bench -p tollgate-cli --bench serve_load` (settings: `TOLLGATE_LOAD_*`, below).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic, missing_docs)]

mod load;

fn main() -> anyhow::Result<()> {
    println!("{}", load::USAGE);
    let settings = load::Settings::from_env(&|k| std::env::var(k).ok())?;
    // The default multi-thread runtime: one worker per core, shared by the load generator and
    // the upstream. The gateway and anvil run as their own processes.
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let report = rt.block_on(load::run(&settings, env!("CARGO_BIN_EXE_tollgate")))?;
    report.print();
    anyhow::ensure!(report.calls() > 0, "no call was answered");
    anyhow::ensure!(report.chain_ok(), "the chain check failed (see above)");
    Ok(())
}
