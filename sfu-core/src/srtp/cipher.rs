//! The two transforms, each over a caller's buffer, with session keys expanded
//! once at construction (AES round keys, GHASH tables, the keyed HMAC state).

use aes::Aes128;
use aes::cipher::{InnerIvInit, KeyInit, StreamCipher, generic_array::GenericArray};
use hmac::{Hmac, Mac};
use ring::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use sha1::Sha1;
use subtle::ConstantTimeEq;

use super::kdf::{
    LABEL_RTCP_AUTH, LABEL_RTCP_ENCRYPTION, LABEL_RTCP_SALT, LABEL_RTP_AUTH, LABEL_RTP_ENCRYPTION,
    LABEL_RTP_SALT, derive,
};
use super::{Profile, SrtpError};

const GCM_TAG: usize = 16;
const CM_TAG: usize = 10;

type Aes128Ctr = ctr::Ctr128BE<Aes128>;
type CtrCore = ctr::CtrCore<Aes128, ctr::flavors::Ctr128BE>;

pub(super) enum Cipher {
    Gcm(Box<Gcm>),
    Cm(Box<Cm>),
}

impl core::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Never print key material.
        f.write_str(match self {
            Self::Gcm(_) => "Cipher::Gcm",
            Self::Cm(_) => "Cipher::Cm",
        })
    }
}

pub(super) struct Gcm {
    rtp_key: LessSafeKey,
    rtcp_key: LessSafeKey,
    rtp_salt: [u8; 12],
    rtcp_salt: [u8; 12],
}

pub(super) struct Cm {
    rtp_enc: Aes128,
    rtp_auth: Hmac<Sha1>,
    rtp_salt: [u8; 14],
    rtcp_enc: Aes128,
    rtcp_auth: Hmac<Sha1>,
    rtcp_salt: [u8; 14],
}

impl Cipher {
    /// Key and salt lengths have been checked by the caller.
    pub(super) fn new(profile: Profile, key: &[u8], salt: &[u8]) -> Self {
        match profile {
            Profile::AeadAes128Gcm => {
                let aead = |label| {
                    let mut k = [0u8; 16];
                    derive(key, salt, label, &mut k);
                    let unbound =
                        UnboundKey::new(&AES_128_GCM, &k).expect("a 16-byte key fits AES-128-GCM");
                    LessSafeKey::new(unbound)
                };
                let salt12 = |label| {
                    let mut s = [0u8; 12];
                    derive(key, salt, label, &mut s);
                    s
                };
                Self::Gcm(Box::new(Gcm {
                    rtp_key: aead(LABEL_RTP_ENCRYPTION),
                    rtcp_key: aead(LABEL_RTCP_ENCRYPTION),
                    rtp_salt: salt12(LABEL_RTP_SALT),
                    rtcp_salt: salt12(LABEL_RTCP_SALT),
                }))
            }
            Profile::Aes128CmHmacSha1_80 => {
                let aes = |label| {
                    let mut k = [0u8; 16];
                    derive(key, salt, label, &mut k);
                    Aes128::new(GenericArray::from_slice(&k))
                };
                let hmac = |label| {
                    let mut k = [0u8; 20];
                    derive(key, salt, label, &mut k);
                    <Hmac<Sha1> as Mac>::new_from_slice(&k).expect("HMAC takes keys of any length")
                };
                let salt14 = |label| {
                    let mut s = [0u8; 14];
                    derive(key, salt, label, &mut s);
                    s
                };
                Self::Cm(Box::new(Cm {
                    rtp_enc: aes(LABEL_RTP_ENCRYPTION),
                    rtp_auth: hmac(LABEL_RTP_AUTH),
                    rtp_salt: salt14(LABEL_RTP_SALT),
                    rtcp_enc: aes(LABEL_RTCP_ENCRYPTION),
                    rtcp_auth: hmac(LABEL_RTCP_AUTH),
                    rtcp_salt: salt14(LABEL_RTCP_SALT),
                }))
            }
        }
    }

    /// Encrypts `buf[header_len..len]` and writes the tag at `buf[len..]`;
    /// `buf` is exactly the SRTP packet's length.
    pub(super) fn seal_rtp(
        &self,
        buf: &mut [u8],
        header_len: usize,
        len: usize,
        ssrc: u32,
        index: u64,
    ) {
        match self {
            Self::Gcm(g) => {
                let nonce = gcm_rtp_nonce(&g.rtp_salt, ssrc, index);
                let (head, rest) = buf.split_at_mut(header_len);
                let (payload, tag_out) = rest.split_at_mut(len - header_len);
                let tag = g
                    .rtp_key
                    .seal_in_place_separate_tag(nonce, Aad::from(&*head), payload)
                    .expect("GCM seals up to 2^36 bytes; an RTP packet is under 2^16");
                tag_out.copy_from_slice(tag.as_ref());
            }
            Self::Cm(c) => {
                let iv = cm_iv(&c.rtp_salt, ssrc, index);
                Aes128Ctr::from_core(CtrCore::inner_iv_init(c.rtp_enc.clone(), &iv.into()))
                    .apply_keystream(&mut buf[header_len..len]);
                let tag = cm_tag(&c.rtp_auth, &buf[..len], Some((index >> 16) as u32));
                buf[len..].copy_from_slice(&tag);
            }
        }
    }

    /// Authenticates, then decrypts, the SRTP packet `buf`; returns the
    /// plaintext length. The caller checked `buf.len() >= header_len + tag`.
    pub(super) fn open_rtp(
        &self,
        buf: &mut [u8],
        header_len: usize,
        ssrc: u32,
        index: u64,
    ) -> Result<usize, SrtpError> {
        match self {
            Self::Gcm(g) => {
                let nonce = gcm_rtp_nonce(&g.rtp_salt, ssrc, index);
                let (head, rest) = buf.split_at_mut(header_len);
                g.rtp_key
                    .open_in_place(nonce, Aad::from(&*head), rest)
                    .map_err(|_| SrtpError::AuthFailed)?;
                Ok(buf.len() - GCM_TAG)
            }
            Self::Cm(c) => {
                let tag_at = buf.len() - CM_TAG;
                let tag = cm_tag(&c.rtp_auth, &buf[..tag_at], Some((index >> 16) as u32));
                if !bool::from(tag.ct_eq(&buf[tag_at..])) {
                    return Err(SrtpError::AuthFailed);
                }
                let iv = cm_iv(&c.rtp_salt, ssrc, index);
                Aes128Ctr::from_core(CtrCore::inner_iv_init(c.rtp_enc.clone(), &iv.into()))
                    .apply_keystream(&mut buf[header_len..tag_at]);
                Ok(tag_at)
            }
        }
    }

    /// Encrypts (if `encrypt`) `buf[8..len]` and appends the SRTCP trailer;
    /// `buf` is exactly the SRTCP packet's length.
    pub(super) fn seal_rtcp(
        &self,
        buf: &mut [u8],
        len: usize,
        ssrc: u32,
        index: u32,
        encrypt: bool,
    ) {
        let word = (index | if encrypt { 0x8000_0000 } else { 0 }).to_be_bytes();
        match self {
            Self::Gcm(g) => {
                let nonce = gcm_rtcp_nonce(&g.rtcp_salt, ssrc, index);
                let tag = if encrypt {
                    let mut aad = [0u8; 12];
                    aad[..8].copy_from_slice(&buf[..8]);
                    aad[8..].copy_from_slice(&word);
                    let (_, rest) = buf.split_at_mut(8);
                    g.rtcp_key.seal_in_place_separate_tag(
                        nonce,
                        Aad::from(aad),
                        &mut rest[..len - 8],
                    )
                } else {
                    // RFC 7714 §9.2: the whole packet and the word are AAD.
                    buf[len..len + 4].copy_from_slice(&word);
                    g.rtcp_key.seal_in_place_separate_tag(
                        nonce,
                        Aad::from(&buf[..len + 4]),
                        &mut [],
                    )
                }
                .expect("GCM seals up to 2^36 bytes; an RTCP packet is under 2^16");
                buf[len..len + GCM_TAG].copy_from_slice(tag.as_ref());
                buf[len + GCM_TAG..].copy_from_slice(&word);
            }
            Self::Cm(c) => {
                if encrypt {
                    let iv = cm_iv(&c.rtcp_salt, ssrc, u64::from(index));
                    Aes128Ctr::from_core(CtrCore::inner_iv_init(c.rtcp_enc.clone(), &iv.into()))
                        .apply_keystream(&mut buf[8..len]);
                }
                buf[len..len + 4].copy_from_slice(&word);
                let tag = cm_tag(&c.rtcp_auth, &buf[..len + 4], None);
                buf[len + 4..].copy_from_slice(&tag);
            }
        }
    }

    /// Authenticates, then decrypts if `encrypted`, the SRTCP packet `buf`;
    /// returns the RTCP length. The caller checked `buf.len() >= 8 + trailer`.
    pub(super) fn open_rtcp(
        &self,
        buf: &mut [u8],
        ssrc: u32,
        index: u32,
        encrypted: bool,
    ) -> Result<usize, SrtpError> {
        let n = buf.len();
        match self {
            Self::Gcm(g) => {
                let nonce = gcm_rtcp_nonce(&g.rtcp_salt, ssrc, index);
                let tag_at = n - 4 - GCM_TAG;
                if encrypted {
                    let mut aad = [0u8; 12];
                    aad[..8].copy_from_slice(&buf[..8]);
                    aad[8..].copy_from_slice(&buf[n - 4..]);
                    g.rtcp_key
                        .open_in_place(nonce, Aad::from(aad), &mut buf[8..n - 4])
                        .map_err(|_| SrtpError::AuthFailed)?;
                } else {
                    // Make packet || word contiguous for the AAD: move the tag
                    // out and the word down over it.
                    let mut tag = [0u8; GCM_TAG];
                    tag.copy_from_slice(&buf[tag_at..tag_at + GCM_TAG]);
                    buf.copy_within(n - 4..n, tag_at);
                    g.rtcp_key
                        .open_in_place(nonce, Aad::from(&buf[..tag_at + 4]), &mut tag)
                        .map_err(|_| SrtpError::AuthFailed)?;
                }
                Ok(tag_at)
            }
            Self::Cm(c) => {
                let tag_at = n - CM_TAG;
                let tag = cm_tag(&c.rtcp_auth, &buf[..tag_at], None);
                if !bool::from(tag.ct_eq(&buf[tag_at..])) {
                    return Err(SrtpError::AuthFailed);
                }
                let word_at = tag_at - 4;
                if encrypted {
                    let iv = cm_iv(&c.rtcp_salt, ssrc, u64::from(index));
                    Aes128Ctr::from_core(CtrCore::inner_iv_init(c.rtcp_enc.clone(), &iv.into()))
                        .apply_keystream(&mut buf[8..word_at]);
                }
                Ok(word_at)
            }
        }
    }
}

/// RFC 7714 §8.1: `(00 00 || SSRC || ROC || SEQ) XOR salt`.
fn gcm_rtp_nonce(salt: &[u8; 12], ssrc: u32, index: u64) -> Nonce {
    let mut iv = *salt;
    xor_into(&mut iv[2..6], &ssrc.to_be_bytes());
    xor_into(&mut iv[6..12], &index.to_be_bytes()[2..]);
    Nonce::assume_unique_for_key(iv)
}

/// RFC 7714 §9.1: `(00 00 || SSRC || 00 00 || 0 || SRTCP index) XOR salt`.
fn gcm_rtcp_nonce(salt: &[u8; 12], ssrc: u32, index: u32) -> Nonce {
    let mut iv = *salt;
    xor_into(&mut iv[2..6], &ssrc.to_be_bytes());
    xor_into(&mut iv[8..12], &index.to_be_bytes());
    Nonce::assume_unique_for_key(iv)
}

/// RFC 3711 §4.1.1: `(salt << 16) XOR (SSRC << 64) XOR (index << 16)`.
fn cm_iv(salt: &[u8; 14], ssrc: u32, index: u64) -> [u8; 16] {
    let mut iv = [0u8; 16];
    iv[..14].copy_from_slice(salt);
    xor_into(&mut iv[4..8], &ssrc.to_be_bytes());
    xor_into(&mut iv[8..14], &index.to_be_bytes()[2..]);
    iv
}

/// HMAC-SHA1 over `data` (and the ROC for SRTP), truncated to 80 bits.
fn cm_tag(key: &Hmac<Sha1>, data: &[u8], roc: Option<u32>) -> [u8; CM_TAG] {
    let mut mac = key.clone();
    mac.update(data);
    if let Some(roc) = roc {
        mac.update(&roc.to_be_bytes());
    }
    let full = mac.finalize().into_bytes();
    let mut tag = [0u8; CM_TAG];
    tag.copy_from_slice(&full[..CM_TAG]);
    tag
}

fn xor_into(dst: &mut [u8], src: &[u8]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d ^= s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 3711 Appendix B.2: the AES-CM keystream for a given session key,
    /// salt, SSRC 0 and index 0.
    #[test]
    fn rfc3711_b2_aes_cm_keystream() {
        let key = hex("2B7E151628AED2A6ABF7158809CF4F3C");
        let salt: [u8; 14] = hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD").try_into().unwrap();
        let iv = cm_iv(&salt, 0, 0);
        assert_eq!(iv.to_vec(), hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD0000"));
        let mut ks = [0u8; 48];
        Aes128Ctr::from_core(CtrCore::inner_iv_init(
            Aes128::new(GenericArray::from_slice(&key)),
            &iv.into(),
        ))
        .apply_keystream(&mut ks);
        assert_eq!(
            ks.to_vec(),
            hex("E03EAD0935C95E80E166B16DD92B4EB4\
                 D23513162B02D0F72A43A2FE4A5F97AB\
                 41E95B3BB0A2E8DD477901E4FCA894C0")
        );
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }
}
