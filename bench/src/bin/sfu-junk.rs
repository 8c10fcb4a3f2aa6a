//! `sfu-junk`: floods an SFU node's media port with junk datagrams (random
//! bytes, RTP/SRTCP lookalikes, forged and replayed SRTP, STUN and DTLS
//! nobody asked for) from many ports at a paced rate. See [`bench::junk`].

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let opts = bench::junk::Options::parse();
    let report = bench::junk::run(&opts)?;
    if opts.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{report}");
    }
    Ok(())
}
