#![no_main]
use libfuzzer_sys::fuzz_target;
use sfu_core::wire::rtcp::{RtcpIter, RtcpPacket};

fuzz_target!(|data: &[u8]| {
    for item in RtcpIter::new(data) {
        let Ok(pkt) = item else { break };
        match pkt {
            RtcpPacket::Pli(p) => {
                let _ = (p.sender_ssrc(), p.media_ssrc());
            }
            RtcpPacket::Fir(f) => {
                let _ = f.entries().count();
            }
            RtcpPacket::TransportCc(t) => {
                let _ = t.packets().count();
            }
            _ => {}
        }
    }
});
