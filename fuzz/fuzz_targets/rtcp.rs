#![no_main]
use libfuzzer_sys::fuzz_target;
use sfu_core::wire::rtcp::{RtcpIter, RtcpPacket};

fuzz_target!(|data: &[u8]| {
    for item in RtcpIter::new(data) {
        let Ok(pkt) = item else { break };
        match pkt {
            RtcpPacket::SenderReport(sr) => {
                let _ = (sr.ntp_time(), sr.rtp_time(), sr.extension().len());
                sr.report_blocks().for_each(|b| {
                    let _ = b.to_data();
                });
            }
            RtcpPacket::ReceiverReport(rr) => rr.report_blocks().for_each(|b| {
                let _ = b.to_data();
            }),
            RtcpPacket::Sdes(s) => s.chunks().for_each(|c| c.items().for_each(drop)),
            RtcpPacket::Bye(b) => {
                let _ = (b.ssrcs().count(), b.reason());
            }
            RtcpPacket::Nack(n) => {
                let _ = (n.pairs().count(), n.lost().count());
            }
            RtcpPacket::Pli(p) => {
                let _ = (p.sender_ssrc(), p.media_ssrc());
            }
            RtcpPacket::Fir(f) => {
                let _ = f.entries().count();
            }
            RtcpPacket::Remb(r) => {
                let _ = (r.bitrate_bps(), r.ssrcs().count());
            }
            RtcpPacket::TransportCc(t) => {
                let _ = t.packets().count();
            }
            _ => {}
        }
    }
});
