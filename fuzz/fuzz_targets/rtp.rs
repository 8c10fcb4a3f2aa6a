#![no_main]
use libfuzzer_sys::fuzz_target;
use sfu_core::wire::rtp::{ExtensionMap, RtpPacket, RtpPacketMut};

fuzz_target!(|data: &[u8]| {
    let _ = sfu_core::wire::classify(data);
    let map = ExtensionMap {
        mid: Some(1),
        rid: Some(2),
        repaired_rid: Some(3),
        abs_send_time: Some(4),
        transport_cc: Some(5),
        audio_level: Some(6),
    };
    if let Ok(p) = RtpPacket::new_checked(data) {
        let _ = (p.payload(), p.csrcs().count(), p.extensions().count());
        let _ = (p.mid(&map), p.rid(&map), p.repaired_rid(&map), p.abs_send_time(&map));
        let _ = (p.transport_cc_seq(&map), p.audio_level(&map));
    }
    let mut owned = data.to_vec();
    if let Ok(mut m) = RtpPacketMut::new_checked(&mut owned) {
        m.set_sequence_number(1);
        m.set_timestamp(2);
        m.set_ssrc(3);
        m.set_payload_type(96);
        m.set_transport_cc_seq(&map, 4);
    }
});
