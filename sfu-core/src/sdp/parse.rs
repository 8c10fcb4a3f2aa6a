//! Offer parsing: one pass over the lines into raw per-section state, then
//! the WebRTC checks that make an offer usable by this node.

use super::{
    Codec, Direction, Extmap, MAX_LINES_PER_SECTION, MAX_MEDIA_SECTIONS, MAX_SDP_LEN, MediaSection,
    Offer, Rid, RidDirection, SdpError, SectionKind, Setup, Simulcast, SimulcastRid, SsrcGroup,
    SsrcLine, WEBRTC_PROTOCOL, valid_fingerprint, valid_pwd, valid_ufrag,
};

/// Longest mid accepted (RFC 5888 token); the RTP MID extension carries it.
const MAX_MID_LEN: usize = 32;
/// Longest rid accepted (RFC 8851 rid-id).
const MAX_RID_LEN: usize = 32;

/// Parses a WebRTC SDP offer.
///
/// Never panics. Fails when the text is not SDP, is malformed, exceeds the
/// limits ([`MAX_SDP_LEN`], [`MAX_MEDIA_SECTIONS`], [`MAX_LINES_PER_SECTION`])
/// or cannot be carried by this node: missing ICE credentials or DTLS
/// fingerprint, no BUNDLE group or an audio/video section outside it, no
/// `a=rtcp-mux`, a protocol other than `UDP/TLS/RTP/SAVPF`, or no enabled
/// audio/video section. Codec support is checked by [`super::answer`].
pub fn parse_offer(text: &str) -> Result<Offer, SdpError> {
    if text.len() > MAX_SDP_LEN {
        return Err(SdpError::TooLarge);
    }
    let mut session = SessionRaw::default();
    let mut sections: Vec<SectionRaw> = Vec::new();
    let mut seen_version = false;
    let mut lines_in_section = 0usize;

    for (index, raw) in text.split('\n').enumerate() {
        let no = index + 1;
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.is_empty() {
            continue;
        }
        if !seen_version {
            if line != "v=0" {
                return Err(SdpError::NotSdp);
            }
            seen_version = true;
            lines_in_section = 1;
            continue;
        }
        let bytes = line.as_bytes();
        if bytes.len() < 2 || bytes[1] != b'=' || !bytes[0].is_ascii_lowercase() {
            return Err(malformed(no, "expected <letter>=<value>"));
        }
        if bytes.iter().any(|&b| b < 0x20 || b == 0x7f) {
            return Err(malformed(no, "control character in line"));
        }
        let kind = bytes[0];
        let value = &line[2..];
        if kind == b'm' {
            if sections.len() == MAX_MEDIA_SECTIONS {
                return Err(SdpError::TooManySections);
            }
            sections.push(SectionRaw::from_m_line(value, no)?);
            lines_in_section = 1;
            continue;
        }
        lines_in_section += 1;
        if lines_in_section > MAX_LINES_PER_SECTION {
            return Err(SdpError::TooManyLines);
        }
        match (kind, sections.last_mut()) {
            (b'v', _) => return Err(malformed(no, "repeated v= line")),
            (b'o', None) => session.origin(value, no)?,
            (b'a', None) => session.attribute(value, no)?,
            (b'a', Some(section)) => section.attribute(value, no)?,
            _ => {}
        }
    }
    if !seen_version {
        return Err(SdpError::NotSdp);
    }
    finish(session, sections)
}

fn malformed(line: usize, reason: &'static str) -> SdpError {
    SdpError::Malformed { line, reason }
}

/// Splits `name[:value]`.
fn split_attribute(value: &str) -> (&str, Option<&str>) {
    match value.split_once(':') {
        Some((name, v)) => (name, Some(v)),
        None => (value, None),
    }
}

fn required<'a>(
    value: Option<&'a str>,
    no: usize,
    reason: &'static str,
) -> Result<&'a str, SdpError> {
    match value {
        Some(v) if !v.trim().is_empty() => Ok(v),
        _ => Err(malformed(no, reason)),
    }
}

/// Sets a single-valued attribute; a second occurrence is malformed.
fn set_once<T>(slot: &mut Option<T>, value: T, no: usize) -> Result<(), SdpError> {
    if slot.is_some() {
        return Err(malformed(no, "attribute repeated"));
    }
    *slot = Some(value);
    Ok(())
}

/// RFC 4566 token characters.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.'
                )
                || matches!(b, b'^' | b'_' | b'`' | b'{' | b'|' | b'}' | b'~')
        })
}

fn valid_mid(s: &str) -> bool {
    s.len() <= MAX_MID_LEN && is_token(s)
}

fn valid_rid(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_RID_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// ICE and DTLS attributes, valid at session and media level.
#[derive(Debug, Default)]
struct Transport {
    ice_ufrag: Option<String>,
    ice_pwd: Option<String>,
    fingerprints: Vec<String>,
    setup: Option<Setup>,
}

impl Transport {
    /// Handles `name` if it is a transport attribute; returns whether it was.
    fn attribute(&mut self, name: &str, value: Option<&str>, no: usize) -> Result<bool, SdpError> {
        match name {
            "ice-ufrag" => {
                let v = required(value, no, "empty a=ice-ufrag")?;
                if !valid_ufrag(v) {
                    return Err(malformed(no, "a=ice-ufrag must be 4-256 ice-chars"));
                }
                set_once(&mut self.ice_ufrag, v.to_owned(), no)?;
            }
            "ice-pwd" => {
                let v = required(value, no, "empty a=ice-pwd")?;
                if !valid_pwd(v) {
                    return Err(malformed(no, "a=ice-pwd must be 22-256 ice-chars"));
                }
                set_once(&mut self.ice_pwd, v.to_owned(), no)?;
            }
            "fingerprint" => {
                let v = required(value, no, "empty a=fingerprint")?;
                if !valid_fingerprint(v) {
                    return Err(malformed(no, "a=fingerprint must be '<hash> <HH:HH:...>'"));
                }
                if self.fingerprints.len() < 8 {
                    self.fingerprints.push(v.to_owned());
                }
            }
            "setup" => {
                let setup = match value {
                    Some("actpass") => Setup::Actpass,
                    Some("active") => Setup::Active,
                    Some("passive") => Setup::Passive,
                    _ => return Err(malformed(no, "a=setup must be actpass, active or passive")),
                };
                set_once(&mut self.setup, setup, no)?;
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The fingerprint to use: the first sha-256 one, else the first.
    fn fingerprint(&self) -> Option<&String> {
        self.fingerprints
            .iter()
            .find(|f| {
                f.get(..8)
                    .is_some_and(|a| a.eq_ignore_ascii_case("sha-256 "))
            })
            .or_else(|| self.fingerprints.first())
    }
}

#[derive(Debug, Default)]
struct SessionRaw {
    session_id: Option<String>,
    transport: Transport,
    bundle: Option<Vec<String>>,
    ice_lite: bool,
}

impl SessionRaw {
    fn origin(&mut self, value: &str, no: usize) -> Result<(), SdpError> {
        let fields: Vec<&str> = value.split_ascii_whitespace().collect();
        let [_, id, _, _, _, _] = fields.as_slice() else {
            return Err(malformed(no, "o= needs 6 fields"));
        };
        if id.is_empty() || id.len() > 20 || !id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(malformed(no, "o= session id must be numeric"));
        }
        set_once(&mut self.session_id, (*id).to_owned(), no)
    }

    fn attribute(&mut self, value: &str, no: usize) -> Result<(), SdpError> {
        let (name, v) = split_attribute(value);
        if self.transport.attribute(name, v, no)? {
            return Ok(());
        }
        match name {
            "ice-lite" => self.ice_lite = true,
            "group" => {
                let v = required(v, no, "empty a=group")?;
                let mut parts = v.split_ascii_whitespace();
                if parts.next() == Some("BUNDLE") && self.bundle.is_none() {
                    let mids: Vec<String> = parts.map(str::to_owned).collect();
                    if mids.iter().any(|m| !valid_mid(m)) {
                        return Err(malformed(no, "invalid mid in a=group:BUNDLE"));
                    }
                    self.bundle = Some(mids);
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// One media section while it is being read.
#[derive(Debug)]
struct SectionRaw {
    section: MediaSection,
    transport: Transport,
    has_mid: bool,
    has_direction: bool,
    rtpmaps: Vec<(u8, String, u32, Option<u8>)>,
    fmtps: Vec<(u8, String)>,
    /// `(payload type or None for '*', value)`.
    feedback: Vec<(Option<u8>, String)>,
}

impl SectionRaw {
    fn from_m_line(value: &str, no: usize) -> Result<SectionRaw, SdpError> {
        let mut fields = value.split_ascii_whitespace();
        let (Some(media), Some(port), Some(protocol)) =
            (fields.next(), fields.next(), fields.next())
        else {
            return Err(malformed(no, "m= needs <media> <port> <proto> <fmt>..."));
        };
        let formats: Vec<String> = fields.map(str::to_owned).collect();
        if formats.is_empty() {
            return Err(malformed(no, "m= line without formats"));
        }
        let kind = match media {
            "audio" => SectionKind::Audio,
            "video" => SectionKind::Video,
            "application" => SectionKind::Application,
            other if is_token(other) && other.len() <= 32 => SectionKind::Other(other.to_owned()),
            _ => return Err(malformed(no, "invalid media type")),
        };
        let port = port.split_once('/').map_or(port, |(p, _)| p);
        let port: u16 = port.parse().map_err(|_| malformed(no, "invalid m= port"))?;
        if protocol.len() > 64 || !protocol.bytes().all(is_token_or_slash) {
            return Err(malformed(no, "invalid m= protocol"));
        }
        if protocol.contains("RTP")
            && formats
                .iter()
                .any(|f| f.parse::<u8>().map_or(true, |pt| pt > 127))
        {
            return Err(malformed(no, "RTP payload types must be 0-127"));
        }
        Ok(SectionRaw {
            section: MediaSection {
                mid: String::new(),
                kind,
                port,
                protocol: protocol.to_owned(),
                formats,
                direction: Direction::SendRecv,
                rtcp_mux: false,
                rtcp_rsize: false,
                bundle_only: false,
                codecs: Vec::new(),
                extmap: Vec::new(),
                ssrcs: Vec::new(),
                ssrc_groups: Vec::new(),
                rids: Vec::new(),
                simulcast: None,
                msid: None,
                slides: false,
            },
            transport: Transport::default(),
            has_mid: false,
            has_direction: false,
            rtpmaps: Vec::new(),
            fmtps: Vec::new(),
            feedback: Vec::new(),
        })
    }

    fn attribute(&mut self, value: &str, no: usize) -> Result<(), SdpError> {
        let (name, v) = split_attribute(value);
        if self.transport.attribute(name, v, no)? {
            return Ok(());
        }
        let s = &mut self.section;
        match name {
            "mid" => {
                let mid = required(v, no, "empty a=mid")?;
                if !valid_mid(mid) {
                    return Err(malformed(
                        no,
                        "a=mid must be a token of at most 32 characters",
                    ));
                }
                if self.has_mid {
                    return Err(malformed(no, "attribute repeated"));
                }
                self.has_mid = true;
                s.mid = mid.to_owned();
            }
            "sendrecv" | "sendonly" | "recvonly" | "inactive" => {
                if self.has_direction {
                    return Err(malformed(no, "more than one direction attribute"));
                }
                self.has_direction = true;
                s.direction = match name {
                    "sendrecv" => Direction::SendRecv,
                    "sendonly" => Direction::SendOnly,
                    "recvonly" => Direction::RecvOnly,
                    _ => Direction::Inactive,
                };
            }
            "rtcp-mux" => s.rtcp_mux = true,
            "rtcp-rsize" => s.rtcp_rsize = true,
            "bundle-only" => s.bundle_only = true,
            "msid" => {
                let msid = required(v, no, "empty a=msid")?;
                if s.msid.is_none() {
                    s.msid = Some(msid.to_owned());
                }
            }
            "rtpmap" => self
                .rtpmaps
                .push(parse_rtpmap(required(v, no, "empty a=rtpmap")?, no)?),
            "fmtp" => {
                let (pt, params) = required(v, no, "empty a=fmtp")?
                    .split_once(' ')
                    .ok_or(malformed(no, "a=fmtp needs <pt> <parameters>"))?;
                let pt = parse_pt(pt, no)?;
                self.fmtps.push((pt, params.trim().to_owned()));
            }
            "rtcp-fb" => {
                let (pt, fb) = required(v, no, "empty a=rtcp-fb")?
                    .split_once(' ')
                    .ok_or(malformed(no, "a=rtcp-fb needs <pt> <value>"))?;
                let pt = if pt == "*" {
                    None
                } else {
                    Some(parse_pt(pt, no)?)
                };
                let fb = fb.split_ascii_whitespace().collect::<Vec<_>>().join(" ");
                if fb.is_empty() {
                    return Err(malformed(no, "a=rtcp-fb needs <pt> <value>"));
                }
                self.feedback.push((pt, fb));
            }
            "extmap" => s
                .extmap
                .push(parse_extmap(required(v, no, "empty a=extmap")?, no)?),
            "ssrc" => s
                .ssrcs
                .push(parse_ssrc(required(v, no, "empty a=ssrc")?, no)?),
            "ssrc-group" => {
                let mut parts = required(v, no, "empty a=ssrc-group")?.split_ascii_whitespace();
                let semantics = parts.next().unwrap_or_default().to_owned();
                let ssrcs = parts
                    .map(|p| p.parse::<u32>())
                    .collect::<Result<Vec<u32>, _>>()
                    .map_err(|_| malformed(no, "invalid SSRC in a=ssrc-group"))?;
                if ssrcs.is_empty() {
                    return Err(malformed(no, "a=ssrc-group without SSRCs"));
                }
                s.ssrc_groups.push(SsrcGroup { semantics, ssrcs });
            }
            "content" => {
                // RFC 4796: a comma-separated list of tokens (slides,
                // speaker, sl, main, alt or an extension).
                let tags = required(v, no, "empty a=content")?;
                if !tags.split(',').all(is_token) {
                    return Err(malformed(no, "a=content must list tokens"));
                }
                s.slides |= tags.split(',').any(|t| t.eq_ignore_ascii_case("slides"));
            }
            "rid" => s.rids.push(parse_rid(required(v, no, "empty a=rid")?, no)?),
            "simulcast" => {
                let simulcast = parse_simulcast(required(v, no, "empty a=simulcast")?, no)?;
                set_once(&mut s.simulcast, simulcast, no)?;
            }
            _ => {}
        }
        Ok(())
    }

    /// The codecs with an rtpmap, in m= line order.
    fn codecs(&self) -> Vec<Codec> {
        let mut codecs: Vec<Codec> = Vec::new();
        for format in &self.section.formats {
            let Ok(pt) = format.parse::<u8>() else {
                continue;
            };
            if pt > 127 || codecs.iter().any(|c| c.payload_type == pt) {
                continue;
            }
            let Some((_, name, clock_rate, channels)) = self.rtpmaps.iter().find(|r| r.0 == pt)
            else {
                continue;
            };
            let fmtp = self.fmtps.iter().find(|f| f.0 == pt).map(|f| f.1.clone());
            let mut rtcp_fb: Vec<String> = Vec::new();
            for (_, fb) in self.feedback.iter().filter(|f| f.0.is_none_or(|p| p == pt)) {
                if !rtcp_fb.contains(fb) {
                    rtcp_fb.push(fb.clone());
                }
            }
            codecs.push(Codec {
                payload_type: pt,
                name: name.clone(),
                clock_rate: *clock_rate,
                channels: *channels,
                fmtp,
                rtcp_fb,
            });
        }
        codecs
    }
}

fn is_token_or_slash(b: u8) -> bool {
    b == b'/' || b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'+')
}

fn parse_pt(s: &str, no: usize) -> Result<u8, SdpError> {
    match s.parse::<u8>() {
        Ok(pt) if pt <= 127 => Ok(pt),
        _ => Err(malformed(no, "invalid payload type")),
    }
}

/// `<pt> <name>/<clock rate>[/<channels>]`.
fn parse_rtpmap(v: &str, no: usize) -> Result<(u8, String, u32, Option<u8>), SdpError> {
    const BAD: &str = "a=rtpmap needs <pt> <name>/<rate>[/<channels>]";
    let (pt, encoding) = v.split_once(' ').ok_or(malformed(no, BAD))?;
    let pt = parse_pt(pt, no)?;
    let mut parts = encoding.trim().split('/');
    let name = parts.next().unwrap_or_default();
    if !is_token(name) || name.len() > 32 {
        return Err(malformed(no, BAD));
    }
    let rate: u32 = parts
        .next()
        .and_then(|r| r.parse().ok())
        .filter(|&r| r > 0)
        .ok_or(malformed(no, BAD))?;
    let channels = match parts.next() {
        None => None,
        Some(c) => Some(c.parse::<u8>().map_err(|_| malformed(no, BAD))?),
    };
    if parts.next().is_some() {
        return Err(malformed(no, BAD));
    }
    Ok((pt, name.to_owned(), rate, channels))
}

/// `<id>[/<direction>] <uri> [<attributes>]`.
fn parse_extmap(v: &str, no: usize) -> Result<Extmap, SdpError> {
    const BAD: &str = "a=extmap needs <id>[/<direction>] <uri>";
    let (id, rest) = v.split_once(' ').ok_or(malformed(no, BAD))?;
    let (id, direction) = match id.split_once('/') {
        None => (id, None),
        Some((id, dir)) => {
            let dir = match dir {
                "sendrecv" => Direction::SendRecv,
                "sendonly" => Direction::SendOnly,
                "recvonly" => Direction::RecvOnly,
                "inactive" => Direction::Inactive,
                _ => return Err(malformed(no, BAD)),
            };
            (id, Some(dir))
        }
    };
    let id: u8 = id
        .parse()
        .ok()
        .filter(|&id| id != 0)
        .ok_or(malformed(no, "a=extmap id must be 1-255"))?;
    let uri = rest
        .split_ascii_whitespace()
        .next()
        .ok_or(malformed(no, BAD))?;
    Ok(Extmap {
        id,
        uri: uri.to_owned(),
        direction,
    })
}

/// `<ssrc> <attribute>[:<value>]`.
fn parse_ssrc(v: &str, no: usize) -> Result<SsrcLine, SdpError> {
    const BAD: &str = "a=ssrc needs <ssrc> <attribute>[:<value>]";
    let (ssrc, rest) = v.split_once(' ').ok_or(malformed(no, BAD))?;
    let ssrc: u32 = ssrc.parse().map_err(|_| malformed(no, BAD))?;
    let (attribute, value) = rest.split_once(':').unwrap_or((rest, ""));
    if !is_token(attribute) {
        return Err(malformed(no, BAD));
    }
    Ok(SsrcLine {
        ssrc,
        attribute: attribute.to_owned(),
        value: value.to_owned(),
    })
}

/// `<rid> send|recv [<restrictions>]`.
fn parse_rid(v: &str, no: usize) -> Result<Rid, SdpError> {
    const BAD: &str = "a=rid needs <rid> send|recv [<restrictions>]";
    let mut parts = v.splitn(3, ' ');
    let id = parts.next().unwrap_or_default();
    if !valid_rid(id) {
        return Err(malformed(no, "invalid rid"));
    }
    let direction = match parts.next() {
        Some("send") => RidDirection::Send,
        Some("recv") => RidDirection::Recv,
        _ => return Err(malformed(no, BAD)),
    };
    let restrictions = parts.next().unwrap_or_default().trim().to_owned();
    Ok(Rid {
        id: id.to_owned(),
        direction,
        restrictions,
    })
}

/// `send <list> [recv <list>]` or the other order (RFC 8853).
fn parse_simulcast(v: &str, no: usize) -> Result<Simulcast, SdpError> {
    const BAD: &str = "a=simulcast needs send|recv <rid>[,<rid>][;<rid>...]";
    let mut simulcast = Simulcast::default();
    let (mut seen_send, mut seen_recv) = (false, false);
    let mut parts = v.split_ascii_whitespace();
    while let Some(dir) = parts.next() {
        let list = parts.next().ok_or(malformed(no, BAD))?;
        let (seen, target) = match dir {
            "send" => (&mut seen_send, &mut simulcast.send),
            "recv" => (&mut seen_recv, &mut simulcast.recv),
            _ => return Err(malformed(no, BAD)),
        };
        if *seen {
            return Err(malformed(no, BAD));
        }
        *seen = true;
        for stream in list.split(';') {
            let mut alternatives = Vec::new();
            for alt in stream.split(',') {
                let (id, paused) = match alt.strip_prefix('~') {
                    Some(id) => (id, true),
                    None => (alt, false),
                };
                if !valid_rid(id) {
                    return Err(malformed(no, "invalid rid in a=simulcast"));
                }
                alternatives.push(SimulcastRid {
                    id: id.to_owned(),
                    paused,
                });
            }
            target.push(alternatives);
        }
    }
    Ok(simulcast)
}

/// The WebRTC checks, then credentials resolved over the BUNDLE group.
fn finish(session: SessionRaw, mut sections: Vec<SectionRaw>) -> Result<Offer, SdpError> {
    let session_id = session
        .session_id
        .clone()
        .ok_or(malformed(0, "missing o= line"))?;
    for raw in &mut sections {
        raw.section.codecs = raw.codecs();
    }

    for (index, raw) in sections.iter().enumerate() {
        let s = &raw.section;
        if s.is_disabled() {
            continue;
        }
        if s.mid.is_empty() {
            return Err(SdpError::MissingMid { index });
        }
        if sections[..index].iter().any(|o| o.section.mid == s.mid) {
            return Err(SdpError::DuplicateMid { mid: s.mid.clone() });
        }
    }
    let is_av = |s: &MediaSection| !s.is_disabled() && s.kind.media_kind().is_some();
    if !sections.iter().any(|r| is_av(&r.section)) {
        return Err(SdpError::NoMedia);
    }
    let bundle = session.bundle.clone().ok_or(SdpError::NoBundle)?;
    for s in sections.iter().map(|r| &r.section).filter(|s| is_av(s)) {
        if !bundle.contains(&s.mid) {
            return Err(SdpError::NotBundled { mid: s.mid.clone() });
        }
        if s.protocol != WEBRTC_PROTOCOL {
            return Err(SdpError::UnsupportedProtocol {
                mid: s.mid.clone(),
                protocol: s.protocol.clone(),
            });
        }
        if !s.rtcp_mux {
            return Err(SdpError::NoRtcpMux { mid: s.mid.clone() });
        }
    }

    let bundled: Vec<&SectionRaw> = sections
        .iter()
        .filter(|r| !r.section.is_disabled() && bundle.contains(&r.section.mid))
        .collect();
    let Some(first) = bundled.first() else {
        // Unreachable: an audio/video section exists and is bundled.
        return Err(SdpError::NoBundle);
    };
    let first = Resolved::new(&first.transport, &session.transport);
    for other in bundled
        .iter()
        .skip(1)
        .map(|r| Resolved::new(&r.transport, &session.transport))
    {
        if first.conflicts(&other) {
            return Err(SdpError::BundleMismatch);
        }
    }
    let (Some(ice_ufrag), Some(ice_pwd)) = (first.ice_ufrag, first.ice_pwd) else {
        return Err(SdpError::MissingIceCredentials);
    };
    let fingerprint = first.fingerprint.ok_or(SdpError::MissingFingerprint)?;

    Ok(Offer {
        session_id,
        ice_ufrag: ice_ufrag.clone(),
        ice_pwd: ice_pwd.clone(),
        fingerprint: fingerprint.clone(),
        setup: first.setup.unwrap_or(Setup::Active),
        bundle,
        ice_lite: session.ice_lite,
        media: sections.into_iter().map(|r| r.section).collect(),
    })
}

/// A section's transport attributes with the session's as fallback.
struct Resolved<'a> {
    ice_ufrag: Option<&'a String>,
    ice_pwd: Option<&'a String>,
    fingerprint: Option<&'a String>,
    setup: Option<Setup>,
}

impl<'a> Resolved<'a> {
    fn new(media: &'a Transport, session: &'a Transport) -> Resolved<'a> {
        Resolved {
            ice_ufrag: media.ice_ufrag.as_ref().or(session.ice_ufrag.as_ref()),
            ice_pwd: media.ice_pwd.as_ref().or(session.ice_pwd.as_ref()),
            fingerprint: media.fingerprint().or(session.fingerprint()),
            setup: media.setup.or(session.setup),
        }
    }

    /// Whether a value present in both differs (absent values inherit).
    fn conflicts(&self, other: &Resolved<'_>) -> bool {
        fn differ<T: PartialEq>(a: Option<T>, b: Option<T>) -> bool {
            matches!((a, b), (Some(a), Some(b)) if a != b)
        }
        differ(self.ice_ufrag, other.ice_ufrag)
            || differ(self.ice_pwd, other.ice_pwd)
            || differ(
                self.fingerprint.map(|f| f.to_ascii_lowercase()),
                other.fingerprint.map(|f| f.to_ascii_lowercase()),
            )
            || differ(self.setup, other.setup)
    }
}
