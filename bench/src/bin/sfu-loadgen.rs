//! `sfu-loadgen`: drives SRTP publishers and subscribers against an SFU node
//! through its control API and reports loss, latency and CPU. See
//! [`bench::loadgen`] for the design.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let opts = bench::loadgen::Options::parse();
    let report = bench::loadgen::run(&opts, |p| eprintln!("{p}"))?;
    if opts.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{report}");
    }
    Ok(())
}
