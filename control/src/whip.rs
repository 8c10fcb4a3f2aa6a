//! WHIP (RFC 9725) publishing and WHEP subscribing on the control API.
//!
//! | method and path | token needs | answer |
//! |---|---|---|
//! | `POST /whip/{room}` | publish | 201 SDP answer, `Location: /whip/{room}/{id}` |
//! | `DELETE /whip/{room}/{id}` | publish | 200 |
//! | `POST /whep/{room}` | subscribe | 201 SDP answer, `Location: /whep/{room}/{id}` |
//! | `DELETE /whep/{room}/{id}` | subscribe | 200 |
//! | `POST /whep/{room}/{id}/sse` | subscribe, the session's identity | 201, `Location` of a new event stream ([`crate::whep_events`]) |
//! | `GET`, `DELETE /whep/{room}/{id}/sse/{stream}` | subscribe, the session's identity | 200 `text/event-stream`; 200 |
//! | `POST /whep/{room}/{id}/layer` | subscribe, the session's identity | 200: layer selection |
//! | `OPTIONS /whip/{room}`, `OPTIONS /whep/{room}` | no token | 204, `Accept-Post: application/sdp` |
//!
//! (`admin` covers every grant, room `*` every room; see [`crate::api`].)
//! Every `OPTIONS` request is answered by the API's CORS layer without a
//! token; [`endpoint_options`] turns that answer into a 204 with
//! `Accept-Post` on the endpoint URLs.
//!
//! # A session
//! The client `POST`s its SDP offer (`Content-Type: application/sdp`, at
//! most [`MAX_BODY_BYTES`](crate::error::MAX_BODY_BYTES)). The node parses it ([`sfu_core::sdp`]), picks
//! fresh ICE credentials (16-character ufrag, 32-character password), takes
//! the DTLS server role (`a=setup:passive`) unless the offer insists on
//! being passive, and creates a WebRTC endpoint on the room's worker with
//! the offer's ICE credentials and certificate fingerprint. The answer is
//! ICE-lite with one host candidate, the worker's advertised media address,
//! and the node's certificate fingerprint. The client then runs ICE checks
//! and the DTLS handshake against the worker, which derives the SRTP keys;
//! no media key ever travels over HTTP. `DELETE` on the `Location` ends the
//! session. Sessions also show up in, and can be deleted through,
//! `/v1/rooms/{room}/endpoints`.
//!
//! # WHIP (publish)
//! Every section the offer sends in becomes a track of the endpoint: its
//! first `a=ssrc` (RTX and FEC SSRCs excluded), its kind and the payload
//! type negotiated for it. The track's codec (VP8, H.264 or Opus) is
//! recorded so WHEP offers can be matched against it. Where the offer has
//! RED around Opus (`red/48000/2`, RFC 2198), the answer accepts it (listed
//! before Opus, so that Chrome sends it) and the track records its payload
//! type: the worker forwards RED to viewers that negotiated it and the
//! primary Opus blocks to the others.
//!
//! A section marked `a=content:slides` (RFC 4796) is a screen share: its
//! track (every layer, for simulcast) is allocated a subscriber's bandwidth
//! before any camera ([`sfu_core::router::TrackSource`]). Browsers do not
//! write the attribute themselves; a page that publishes a screen
//! (`getDisplayMedia`) adds the line after the video section's `a=mid` in
//! the offer text it POSTs (the local description can stay as the browser
//! wrote it, since the answer does not mention the attribute):
//! `offer.sdp.replace(/(a=mid:1\r\n)/, "$1a=content:slides\r\n")`.
//!
//! Simulcast offered with `a=rid` but without `a=ssrc` lines (the form
//! browsers use) is accepted when the section negotiates the
//! `urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id` header extension
//! (otherwise 422 `missing_ssrc`): each rid becomes a layer the worker
//! binds to an SSRC from the first authentic packet carrying that rid, and
//! each layer is then forwarded as a **separate producer** of the room (no
//! layer selection yet; RTX with `repaired-rid` is never bound). Subscribers
//! with `Subscription::All` (the JSON API's default) receive them. The
//! node records the codec negotiated for each rid, and a WHEP session is
//! offered the layers bound before its offer like any other producer (each
//! layer separately, after the publisher's `a=ssrc` tracks, in the order
//! the layers were bound); a layer bound later is a later producer and
//! needs a new offer.
//!
//! # WHEP (subscribe)
//! Each audio/video section of the offer that can receive gets one
//! producer of the room of its kind, in order: producers are handed out in
//! their creation order, each at most once per session, and a section
//! only gets a producer whose codec it offers (and, within one session,
//! the codec of the first producer of its kind, since the node rewrites
//! one payload type per kind). A section left without a producer is
//! answered `inactive`. The node learns the payload type the subscriber
//! uses for the producers' codec from a first, provisional answer, creates
//! the endpoint with that payload type per kind (forwarded packets are
//! rewritten to it) and an explicit subscription to the chosen producers,
//! then renders the final answer with the SSRCs of the endpoint's
//! consumers (`a=ssrc` with CNAME `sfu-{publisher}` and
//! `a=msid:sfu-{room}-{publisher} {kind}{slot}`, `{publisher}` being the
//! publishing endpoint's id): one msid stream per publisher, so the browser
//! puts a participant's audio and video in one `MediaStream` and keeps them
//! in sync. A later `PUT .../subscriptions` re-points a slot without a new
//! offer; its msid stays what the answer said.
//! If that answer cannot be built, the endpoint is removed again.
//!
//! Redundant audio (RED) is answered in a section whose producer sends RED
//! when the offer has it; the endpoint then takes RED with the offer's
//! payload type, but only if every audio section that receives media
//! negotiated RED with one number (a slot may later be re-pointed to
//! another producer): otherwise it gets each RED packet's primary Opus
//! block.
//!
//! Tracks of endpoints created through the JSON API declare no codec;
//! WHEP assumes VP8 for their video and Opus for their audio.
//!
//! A WHEP session is fixed at creation: producers that join the room
//! later (including simulcast layers bound after the offer) are **not**
//! added to it. To receive them, the player makes a new
//! offer (`POST /whep/{room}` again) and deletes its old session.
//!
//! # WHEP last-N slots
//! `POST /whep/{room}?mode=slots`, or any WHEP offer to a room with no
//! publisher yet, answers **every** receiving audio/video section as a
//! slot (`a=sendonly`, its own SSRC, CNAME and msid stream
//! `sfu-{room}-slotv{n}` / `sfu-{room}-slota{n}`, track `video{n}` /
//! `audio{n}`), and subscribes with
//! [`Subscription::Slots`]: the N video slots show the room's pinned
//! participants, then its most recent speakers, then other publishers in
//! join order; the M audio slots its loudest talkers. Slots are re-pointed
//! by the node as speakers change and publishers join or leave, without a
//! new offer (each switch asks the new publisher for a keyframe; a slot's
//! SSRC and numbering never change). The token's identity (`sub`, see
//! [`Claims::participant`]) is the viewer's participant: its own
//! publishers never fill its slots. Video slots are answered with VP8 (H.264
//! when the section lacks VP8) and audio with Opus: publishers of another
//! codec than a slot's are forwarded with the slot's payload type all the
//! same, so a room mixing video codecs needs the explicit mode. Pinning
//! and slot counts change with `PUT /v1/rooms/{room}/endpoints/{id}/subscriptions`
//! and `{"slots": {"video": N, "audio": M, "pinned": [...]}}`; a slot's
//! layer is capped with the router's `SetMaxLayer` per video slot.
//!
//! # WHEP extensions
//! Every WHEP answer carries the draft's two `Link` headers: per-session
//! server-sent events (`active`, `inactive`, `layers`, `viewercount`, and
//! the node's `dominantspeaker`, `activespeakers`, `slots`) and video
//! layer selection, mapped onto the slot's `SetMaxLayer` cap; see
//! [`crate::whep_events`].
//!
//! WHIP publishers' `ssrc-audio-level` extension (RFC 6464), when
//! negotiated, feeds the room's dominant speaker detection.
//!
//! # Not supported
//! Trickle ICE and ICE restarts: the answer carries the node's only
//! candidate and `a=end-of-candidates`, no `Accept-Patch` header is sent,
//! and `PATCH` on a session is answered 405 with `Allow: DELETE` (RFC 9725
//! §4.1 reserves the other methods; RFC 9110 §15.5.6). Since the node is
//! ICE-lite and learns the client's address from its checks, candidates
//! the client trickles are not needed. No `ETag` is sent, as no ICE
//! session can be restarted. STUN/TURN servers (`Link` headers) are not
//! offered: the node must be directly reachable.
//!
//! # Errors
//! Every refusal is `{"error": "...", "code": "..."}` and changes nothing:
//! 401/403 for the token, 404 for an unknown room or session, 415 for
//! another content type, 413 for a body over [`MAX_BODY_BYTES`](crate::error::MAX_BODY_BYTES), 400 for
//! an offer that is not valid SDP or lacks what WebRTC requires (the code
//! is [`SdpError::as_str`], e.g. `missing_fingerprint`), 422 for a valid
//! offer the node cannot serve (no supported codec, a section without
//! `a=ssrc` or `a=rid`, simulcast without the `rtp-stream-id` extension,
//! ICE-lite offer), 409 for an SSRC already in use on the node.
//!
//! # Metrics
//! `sfu_webrtc_sessions_total{protocol="whip|whep",event="created|ended"}`
//! ([`crate::metrics`]); ICE and DTLS failures are counted by the workers
//! as drop reasons (`stun_auth_failed`, `dtls_failed`, ...).

use std::collections::HashSet;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use rand::Rng as _;
use rand::distr::{Alphanumeric, SampleString as _};
use sfu_core::dtls::{DtlsRole, Fingerprint};
use sfu_core::router::{
    ConsumerInfo, EndpointId, IceCredentials, MediaKind, RidTrack, Role, RtxPayloadTypes,
    RtxStream, Subscription, TrackConfig, TrackSource, WebrtcTransport,
};
use sfu_core::sdp::{
    self, AnswerParams, CodecChoice, Intent, MediaSection, Offer, OutStream, SdpError, Setup,
};

use crate::auth::{AuthError, Claims, Grant, Need};
use crate::error::ApiError;
use crate::handler::{ApiState, blocking};
use crate::state::{
    AppState, NewWebrtcEndpoint, Producer, RoomContext, Session, validate_room_name,
};
use crate::whep_events;

/// The media type of offers and answers.
pub const SDP_CONTENT_TYPE: &str = "application/sdp";

/// Length of the node's ICE username fragments (RFC 8839: at least 4).
pub const ICE_UFRAG_LEN: usize = 16;

/// Length of the node's ICE passwords (RFC 8839: at least 22).
pub const ICE_PWD_LEN: usize = 32;

/// The header extension that carries a simulcast layer's `rid` (RFC 8852).
const RTP_STREAM_ID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id";

/// The header extension that names the layer an RTX packet repairs
/// (RFC 8852).
const REPAIRED_RTP_STREAM_ID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id";

/// The RFC 6464 client-to-mixer audio level extension.
const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";

/// The publisher of a last-N slot's placeholder [`Producer`] (no real
/// endpoint has it: endpoint ids count up from 1).
const SLOT_PUBLISHER: EndpointId = EndpointId(u64::MAX);

/// The prefix of the CNAME announced for the streams the node sends
/// (`sfu-{publisher id}`).
pub const CNAME: &str = "sfu";

/// The WHIP/WHEP routes; merge them before the authentication layer.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/whip/{room}", post(whip_post))
        .route("/whip/{room}/{id}", delete(whip_delete))
        .route("/whep/{room}", post(whep_post))
        .route("/whep/{room}/{id}", delete(whep_delete))
        .route("/whep/{room}/{id}/sse", post(sse_create))
        .route(
            "/whep/{room}/{id}/sse/{stream}",
            get(sse_get).delete(sse_delete),
        )
        .route("/whep/{room}/{id}/layer", post(layer_post))
}

/// Whether `path` is a WHIP/WHEP endpoint URL (`/whip/{room}`, `/whep/{room}`).
fn is_endpoint_path(path: &str) -> bool {
    let mut parts = path.split('/');
    matches!(
        (parts.next(), parts.next(), parts.next(), parts.next()),
        (Some(""), Some("whip" | "whep"), Some(room), None) if !room.is_empty()
    )
}

/// Middleware for `OPTIONS` on a WHIP/WHEP endpoint URL (RFC 9725 §4.2):
/// 204 with `Accept-Post: application/sdp`, without a token. Layer it
/// outside the CORS layer, which answers every `OPTIONS` request itself
/// (with the CORS headers a preflight needs); this only adjusts that answer.
pub async fn endpoint_options(req: Request, next: Next) -> Response {
    let endpoint = req.method() == Method::OPTIONS && is_endpoint_path(req.uri().path());
    let mut response = next.run(req).await;
    if endpoint && response.status().is_success() {
        *response.status_mut() = StatusCode::NO_CONTENT;
        response.headers_mut().insert(
            HeaderName::from_static("accept-post"),
            HeaderValue::from_static(SDP_CONTENT_TYPE),
        );
    }
    response
}

/// Why a WHIP/WHEP request was refused.
#[derive(Debug)]
pub enum WhipError {
    /// An error of the API (token, unknown room, worker...).
    Api(ApiError),
    /// The body is not `application/sdp` (415).
    UnsupportedMediaType,
    /// The offer is not valid SDP or lacks what WebRTC needs (400).
    BadOffer(SdpError),
    /// The offer's fingerprint names an unsupported hash (400).
    BadFingerprint,
    /// A valid offer the node cannot serve (422).
    Unsupported {
        /// Stable code.
        code: &'static str,
        /// Message for the client.
        message: String,
    },
}

impl WhipError {
    /// The HTTP status of the answer.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Api(e) => e.status(),
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::BadOffer(_) | Self::BadFingerprint => StatusCode::BAD_REQUEST,
            Self::Unsupported { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        }
    }

    /// The stable `code` of the answer.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Api(e) => e.code(),
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::BadOffer(e) => e.as_str(),
            Self::BadFingerprint => "bad_fingerprint",
            Self::Unsupported { code, .. } => code,
        }
    }

    /// An SDP error met while answering: the caller's parameters are ours
    /// (500); everything else is an offer the node cannot serve (422).
    fn from_answer(e: SdpError) -> Self {
        match e {
            SdpError::InvalidParam(_) | SdpError::IntentMismatch { .. } => {
                Self::Api(ApiError::Internal(format!("answer: {e}")))
            }
            e => Self::Unsupported {
                code: e.as_str(),
                message: e.to_string(),
            },
        }
    }
}

impl From<ApiError> for WhipError {
    fn from(e: ApiError) -> Self {
        Self::Api(e)
    }
}

impl IntoResponse for WhipError {
    fn into_response(self) -> Response {
        let message = match &self {
            Self::Api(_) => String::new(),
            Self::UnsupportedMediaType => {
                format!("the offer must be sent as Content-Type: {SDP_CONTENT_TYPE}")
            }
            Self::BadOffer(e) => e.to_string(),
            Self::BadFingerprint => {
                "the offer's a=fingerprint names an unsupported hash function".to_owned()
            }
            Self::Unsupported { message, .. } => message.clone(),
        };
        match self {
            Self::Api(e) => e.into_response(),
            other => {
                let body = serde_json::json!({ "error": message, "code": other.code() });
                (other.status(), Json(body)).into_response()
            }
        }
    }
}

/// Checks the token's claims (set by the authentication layer) for `need`
/// in `room`.
fn authorize(req: &Request, room: &str, need: Need) -> Result<(), WhipError> {
    let claims = req
        .extensions()
        .get::<Claims>()
        .ok_or(ApiError::Auth(AuthError::Missing))?;
    claims
        .authorize(Some(room), need)
        .map_err(|e| WhipError::Api(ApiError::Auth(e)))
}

/// The participant id of the request's token identity, if any.
fn participant(req: &Request) -> Option<u64> {
    req.extensions()
        .get::<Claims>()
        .and_then(Claims::participant)
}

/// Whether the request asks for last-N slots: `?mode=slots`.
fn wants_slots(req: &Request) -> bool {
    req.uri()
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv == "mode=slots"))
}

/// Whether the request's `Content-Type` is `application/sdp` (parameters
/// allowed, case-insensitive).
fn is_sdp(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case(SDP_CONTENT_TYPE))
}

/// Checks the grant and content type, reads and parses the offer.
async fn read_offer(req: Request, room: &str, need: Need) -> Result<Offer, WhipError> {
    authorize(&req, room, need)?;
    validate_room_name(room)?;
    if !is_sdp(req.headers()) {
        return Err(WhipError::UnsupportedMediaType);
    }
    let body = Bytes::from_request(req, &()).await.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge
        } else {
            ApiError::BadRequest(e.body_text())
        }
    })?;
    let text = std::str::from_utf8(&body).map_err(|_| {
        WhipError::BadOffer(SdpError::Malformed {
            line: 0,
            reason: "the offer is not UTF-8",
        })
    })?;
    sdp::parse_offer(text).map_err(WhipError::BadOffer)
}

/// The node's side of a session: ICE credentials, DTLS role, fingerprints.
#[derive(Debug, Clone)]
struct Local {
    ufrag: String,
    pwd: String,
    setup: Setup,
    fingerprint: String,
    session_id: u64,
}

impl Local {
    fn new(offer: &Offer, state: &AppState) -> Self {
        let mut rng = rand::rng();
        Self {
            ufrag: Alphanumeric.sample_string(&mut rng, ICE_UFRAG_LEN),
            pwd: Alphanumeric.sample_string(&mut rng, ICE_PWD_LEN),
            setup: Setup::answer_for(offer.setup),
            fingerprint: state.dtls_cert().fingerprint().to_string(),
            // o= session ids are at most 63 bits (RFC 8866 §5.2 suggests NTP-like values).
            session_id: rng.random_range(1..1u64 << 62),
        }
    }

    fn params(&self, candidate: std::net::SocketAddr) -> AnswerParams<'_> {
        AnswerParams {
            ice_ufrag: &self.ufrag,
            ice_pwd: &self.pwd,
            fingerprint: &self.fingerprint,
            setup: self.setup,
            candidate,
            session_id: self.session_id,
        }
    }

    /// The worker's transport for a peer that offered `offer`.
    fn transport(
        &self,
        offer: &Offer,
        remote_fingerprint: Fingerprint,
        video_payload_type: Option<u8>,
        audio_payload_type: Option<u8>,
    ) -> WebrtcTransport {
        WebrtcTransport {
            ice: IceCredentials {
                local_ufrag: self.ufrag.clone(),
                local_pwd: self.pwd.clone(),
                remote_ufrag: offer.ice_ufrag.clone(),
                remote_pwd: offer.ice_pwd.clone(),
            },
            dtls_role: match self.setup {
                Setup::Active => DtlsRole::Client,
                Setup::Passive | Setup::Actpass => DtlsRole::Server,
            },
            remote_fingerprint,
            video_payload_type,
            audio_payload_type,
            rid_tracks: Vec::new(),
            rid_extension: None,
            twcc_extension: None,
            repaired_rid_extension: None,
            twcc_send_extension: None,
            audio_level_extension: None,
        }
    }
}

/// The 201 answer of a created session.
fn created(kind: &str, room: &str, id: &str, sdp: String) -> Response {
    let location = format!("/{kind}/{room}/{id}");
    let mut response = (StatusCode::CREATED, sdp).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(SDP_CONTENT_TYPE),
    );
    // Room names and ids are URL-safe ASCII, so this cannot fail.
    if let Ok(value) = HeaderValue::from_str(&location) {
        headers.insert(header::LOCATION, value);
    }
    response
}

fn path<T>(p: Result<Path<T>, PathRejection>) -> Result<T, WhipError> {
    p.map(|Path(t)| t)
        .map_err(|e| WhipError::Api(ApiError::BadRequest(e.body_text())))
}

fn remote_fingerprint(offer: &Offer) -> Result<Fingerprint, WhipError> {
    Fingerprint::parse(&offer.fingerprint).map_err(|_| WhipError::BadFingerprint)
}

/// `POST /whip/{room}`.
async fn whip_post(
    State(state): State<Arc<AppState>>,
    room: Result<Path<String>, PathRejection>,
    req: Request,
) -> Result<Response, WhipError> {
    let room = path(room)?;
    let participant = participant(&req);
    let offer = read_offer(req, &room, Need::All(&[Grant::Publish])).await?;
    let remote = remote_fingerprint(&offer)?;
    let local = Local::new(&offer, &state);
    let name = room.clone();
    let (id, sdp) = blocking(&state, move |s| {
        s.create_webrtc_endpoint(
            &room,
            |ctx| {
                let (mut new, sdp) = plan_publish(&offer, &local, remote, ctx)?;
                new.participant = participant;
                Ok::<_, WhipError>((new, sdp))
            },
            |sdp, _| Ok(sdp),
        )
    })
    .await?;
    tracing::info!(room = %name, endpoint = %id, "WHIP session created");
    Ok(created("whip", &name, &id, sdp))
}

/// What a publisher's section shows: a screen share when the offer marks
/// it `a=content:slides` (RFC 4796), a camera otherwise. The bandwidth
/// allocator serves screen shares first.
fn track_source(n: &sdp::Negotiated) -> TrackSource {
    if n.slides {
        TrackSource::Screen
    } else {
        TrackSource::Camera
    }
}

/// The answer and the endpoint of a WHIP publisher.
fn plan_publish(
    offer: &Offer,
    local: &Local,
    remote: Fingerprint,
    ctx: &RoomContext,
) -> Result<(NewWebrtcEndpoint, String), WhipError> {
    let answer = sdp::answer(offer, &local.params(ctx.media), &Intent::Publish)
        .map_err(WhipError::from_answer)?;
    let mut tracks = Vec::new();
    let mut rid_tracks = Vec::new();
    let mut rid_codecs = Vec::new();
    let mut rid_extension = None;
    let mut repaired_rid_extension = None;
    // Each simulcast section is one track of layers (listed in the offer's
    // order, which browsers give lowest quality first), numbered by section.
    for (group, n) in (0u16..).zip(answer.sections.iter().filter(|n| n.accepted)) {
        let Some(&ssrc) = n.remote_ssrcs.first() else {
            if n.rids.is_empty() {
                return Err(WhipError::Unsupported {
                    code: "missing_ssrc",
                    message: format!(
                        "media section {} has no a=ssrc line and no a=rid; the node needs the publisher's SSRCs",
                        n.mid
                    ),
                });
            }
            let Some(id) = n
                .extmap
                .iter()
                .find(|(_, uri)| uri == RTP_STREAM_ID_URI)
                .map(|&(id, _)| id)
            else {
                return Err(WhipError::Unsupported {
                    code: "missing_ssrc",
                    message: "simulcast needs the rtp-stream-id header extension".to_owned(),
                });
            };
            // One extension id per endpoint: the router reads one.
            if rid_extension.is_some_and(|e| e != id) {
                return Err(WhipError::Unsupported {
                    code: "missing_ssrc",
                    message: "simulcast sections use different rtp-stream-id extension ids"
                        .to_owned(),
                });
            }
            rid_extension = Some(id);
            // RTX of a layer names it with repaired-rid; without that
            // extension its RTX SSRC could not be told apart.
            let repaired = n
                .extmap
                .iter()
                .find(|(_, uri)| uri == REPAIRED_RTP_STREAM_ID_URI)
                .map(|&(id, _)| id);
            if repaired.is_some() && repaired_rid_extension.is_none() {
                repaired_rid_extension = repaired;
            }
            let rtx_payload_type = n
                .rtx_payload_type
                .filter(|_| repaired.is_some() && repaired == repaired_rid_extension);
            rid_tracks.extend(n.rids.iter().map(|rid| RidTrack {
                rid: rid.clone(),
                kind: n.kind,
                payload_type: n.payload_type,
                rtx_payload_type,
                codec: core_codec(n.codec),
                group,
                source: track_source(n),
            }));
            rid_codecs.extend(n.rids.iter().map(|rid| (rid.clone(), n.codec)));
            continue;
        };
        // Its RTX stream, from `a=ssrc-group:FID <ssrc> <rtx>`.
        let rtx = n.rtx_payload_type.and_then(|payload_type| {
            n.rtx_ssrcs
                .iter()
                .find(|&&(media, _)| media == ssrc)
                .map(|&(_, rtx)| RtxStream {
                    ssrc: rtx,
                    payload_type,
                })
        });
        let track = TrackConfig {
            kind: n.kind,
            ssrc,
            payload_type: n.payload_type,
            rtx,
            codec: core_codec(n.codec),
            layer_of: None,
            red_payload_type: n.red_payload_type,
            source: track_source(n),
        };
        tracks.push((track, n.codec));
    }
    let mut transport = local.transport(offer, remote, None, None);
    transport.rid_tracks = rid_tracks;
    transport.rid_extension = rid_extension;
    transport.repaired_rid_extension = repaired_rid_extension;
    // BUNDLE: one transport, so one transport-wide numbering; the first
    // accepted section's id is the endpoint's.
    transport.twcc_extension = answer
        .sections
        .iter()
        .filter(|n| n.accepted)
        .flat_map(|n| &n.extmap)
        .find(|(_, uri)| uri == sdp::TRANSPORT_WIDE_CC_URI)
        .map(|&(id, _)| id);
    // The audio level of its audio sections (one id per transport, as above).
    transport.audio_level_extension = answer
        .sections
        .iter()
        .filter(|n| n.accepted && n.kind == MediaKind::Audio)
        .flat_map(|n| &n.extmap)
        .find(|(_, uri)| uri == AUDIO_LEVEL_URI)
        .map(|&(id, _)| id);
    let new = NewWebrtcEndpoint {
        session: Session::Whip,
        role: Role::Publish,
        tracks,
        rid_codecs,
        subscription: Subscription::default(),
        rtx_payload_types: RtxPayloadTypes::default(),
        participant: None,
        red_payload_type: None,
        transport,
    };
    Ok((new, answer.sdp))
}

/// `DELETE /whip/{room}/{id}`.
async fn whip_delete(
    State(state): State<Arc<AppState>>,
    params: Result<Path<(String, String)>, PathRejection>,
    req: Request,
) -> Result<StatusCode, WhipError> {
    let (room, id) = path(params)?;
    authorize(&req, &room, Need::All(&[Grant::Publish]))?;
    blocking(&state, move |s| s.delete_session(&room, &id, Session::Whip)).await?;
    Ok(StatusCode::OK)
}

/// `POST /whep/{room}`.
async fn whep_post(
    State(state): State<Arc<AppState>>,
    room: Result<Path<String>, PathRejection>,
    req: Request,
) -> Result<Response, WhipError> {
    let room = path(room)?;
    let participant = participant(&req);
    let slots = wants_slots(&req);
    let offer = read_offer(req, &room, Need::All(&[Grant::Subscribe])).await?;
    let remote = remote_fingerprint(&offer)?;
    let local = Local::new(&offer, &state);
    let name = room.clone();
    let (id, (sdp, sections)) = blocking(&state, move |s| {
        s.create_webrtc_endpoint(
            &room,
            |ctx| {
                let slots = slots || ctx.producers.is_empty();
                let (mut new, plan) = plan_subscribe(offer, local, remote, &room, ctx, slots)?;
                new.participant = participant;
                Ok::<_, WhipError>((new, plan))
            },
            finish_subscribe,
        )
    })
    .await?;
    state.whep_events().register(&id, &name, sections);
    tracing::info!(room = %name, endpoint = %id, "WHEP session created");
    let mut response = created("whep", &name, &id, sdp);
    let links = [
        format!(
            "</whep/{name}/{id}/sse>; rel=\"{}\"; events=\"{}\"",
            whep_events::SSE_REL,
            whep_events::event_names()
        ),
        format!(
            "</whep/{name}/{id}/layer>; rel=\"{}\"",
            whep_events::LAYER_REL
        ),
    ];
    for link in links {
        // Room names and ids are URL-safe ASCII, so this cannot fail.
        if let Ok(value) = HeaderValue::from_str(&link) {
            response.headers_mut().append(header::LINK, value);
        }
    }
    Ok(response)
}

/// What a WHEP session prepared before its endpoint exists.
struct SubscribePlan {
    offer: Offer,
    local: Local,
    candidate: std::net::SocketAddr,
    room: String,
    /// Per audio/video section of the offer: the kind, slot and codec of
    /// the consumer it carries, if any.
    slots: Vec<Option<(Producer, u16)>>,
    /// Payload types of the provisional answer, per kind.
    video_pt: Option<u8>,
    audio_pt: Option<u8>,
}

/// Whether `section` offers `codec`, roughly
/// ([`CodecChoice::roughly_matches`]; the answer checks H.264 profiles exactly).
fn offers(section: &MediaSection, codec: CodecChoice) -> bool {
    section.codecs.iter().any(|c| codec.roughly_matches(c))
}

/// Assigns producers to the offer's sections (see the module docs).
fn assign(offer: &Offer, producers: &[Producer]) -> Vec<Option<Producer>> {
    let mut used: HashSet<u32> = HashSet::new();
    let codec_of = |kind: MediaKind, assigned: &[Option<Producer>]| {
        assigned
            .iter()
            .flatten()
            .find(|p| p.kind == kind)
            .map(|p| p.codec)
    };
    let mut assigned: Vec<Option<Producer>> = Vec::new();
    for section in &offer.media {
        let Some(kind) = section.kind.media_kind() else {
            continue;
        };
        if section.is_disabled() || !section.direction.receives() {
            assigned.push(None);
            continue;
        }
        let fixed = codec_of(kind, &assigned);
        let pick = producers
            .iter()
            .find(|p| {
                p.kind == kind
                    && !used.contains(&p.ssrc)
                    && fixed.is_none_or(|c| c == p.codec)
                    && offers(section, p.codec)
            })
            .copied();
        if let Some(p) = pick {
            used.insert(p.ssrc);
        }
        assigned.push(pick);
    }
    assigned
}

/// The subscriber's payload type for `kind` in a (provisional) answer;
/// every sending section of a kind must agree, as the node rewrites one
/// payload type per kind.
fn payload_type(answer: &sdp::Answer, kind: MediaKind) -> Result<Option<u8>, WhipError> {
    let mut pts = answer
        .sections
        .iter()
        .filter(|n| n.accepted && n.kind == kind)
        .map(|n| n.payload_type);
    let first = pts.next();
    if let Some(pt) = first
        && pts.any(|other| other != pt)
    {
        return Err(WhipError::Unsupported {
            code: "payload_type_mismatch",
            message: format!(
                "the offer's {} sections use different payload types for the same codec",
                kind.as_str()
            ),
        });
    }
    Ok(first)
}

/// The router's codec for a negotiated one (keyframe detection).
pub fn core_codec(c: CodecChoice) -> sfu_core::codec::Codec {
    match c {
        CodecChoice::Opus => sfu_core::codec::Codec::Opus,
        CodecChoice::Vp8 => sfu_core::codec::Codec::Vp8,
        CodecChoice::H264 => sfu_core::codec::Codec::H264,
    }
}

/// The subscriber's RTX payload type for `kind` in a (provisional)
/// answer, when it accepted RTX; every sending section of a kind must
/// agree, as the node sends one per kind.
fn rtx_payload_type(answer: &sdp::Answer, kind: MediaKind) -> Result<Option<u8>, WhipError> {
    let mut pts = answer
        .sections
        .iter()
        .filter(|n| n.accepted && n.kind == kind)
        .map(|n| n.rtx_payload_type);
    let first = pts.next().flatten();
    if pts.any(|other| other != first) {
        return Err(WhipError::Unsupported {
            code: "payload_type_mismatch",
            message: format!(
                "the offer's {} sections differ in their rtx payload types",
                kind.as_str()
            ),
        });
    }
    Ok(first)
}

/// Last-N slots for every receiving section of the offer: video slots
/// with VP8 (or H.264 when the section lacks VP8), audio slots with Opus;
/// placeholder producers ([`SLOT_PUBLISHER`]) carry the kind and codec.
fn assign_slots(offer: &Offer) -> Vec<Option<Producer>> {
    offer
        .media
        .iter()
        .filter_map(|section| Some((section, section.kind.media_kind()?)))
        .map(|(section, kind)| {
            if section.is_disabled() || !section.direction.receives() {
                return None;
            }
            let choices: &[CodecChoice] = match kind {
                MediaKind::Video => &[CodecChoice::Vp8, CodecChoice::H264],
                MediaKind::Audio => &[CodecChoice::Opus],
            };
            let codec = choices.iter().copied().find(|&c| offers(section, c))?;
            Some(Producer {
                publisher: SLOT_PUBLISHER,
                kind,
                ssrc: 0,
                codec,
                // A slot shows whichever producer speaks: RED only unwrapped.
                red: false,
            })
        })
        .collect()
}

/// The subscriber's RED payload type in a (provisional) answer: the one
/// every audio section that receives media negotiated, or `None` when one
/// of them did not (or they differ). The router sends RED with one number
/// per subscriber, and a slot may be re-pointed to a RED producer later,
/// so a section without RED must never get it.
fn red_payload_type(answer: &sdp::Answer) -> Option<u8> {
    let mut pts = answer
        .sections
        .iter()
        .filter(|n| n.accepted && n.kind == MediaKind::Audio)
        .map(|n| n.red_payload_type);
    let first = pts.next().flatten()?;
    pts.all(|pt| pt == Some(first)).then_some(first)
}

/// The stream slot `slot` of a subscriber sends for producer `p`: CNAME
/// and msid stream per publisher, track per (kind, slot); for a last-N
/// slot, CNAME and msid stream `sfu-{room}-slot{n}` per slot (`n` counts
/// video slots first, then audio ones, as the consumers do).
fn out_stream(room: &str, p: &Producer, slot: u16, ssrc: u32, rtx_ssrc: Option<u32>) -> OutStream {
    if p.publisher == SLOT_PUBLISHER {
        let n = match p.kind {
            MediaKind::Video => format!("v{slot}"),
            MediaKind::Audio => format!("a{slot}"),
        };
        return OutStream {
            ssrc,
            cname: format!("{CNAME}-{room}-slot{n}"),
            stream_id: format!("sfu-{room}-slot{n}"),
            track_id: format!("{}{slot}", p.kind.as_str()),
            codec: p.codec,
            rtx_ssrc,
            red: p.red,
        };
    }
    let publisher = format!("{:016x}", p.publisher.0);
    OutStream {
        ssrc,
        cname: format!("{CNAME}-{publisher}"),
        stream_id: format!("sfu-{room}-{publisher}"),
        track_id: format!("{}{slot}", p.kind.as_str()),
        codec: p.codec,
        rtx_ssrc,
        red: p.red,
    }
}

fn plan_subscribe(
    offer: Offer,
    local: Local,
    remote: Fingerprint,
    room: &str,
    ctx: &RoomContext,
    slots_mode: bool,
) -> Result<(NewWebrtcEndpoint, SubscribePlan), WhipError> {
    let assigned = if slots_mode {
        assign_slots(&offer)
    } else {
        assign(&offer, &ctx.producers)
    };
    let (mut video, mut audio) = (Vec::new(), Vec::new());
    let mut slots = Vec::with_capacity(assigned.len());
    let mut provisional = Vec::with_capacity(assigned.len());
    for (i, p) in assigned.iter().enumerate() {
        let Some(p) = p else {
            slots.push(None);
            provisional.push(None);
            continue;
        };
        let list = match p.kind {
            MediaKind::Video => &mut video,
            MediaKind::Audio => &mut audio,
        };
        let slot = u16::try_from(list.len()).map_err(|_| WhipError::Unsupported {
            code: "too_many_sections",
            message: "too many media sections".to_owned(),
        })?;
        list.push(p.ssrc);
        slots.push(Some((*p, slot)));
        // Placeholder SSRCs: only the negotiated payload types matter here
        // (an RTX SSRC lets the answer accept RTX where offered).
        let placeholder = u32::try_from(i + 1).unwrap_or(u32::MAX);
        provisional.push(Some(out_stream(
            room,
            p,
            slot,
            placeholder,
            Some(placeholder | 0x8000_0000),
        )));
    }
    let answer = sdp::answer(
        &offer,
        &local.params(ctx.media),
        &Intent::Subscribe(provisional),
    )
    .map_err(WhipError::from_answer)?;
    let video_pt = payload_type(&answer, MediaKind::Video)?;
    let audio_pt = payload_type(&answer, MediaKind::Audio)?;
    let rtx_payload_types = RtxPayloadTypes {
        video: rtx_payload_type(&answer, MediaKind::Video)?,
        audio: rtx_payload_type(&answer, MediaKind::Audio)?,
    };
    // BUNDLE: one transport, one egress numbering (the first sending
    // section's id).
    let mut transport = local.transport(&offer, remote, video_pt, audio_pt);
    transport.twcc_send_extension = answer
        .sections
        .iter()
        .filter(|n| n.accepted)
        .flat_map(|n| &n.extmap)
        .find(|(_, uri)| uri == sdp::TRANSPORT_WIDE_CC_URI)
        .map(|&(id, _)| id);
    let red_payload_type = red_payload_type(&answer);
    let new = NewWebrtcEndpoint {
        session: Session::Whep,
        role: Role::Subscribe,
        tracks: Vec::new(),
        rid_codecs: Vec::new(),
        subscription: if slots_mode {
            // The consumers' numbering is video slots, then audio slots.
            let count = |l: &Vec<u32>| u16::try_from(l.len()).unwrap_or(u16::MAX);
            Subscription::Slots {
                video: count(&video),
                audio: count(&audio),
                pinned: Vec::new(),
                exclude: None,
            }
        } else {
            Subscription::Explicit { video, audio }
        },
        rtx_payload_types,
        participant: None,
        red_payload_type,
        transport,
    };
    let plan = SubscribePlan {
        offer,
        local,
        candidate: ctx.media,
        room: room.to_owned(),
        slots,
        video_pt,
        audio_pt,
    };
    Ok((new, plan))
}

/// The final WHEP answer, with the consumers' SSRCs, and what each m-line
/// carries (for the session's events and layer selection).
fn finish_subscribe(
    plan: SubscribePlan,
    consumers: &[ConsumerInfo],
) -> Result<(String, Vec<whep_events::Section>), WhipError> {
    let mut streams = Vec::with_capacity(plan.slots.len());
    for slot in &plan.slots {
        let Some((p, slot)) = *slot else {
            streams.push(None);
            continue;
        };
        let kind = p.kind;
        let consumer = consumers
            .iter()
            .find(|c| c.kind == kind && c.slot == slot)
            .ok_or_else(|| {
                ApiError::Internal(format!(
                    "the worker made no {} consumer for slot {slot}",
                    kind.as_str()
                ))
            })?;
        streams.push(Some(out_stream(
            &plan.room,
            &p,
            slot,
            consumer.ssrc,
            consumer.rtx_ssrc,
        )));
    }
    let answer = sdp::answer(
        &plan.offer,
        &plan.local.params(plan.candidate),
        &Intent::Subscribe(streams),
    )
    .map_err(WhipError::from_answer)?;
    if payload_type(&answer, MediaKind::Video)? != plan.video_pt
        || payload_type(&answer, MediaKind::Audio)? != plan.audio_pt
    {
        return Err(ApiError::Internal("the answer's payload types changed".into()).into());
    }
    // `plan.slots` has one entry per audio/video m-line, in order.
    let mlines = plan
        .offer
        .media
        .iter()
        .enumerate()
        .filter(|(_, m)| m.kind.media_kind().is_some())
        .map(|(i, _)| i);
    let sections = mlines
        .zip(&plan.slots)
        .filter_map(|(mline, slot)| {
            slot.map(|(p, slot)| whep_events::Section {
                mline,
                kind: p.kind,
                slot,
            })
        })
        .collect();
    Ok((answer.sdp, sections))
}

/// `DELETE /whep/{room}/{id}`.
async fn whep_delete(
    State(state): State<Arc<AppState>>,
    params: Result<Path<(String, String)>, PathRejection>,
    req: Request,
) -> Result<StatusCode, WhipError> {
    let (room, id) = path(params)?;
    authorize(&req, &room, Need::All(&[Grant::Subscribe]))?;
    blocking(&state, move |s| s.delete_session(&room, &id, Session::Whep)).await?;
    Ok(StatusCode::OK)
}

/// Checks that the request may use WHEP session `id` of `room`: the
/// session's grant for the room, the session exists there, and a session
/// of a token identity is used by that identity (or an admin).
fn authorize_session(
    req: &Request,
    state: &AppState,
    room: &str,
    id: &str,
) -> Result<(), WhipError> {
    authorize(req, room, Need::All(&[Grant::Subscribe]))?;
    let (_, _, owner) = state.whep_session(room, id)?;
    let claims = req
        .extensions()
        .get::<Claims>()
        .ok_or(ApiError::Auth(AuthError::Missing))?;
    if owner.is_some()
        && claims.participant() != owner
        && claims.authorize(Some(room), Need::Admin).is_err()
    {
        return Err(ApiError::Auth(AuthError::WrongIdentity).into());
    }
    Ok(())
}

/// Reads a JSON body of at most [`MAX_BODY_BYTES`](crate::error::MAX_BODY_BYTES).
async fn read_body(req: Request) -> Result<Bytes, WhipError> {
    Bytes::from_request(req, &()).await.map_err(|e| {
        WhipError::Api(if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge
        } else {
            ApiError::BadRequest(e.body_text())
        })
    })
}

/// `POST /whep/{room}/{id}/sse`: creates an event stream of the session.
async fn sse_create(
    State(state): State<Arc<AppState>>,
    params: Result<Path<(String, String)>, PathRejection>,
    req: Request,
) -> Result<Response, WhipError> {
    let (room, id) = path(params)?;
    authorize_session(&req, &state, &room, &id)?;
    let mask = whep_events::parse_event_list(&read_body(req).await?)?;
    let stream = state.whep_events().create_stream(&id, mask)?;
    let location = format!("/whep/{room}/{id}/sse/{stream}");
    let mut response = StatusCode::CREATED.into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

/// `GET /whep/{room}/{id}/sse/{stream}`: the stream's events.
async fn sse_get(
    State(state): State<Arc<AppState>>,
    params: Result<Path<(String, String, String)>, PathRejection>,
    req: Request,
) -> Result<Response, WhipError> {
    let (room, id, stream) = path(params)?;
    authorize_session(&req, &state, &room, &id)?;
    let body = blocking(&state, move |s| whep_events::open(s, &room, &id, &stream)).await?;
    let mut response = (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
            // Reverse proxies (nginx) would otherwise buffer the stream.
            (HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        body,
    )
        .into_response();
    response.extensions_mut().insert(crate::http::Streaming);
    Ok(response)
}

/// `DELETE /whep/{room}/{id}/sse/{stream}`.
async fn sse_delete(
    State(state): State<Arc<AppState>>,
    params: Result<Path<(String, String, String)>, PathRejection>,
    req: Request,
) -> Result<StatusCode, WhipError> {
    let (room, id, stream) = path(params)?;
    authorize_session(&req, &state, &room, &id)?;
    state.whep_events().delete_stream(&id, &stream)?;
    Ok(StatusCode::OK)
}

/// `POST /whep/{room}/{id}/layer`: the draft's video layer selection.
async fn layer_post(
    State(state): State<Arc<AppState>>,
    params: Result<Path<(String, String)>, PathRejection>,
    req: Request,
) -> Result<StatusCode, WhipError> {
    let (room, id) = path(params)?;
    authorize_session(&req, &state, &room, &id)?;
    let request = whep_events::parse_layer_request(&read_body(req).await?)?;
    blocking(&state, move |s| {
        whep_events::select_layer(s, &room, &id, &request)
    })
    .await?;
    Ok(StatusCode::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WHEP_OFFER: &str = include_str!("../tests/fixtures/chrome-whep-offer.sdp");

    #[test]
    fn endpoint_paths() {
        for yes in ["/whip/r", "/whep/room-1"] {
            assert!(is_endpoint_path(yes), "{yes}");
        }
        for no in [
            "/whip",
            "/whip/",
            "/whip/r/id",
            "/v1/rooms",
            "/whipx/r",
            "whip/r",
        ] {
            assert!(!is_endpoint_path(no), "{no}");
        }
    }

    #[test]
    fn content_type_check() {
        let mut h = HeaderMap::new();
        assert!(!is_sdp(&h));
        for ok in [
            "application/sdp",
            "Application/SDP",
            "application/sdp; charset=utf-8",
        ] {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ok));
            assert!(is_sdp(&h), "{ok}");
        }
        for bad in ["application/json", "text/plain", "application/sdpx"] {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(bad));
            assert!(!is_sdp(&h), "{bad}");
        }
    }

    fn producer(kind: MediaKind, ssrc: u32, codec: CodecChoice) -> Producer {
        Producer {
            publisher: sfu_core::router::EndpointId(u64::from(ssrc)),
            kind,
            ssrc,
            codec,
            red: false,
        }
    }

    #[test]
    fn producers_are_assigned_in_order_once_each() {
        let offer = sdp::parse_offer(WHEP_OFFER).expect("the fixture parses");
        // Sections: audio (mid 0), video (mid 1).
        let producers = [
            producer(MediaKind::Video, 10, CodecChoice::Vp8),
            producer(MediaKind::Audio, 20, CodecChoice::Opus),
            producer(MediaKind::Video, 30, CodecChoice::Vp8),
        ];
        let got = assign(&offer, &producers);
        assert_eq!(got, vec![Some(producers[1]), Some(producers[0])]);

        // Nothing of a kind left: that section gets nothing.
        let got = assign(&offer, &producers[..1]);
        assert_eq!(got, vec![None, Some(producers[0])]);

        // A producer whose codec the section lacks is skipped.
        let mut no_vp8 = offer.clone();
        no_vp8.media[1]
            .codecs
            .retain(|c| !c.name.eq_ignore_ascii_case("VP8"));
        let got = assign(&no_vp8, &producers);
        assert_eq!(got, vec![Some(producers[1]), None]);
    }

    const WHIP_OFFER: &str = include_str!("../tests/fixtures/chrome-whip-offer.sdp");
    const SIMULCAST_OFFER: &str =
        include_str!("../../sfu-core/src/sdp/fixtures/chrome_simulcast.sdp");

    /// `text` with `a=content:<value>` after the video section's `a=mid:1`.
    fn with_content(text: &str, value: &str) -> String {
        let eol = if text.contains("\r\n") { "\r\n" } else { "\n" };
        let mid = format!("a=mid:1{eol}");
        assert!(text.contains(&mid));
        text.replace(&mid, &format!("{mid}a=content:{value}{eol}"))
    }

    /// The endpoint a WHIP offer plans.
    fn publish_plan(text: &str) -> NewWebrtcEndpoint {
        let offer = sdp::parse_offer(text).expect("the offer parses");
        let local = Local {
            ufrag: "u".repeat(ICE_UFRAG_LEN),
            pwd: "p".repeat(ICE_PWD_LEN),
            setup: Setup::answer_for(offer.setup),
            fingerprint: format!("sha-256 {}", ["AB"; 32].join(":")),
            session_id: 1,
        };
        let remote = remote_fingerprint(&offer).expect("a fingerprint");
        let ctx = RoomContext {
            media: "127.0.0.1:40000".parse().expect("literal address"),
            producers: Vec::new(),
        };
        plan_publish(&offer, &local, remote, &ctx)
            .expect("the offer is planned")
            .0
    }

    /// `a=content:slides` (RFC 4796) on a WHIP section makes its track a
    /// screen share, simulcast layers included; other content values and
    /// no attribute leave it a camera.
    #[test]
    fn content_slides_marks_a_screen_share() {
        let sources = |n: &NewWebrtcEndpoint| -> Vec<(MediaKind, TrackSource)> {
            n.tracks.iter().map(|(t, _)| (t.kind, t.source)).collect()
        };
        let camera = [
            (MediaKind::Audio, TrackSource::Camera),
            (MediaKind::Video, TrackSource::Camera),
        ];
        assert_eq!(sources(&publish_plan(WHIP_OFFER)), camera);
        assert_eq!(
            sources(&publish_plan(&with_content(WHIP_OFFER, "main"))),
            camera
        );
        assert_eq!(
            sources(&publish_plan(&with_content(WHIP_OFFER, "slides"))),
            [
                (MediaKind::Audio, TrackSource::Camera),
                (MediaKind::Video, TrackSource::Screen),
            ]
        );
        // Simulcast by rid: every layer of the section.
        let plain = publish_plan(SIMULCAST_OFFER);
        assert_eq!(plain.transport.rid_tracks.len(), 3);
        assert!(
            plain
                .transport
                .rid_tracks
                .iter()
                .all(|r| r.source == TrackSource::Camera)
        );
        let screen = publish_plan(&with_content(SIMULCAST_OFFER, "slides"));
        assert_eq!(screen.transport.rid_tracks.len(), 3);
        assert!(
            screen
                .transport
                .rid_tracks
                .iter()
                .all(|r| r.source == TrackSource::Screen)
        );
    }

    #[test]
    fn errors_have_status_and_code() {
        let cases = [
            (
                WhipError::BadOffer(SdpError::MissingFingerprint),
                400,
                "missing_fingerprint",
            ),
            (
                WhipError::UnsupportedMediaType,
                415,
                "unsupported_media_type",
            ),
            (WhipError::from_answer(SdpError::NoMedia), 422, "no_media"),
            (
                WhipError::from_answer(SdpError::InvalidParam("ice_pwd")),
                500,
                "internal",
            ),
            (
                WhipError::Api(ApiError::UnknownRoom("r".into())),
                404,
                "unknown_room",
            ),
        ];
        for (e, status, code) in cases {
            assert_eq!((e.status().as_u16(), e.code()), (status, code), "{e:?}");
        }
    }
}
