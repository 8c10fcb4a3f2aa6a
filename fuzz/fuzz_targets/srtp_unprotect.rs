#![no_main]
use libfuzzer_sys::fuzz_target;
use sfu_core::srtp::{Profile, SrtpConfig, SrtpContext};

fuzz_target!(|data: &[u8]| {
    for profile in [Profile::AeadAes128Gcm, Profile::Aes128CmHmacSha1_80] {
        let salt = [2u8; 14];
        let mut ctx =
            SrtpContext::new(profile, &[1; 16], &salt[..profile.salt_len()], SrtpConfig::default())
                .expect("fixed key lengths match the profile");
        let mut buf = data.to_vec();
        let _ = ctx.unprotect_rtp(&mut buf);
        let mut buf = data.to_vec();
        let _ = ctx.unprotect_rtcp(&mut buf);
    }
});
