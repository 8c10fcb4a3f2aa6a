//! SRTP key derivation (RFC 3711 §4.3.1, AES-CM PRF, key derivation rate 0).

use aes::Aes128;
use aes::cipher::{BlockEncrypt, KeyInit, generic_array::GenericArray};

/// SRTP encryption key label.
pub(crate) const LABEL_RTP_ENCRYPTION: u8 = 0x00;
/// SRTP authentication key label.
pub(crate) const LABEL_RTP_AUTH: u8 = 0x01;
/// SRTP salt label.
pub(crate) const LABEL_RTP_SALT: u8 = 0x02;
/// SRTCP encryption key label.
pub(crate) const LABEL_RTCP_ENCRYPTION: u8 = 0x03;
/// SRTCP authentication key label.
pub(crate) const LABEL_RTCP_AUTH: u8 = 0x04;
/// SRTCP salt label.
pub(crate) const LABEL_RTCP_SALT: u8 = 0x05;

/// Fills `out` with the session key for `label` derived from a 16-byte master
/// key and a master salt of up to 14 bytes. A shorter salt (the 12-byte salt
/// of the AEAD profiles, RFC 7714 §11) is padded with zeros on the right to
/// 112 bits. The PRF input is `(salt XOR label << 48) << 16`, and its 16-bit
/// block counter runs over `out`.
///
/// # Panics
/// If `master_key` is not 16 bytes or `master_salt` is longer than 14 bytes;
/// [`super::SrtpContext::new`] checks both before it calls this.
pub fn derive(master_key: &[u8], master_salt: &[u8], label: u8, out: &mut [u8]) {
    let aes = Aes128::new(GenericArray::from_slice(master_key));
    let mut x = [0u8; 16];
    x[..master_salt.len()].copy_from_slice(master_salt);
    x[7] ^= label;
    for (i, chunk) in out.chunks_mut(16).enumerate() {
        let mut block = x;
        block[14..16].copy_from_slice(&(i as u16).to_be_bytes());
        let mut b = GenericArray::from(block);
        aes.encrypt_block(&mut b);
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// RFC 3711 Appendix B.3.
    #[test]
    fn rfc3711_b3_key_derivation() {
        let key = hex("E1F97A0D3E018BE0D64FA32C06DE4139");
        let salt = hex("0EC675AD498AFEEBB6960B3AABE6");
        let mut enc = [0u8; 16];
        derive(&key, &salt, LABEL_RTP_ENCRYPTION, &mut enc);
        assert_eq!(enc.to_vec(), hex("C61E7A93744F39EE10734AFE3FF7A087"));
        let mut s = [0u8; 14];
        derive(&key, &salt, LABEL_RTP_SALT, &mut s);
        assert_eq!(s.to_vec(), hex("30CBBC08863D8C85D49DB34A9AE1"));
        // The 160-bit HMAC-SHA1 key (the RFC lists a longer PRF output; the
        // profile uses its first 20 bytes).
        let mut auth = [0u8; 20];
        derive(&key, &salt, LABEL_RTP_AUTH, &mut auth);
        assert_eq!(
            auth.to_vec(),
            hex("CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4")
        );
    }
}
