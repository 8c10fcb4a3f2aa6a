#![no_main]
use libfuzzer_sys::fuzz_target;
use sfu_core::wire::stun::StunMessage;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = StunMessage::new_checked(data) {
        let _ = (m.method(), m.class(), m.transaction_id(), m.attributes().count());
        let _ = (m.username(), m.priority(), m.use_candidate(), m.ice_controlling());
        let _ = (m.ice_controlled(), m.xor_mapped_address(), m.error_code());
        let _ = m.verify_integrity(b"password");
        let _ = m.verify_fingerprint();
    }
});
