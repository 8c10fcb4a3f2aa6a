//! The HTTP control API (axum): routes, request parsing and answers.
//!
//! | method and path | token needs | answer |
//! |---|---|---|
//! | `GET /healthz` | no token | 200 `{"status":"ok"}`; 503 `{"status":"unhealthy","workers":[...]}` naming each dead or stalled worker ([`crate::supervise`]), else 503 `{"status":"draining"}` while shutting down |
//! | `GET /metrics` | admin, room `*` | Prometheus text ([`crate::metrics`]) |
//! | `GET /v1/load` | admin, room `*` | node and per-worker load ([`crate::metrics::load`]) |
//! | `GET /v1/events` | admin, room `*`; with `?room=NAME`, admin for that room | 200 `text/event-stream` of node events ([`crate::events`]), or 400 |
//! | `GET /v1/rooms` | admin, room `*` | 200 `{"rooms": [{"room", "worker", "endpoints", "pending"}]}` (`pending`: WHIP/WHEP sessions not connected yet) |
//! | `POST /v1/rooms` | admin, the body's room | 201, or 400/409 |
//! | `GET /v1/rooms/{room}` | admin | 200 `{"room", "worker", "media", "endpoints", "pending", "owner": {"node_id", "control_url", "media", "state"}}`, or 404 |
//! | `DELETE /v1/rooms/{room}` | admin | 204, or 404 |
//! | `POST /v1/drain` | admin, room `*` | 200 `{"status": "draining", "rooms", "endpoints"}`: no new rooms from now on ([`crate::cluster`]) |
//! | `POST /v1/rooms/{room}/endpoints` | publish, subscribe or both, after the body's `role` | 201, or 400/404/409 |
//! | `PUT /v1/rooms/{room}/endpoints/{id}/subscriptions` | subscribe | 200, or 400/404  body `"all"`, `{"video": [ssrc...], "audio": [...]}` or last-N `{"slots": {"video": N, "audio": M, "pinned": [identity or endpoint id...]}}` |
//! | `PUT /v1/rooms/{room}/endpoints/{id}/layers` | admin | 204, or 400/404; body `{"slot": N, "max_layer": L or null, "pinned": true or false}` (at least one of the two): `max_layer` caps the simulcast layer of the endpoint's video consumer in `slot` (0: the track's lowest layer by bitrate; `null` lifts the cap); `pinned` pins it, so its bandwidth allocation comes before other cameras' (after screen shares), while it keeps its producer (400 for a last-N subscriber, which pins in its subscription) |
//! | `PUT /v1/rooms/{room}/subscriptions` | admin | 200 `{"results": [...]}` (one per change, in order: `consumers` or `error` + `code`), or 400/404/413/503; body `{"changes": [{"endpoint", "subscribe"}]}`, at most `limits.endpoints_per_room` changes and 64 KiB (about 500 changes) |
//! | `DELETE /v1/rooms/{room}/endpoints/{id}` | any grant | 204, or 404 |
//!
//! # Authentication
//! Every route but `/healthz` needs `Authorization: Bearer <token>`
//! ([`crate::auth`]). A middleware on the routes verifies the token (else
//! 401 with `WWW-Authenticate: Bearer`) and hands its [`Claims`] to the
//! handler, which checks the room and the grant of the table above
//! ([`Claims::authorize`]; `admin` covers every grant, room `*` every room)
//! before it touches any state (else 403): for the room routes the room
//! is checked before the body is parsed, the role-dependent grant right
//! after. Unknown paths answer 404 without a token; CORS
//! preflights (`OPTIONS`) are answered without one by the CORS layer
//! (any origin; `Authorization`, `Content-Type`, `If-Match` allowed;
//! `Location`, `ETag`, `Link`, `Accept-Patch` exposed). Refusals are counted in
//! `sfu_auth_failures_total{reason}`.
//!
//! In a cluster ([`crate::cluster`]) every route naming a room (and `POST
//! /v1/rooms` by its body) is served by the room's owner: a request that
//! reaches another node is passed on after the token check, and the
//! owner's answer returned with `X-Sfu-Served-By`.
//!
//! Every error is `{"error": "...", "code": "..."}` ([`ApiError`]); bodies
//! over [`MAX_BODY_BYTES`] are refused with 413 (a `Content-Length` over it
//! before the token is checked, [`crate::http::refuse_oversized`]). Session
//! and room creation is rate limited after the token check
//! ([`crate::ratelimit`], 429). Handlers parse and check
//! the request, then run the mutation on a blocking thread
//! (`spawn_blocking`): it waits for the worker's answer, and a blocking task
//! runs to its end even if the client goes away, so the model never misses
//! a change the worker made.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{
    DefaultBodyLimit, FromRequest, FromRequestParts, MatchedPath, Path, Request, State,
};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use sfu_core::router::{
    ConsumerInfo, MediaKind, Role, RtxPayloadTypes, RtxStream, Subscription, TrackConfig,
    TrackSource,
};
use tower_http::cors::{self, CorsLayer};

use crate::auth::{AuthError, Authenticator, Claims, Grant, Need, unix_now};
use crate::error::{ApiError, LimitRefused, MAX_BODY_BYTES};
use crate::metrics;
use crate::ratelimit::limit_sessions;
use crate::state::{AppState, NewEndpoint, encode_key, parse_srtp, validate_room_name};
use crate::supervise;

use crate::handler::blocking;
pub use crate::handler::{ApiState, Limits};

/// The API's router over `state`, checking tokens with `auth` and limiting
/// session creation with `limits.sessions`.
pub fn app(
    state: Arc<AppState>,
    auth: Arc<Authenticator>,
    limits: Limits,
    cluster: Arc<crate::cluster::Cluster>,
) -> Router {
    let sessions = Arc::clone(&limits.sessions);
    let api = ApiState {
        node: state,
        auth,
        limits,
        cluster,
    };
    Router::new()
        .route("/metrics", get(prometheus))
        .route("/v1/load", get(load))
        .route("/v1/events", get(events))
        .route("/v1/rooms", get(list_rooms).post(create_room))
        .route("/v1/rooms/{room}", get(get_room).delete(delete_room))
        .route("/v1/drain", post(drain))
        .route("/v1/rooms/{room}/endpoints", post(create_endpoint))
        .route(
            "/v1/rooms/{room}/endpoints/{id}",
            get(get_endpoint).delete(delete_endpoint),
        )
        .route(
            "/v1/rooms/{room}/endpoints/{id}/subscriptions",
            put(set_subscription),
        )
        .route("/v1/rooms/{room}/endpoints/{id}/layers", put(set_max_layer))
        .route("/v1/rooms/{room}/subscriptions", put(set_subscriptions))
        .merge(crate::whip::routes())
        // After the token check and the rate limit: a room owned by
        // another node is served there.
        .route_layer(middleware::from_fn_with_state(
            api.clone(),
            crate::cluster::route_requests,
        ))
        // After the token check: only valid tokens get a bucket.
        .route_layer(middleware::from_fn_with_state(sessions, limit_sessions))
        // Before the rate limit: a request another node passed on was
        // limited there.
        .route_layer(middleware::from_fn_with_state(
            api.clone(),
            crate::cluster::verify_forwarded,
        ))
        // Only the routes above: /healthz is open.
        .route_layer(middleware::from_fn_with_state(api.clone(), authenticate))
        .route("/healthz", get(healthz))
        .route_layer(middleware::from_fn(crate::http::refuse_oversized))
        .route_layer(middleware::from_fn(label_route))
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(cors())
        .layer(middleware::from_fn(crate::whip::endpoint_options))
        .layer(middleware::from_fn_with_state(api.clone(), count_requests))
        .with_state(api)
}

/// CORS for browser clients (WHIP/WHEP players on other origins): any
/// origin, no cookies (tokens travel in `Authorization`).
fn cors() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(cors::Any)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_MATCH,
        ])
        .expose_headers([
            header::LOCATION,
            header::ETAG,
            header::LINK,
            HeaderName::from_static("accept-patch"),
        ])
        .max_age(Duration::from_secs(3600))
}

/// Verifies the bearer token and hands its claims to the handler; answers
/// 401 without a valid one.
///
/// A refused request's body is read (up to [`MAX_BODY_BYTES`]) and dropped
/// before the answer: hyper closes a connection whose request body was left
/// unread, which a keep-alive client only notices on its next request. A
/// larger body gets `Connection: close`.
async fn authenticate(State(api): State<ApiState>, mut req: Request, next: Next) -> Response {
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    match api.auth.authenticate(header, unix_now()) {
        Ok(claims) => {
            req.extensions_mut().insert(claims);
            next.run(req).await
        }
        Err(e) => {
            let drained = axum::body::to_bytes(req.into_body(), MAX_BODY_BYTES)
                .await
                .is_ok();
            let mut response = ApiError::Auth(e).into_response();
            if !drained {
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            response
        }
    }
}

/// The verified claims of the request's token.
#[derive(Debug)]
struct Token(Claims);

impl Token {
    /// Refuses (403) unless the token allows `need` in `room` (`None`: node-wide).
    fn need(&self, room: Option<&str>, need: Need) -> Result<(), ApiError> {
        self.0.authorize(room, need).map_err(ApiError::Auth)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Token {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        // Only a route without the authenticate layer lacks the claims.
        parts
            .extensions
            .get::<Claims>()
            .cloned()
            .map(Token)
            .ok_or(ApiError::Auth(AuthError::Missing))
    }
}

/// The matched route template, carried from the route layer to the counter.
#[derive(Debug, Clone)]
struct RouteLabel(String);

async fn label_route(req: Request, next: Next) -> Response {
    let label = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| format!("{} {}", req.method(), p.as_str()));
    let mut response = next.run(req).await;
    if let Some(label) = label {
        response.extensions_mut().insert(RouteLabel(label));
    }
    response
}

/// Counts every answer by route template (`"POST /v1/rooms"`, or
/// `"unmatched"`) and status for `sfu_http_requests_total`, and refused
/// tokens by reason for `sfu_auth_failures_total`.
async fn count_requests(State(api): State<ApiState>, req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    let route = response
        .extensions()
        .get::<RouteLabel>()
        .map_or_else(|| "unmatched".to_owned(), |l| l.0.clone());
    api.node.count_request(route, response.status().as_u16());
    if let Some(&reason) = response.extensions().get::<AuthError>() {
        api.auth.count_failure(reason);
    }
    if let Some(LimitRefused(limit)) = response.extensions().get::<LimitRefused>() {
        api.node.count_limit_refusal(limit);
    }
    response
}

/// A request body, read up to [`MAX_BODY_BYTES`] (else 413); parsed as JSON
/// by [`Body::json`] once the token has been checked. The content type is
/// not checked.
#[derive(Debug)]
struct Body(Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        Bytes::from_request(req, state)
            .await
            .map(Body)
            .map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge
                } else {
                    ApiError::BadRequest(e.body_text())
                }
            })
    }
}

impl Body {
    /// The body parsed as JSON (else 400).
    fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        serde_json::from_slice(&self.0)
            .map_err(|e| ApiError::BadRequest(format!("bad JSON body: {e}")))
    }
}

/// Path parameters, with a JSON 400 on failure.
#[derive(Debug)]
struct Params<T>(T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(t)| Params(t))
            .map_err(|e| ApiError::BadRequest(e.body_text()))
    }
}

async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    let unhealthy = supervise::unhealthy(state.workers());
    if !unhealthy.is_empty() {
        let workers: Vec<Value> = unhealthy.iter().map(supervise::describe).collect();
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unhealthy", "workers": workers})),
        )
            .into_response()
    } else if state.draining() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "draining"})),
        )
            .into_response()
    } else {
        Json(json!({"status": "ok"})).into_response()
    }
}

async fn prometheus(State(api): State<ApiState>, token: Token) -> Result<Response, ApiError> {
    token.need(None, Need::Admin)?;
    let mut text = metrics::render(&api.node);
    render_auth_failures(&mut text, &api.auth);
    metrics::render_http(&mut text, &api.limits.http, &api.limits.sessions);
    metrics::render_tls(&mut text, api.limits.tls.as_deref());
    metrics::render_top_rooms(&mut text, &api.node);
    crate::events::render(&mut text, api.node.events());
    crate::whep_events::render(&mut text, api.node.whep_events());
    api.cluster.render(&mut text);
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

/// Appends `sfu_auth_failures_total`, every reason listed.
fn render_auth_failures(out: &mut String, auth: &Authenticator) {
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "# HELP sfu_auth_failures_total Requests refused for their bearer token (401, 403), by reason."
    );
    let _ = writeln!(out, "# TYPE sfu_auth_failures_total counter");
    for (reason, n) in auth.failures() {
        let _ = writeln!(
            out,
            "sfu_auth_failures_total{{reason=\"{}\"}} {n}",
            reason.as_str()
        );
    }
}

async fn load(State(api): State<ApiState>, token: Token) -> Result<Json<Value>, ApiError> {
    token.need(None, Need::Admin)?;
    let mut load = metrics::load(&api.node);
    load["draining"] = Value::from(api.node.draining());
    load["cluster"] = api.cluster.status();
    Ok(Json(load))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    #[serde(default)]
    room: Option<String>,
}

/// `GET /v1/events[?room=NAME]`: the node's events as server-sent events,
/// from now on, until the client goes away or the node shuts down. With a
/// room, only that room's events and the node-wide ones (`worker_stalled`).
async fn events(
    State(state): State<Arc<AppState>>,
    token: Token,
    uri: axum::http::Uri,
) -> Result<Response, ApiError> {
    let query = axum::extract::Query::<EventsQuery>::try_from_uri(&uri)
        .map_err(|e| ApiError::BadRequest(e.body_text()))?
        .0;
    token.need(query.room.as_deref(), Need::Admin)?;
    if let Some(room) = &query.room {
        validate_room_name(room)?;
    }
    let mut response = (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
            // Reverse proxies (nginx) would otherwise buffer the stream.
            (HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        state.events().stream_body(query.room),
    )
        .into_response();
    response.extensions_mut().insert(crate::http::Streaming);
    Ok(response)
}

async fn list_rooms(
    State(state): State<Arc<AppState>>,
    token: Token,
) -> Result<Json<Value>, ApiError> {
    token.need(None, Need::Admin)?;
    Ok(Json(json!({ "rooms": state.rooms() })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRoomBody {
    room: String,
    #[serde(default)]
    worker: Option<usize>,
}

async fn create_room(
    State(state): State<Arc<AppState>>,
    token: Token,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body: CreateRoomBody = body.json()?;
    token.need(Some(&body.room), Need::Admin)?;
    validate_room_name(&body.room)?;
    let name = body.room.clone();
    let (worker, media) = blocking(&state, move |s| s.create_room(&body.room, body.worker)).await?;
    let answer = json!({ "room": name, "worker": worker, "media": media.to_string() });
    Ok((StatusCode::CREATED, Json(answer)))
}

/// `GET /v1/rooms/{room}`: the room as this node (its owner: a request
/// for a room owned elsewhere is passed there) holds it, with the owner's
/// id, control URL and media addresses for a load balancer or the
/// signaling service.
async fn get_room(
    State(api): State<ApiState>,
    token: Token,
    Params(room): Params<String>,
) -> Result<Json<Value>, ApiError> {
    token.need(Some(&room), Need::Admin)?;
    let summary = api
        .node
        .rooms()
        .into_iter()
        .find(|r| r.room == room)
        .ok_or_else(|| ApiError::UnknownRoom(room.clone()))?;
    let entry = api.cluster.entry();
    Ok(Json(json!({
        "room": summary.room,
        "worker": summary.worker,
        "media": api.node.media_addr(summary.worker).map(|a| a.to_string()),
        "endpoints": summary.endpoints,
        "pending": summary.pending,
        "owner": {
            "node_id": entry.id,
            "control_url": entry.control_url,
            "media": entry.media,
            "state": entry.state,
        },
    })))
}

/// `POST /v1/drain` (admin): the node takes no new room from now on
/// (`/healthz` answers 503 `draining`, the registry says `draining`, and
/// placement skips it) while its rooms keep serving and taking joins.
async fn drain(State(api): State<ApiState>, token: Token) -> Result<Json<Value>, ApiError> {
    token.need(None, Need::Admin)?;
    api.node.set_draining();
    tracing::info!("draining: no new rooms");
    // Peers see it at once rather than at the next heartbeat.
    let cluster = Arc::clone(&api.cluster);
    tokio::spawn(async move { cluster.tick().await });
    let (rooms, endpoints) = api.node.totals();
    Ok(Json(
        json!({"status": "draining", "rooms": rooms, "endpoints": endpoints}),
    ))
}

async fn delete_room(
    State(state): State<Arc<AppState>>,
    token: Token,
    Params(room): Params<String>,
) -> Result<StatusCode, ApiError> {
    token.need(Some(&room), Need::Admin)?;
    blocking(&state, move |s| s.delete_room(&room)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum RoleBody {
    Publish,
    Subscribe,
    Both,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum KindBody {
    Audio,
    Video,
}

/// What a track shows: `"camera"` (the default) or `"screen"`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
enum SourceBody {
    #[default]
    Camera,
    Screen,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SrtpBody {
    profile: String,
    key: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrackBody {
    kind: KindBody,
    ssrc: u32,
    payload_type: u8,
    /// The track's retransmission stream (RFC 4588), if the endpoint
    /// answers NACKs with RTX: `{"ssrc": .., "payload_type": ..}`.
    #[serde(default)]
    rtx: Option<RtxBody>,
    /// For a simulcast layer: the SSRC of its track's first layer, listed
    /// earlier in `tracks` (layers in ascending quality).
    #[serde(default)]
    layer_of: Option<u32>,
    /// For an audio track: the payload type it sends redundant audio (RED,
    /// RFC 2198) with, around `payload_type`.
    #[serde(default)]
    red_payload_type: Option<u8>,
    /// `"screen"` for a screen share, whose layers subscribers' bandwidth
    /// allocations serve before any camera's; `"camera"` by default.
    #[serde(default)]
    source: SourceBody,
}

/// A retransmission stream: its SSRC and payload type.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RtxBody {
    ssrc: u32,
    payload_type: u8,
}

/// The RTX payload types a subscriber receives retransmissions with, per
/// kind: `{"video": 97}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RtxPayloadTypesBody {
    #[serde(default)]
    video: Option<u8>,
    #[serde(default)]
    audio: Option<u8>,
}

/// `"all"`, `{"video": [...], "audio": [...]}` or
/// `{"slots": {"video": N, "audio": M, "pinned": [...]}}`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum SubscribeBody {
    Keyword(String),
    Explicit(ExplicitBody),
    Slots(SlotsWrapper),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SlotsWrapper {
    slots: SlotsBody,
}

/// Last-N slots: `pinned` names participants by token identity (`sub`),
/// or, for endpoints created without one, by endpoint id (16 hex digits).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SlotsBody {
    #[serde(default)]
    video: u16,
    #[serde(default)]
    audio: u16,
    #[serde(default)]
    pinned: Vec<String>,
}

/// The router's id of a pinned participant (see [`SlotsBody`]).
fn pinned_id(name: &str) -> u64 {
    match u64::from_str_radix(name, 16) {
        Ok(id) if name.len() == 16 => id,
        _ => crate::auth::participant_id(name),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExplicitBody {
    #[serde(default)]
    video: Vec<u32>,
    #[serde(default)]
    audio: Vec<u32>,
}

impl SubscribeBody {
    fn into_subscription(self) -> Result<Subscription, ApiError> {
        match self {
            Self::Keyword(k) if k == "all" => Ok(Subscription::All),
            Self::Keyword(k) => Err(ApiError::BadRequest(format!(
                "subscription {k:?} is neither \"all\" nor {{\"video\": [...], \"audio\": [...]}}"
            ))),
            Self::Explicit(ExplicitBody { video, audio }) => {
                Ok(Subscription::Explicit { video, audio })
            }
            Self::Slots(SlotsWrapper {
                slots:
                    SlotsBody {
                        video,
                        audio,
                        pinned,
                    },
            }) => Ok(Subscription::Slots {
                video,
                audio,
                pinned: pinned.iter().map(|p| pinned_id(p)).collect(),
                exclude: None,
            }),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EndpointBody {
    role: RoleBody,
    srtp: SrtpBody,
    #[serde(default)]
    tracks: Vec<TrackBody>,
    #[serde(default)]
    remote: Option<SocketAddr>,
    #[serde(default)]
    subscribe: Option<SubscribeBody>,
    #[serde(default)]
    rtcp_ssrc: Option<u32>,
    #[serde(default)]
    rtx_payload_types: RtxPayloadTypesBody,
    /// Id of the RFC 6464 audio-level extension in its audio packets.
    #[serde(default)]
    audio_level_extension: Option<u8>,
    /// The payload type it receives RED audio with; without it, RED of a
    /// publisher reaches it as plain Opus (each packet's primary block).
    #[serde(default)]
    red_payload_type: Option<u8>,
}

impl RoleBody {
    /// The grants an endpoint of this role needs.
    fn need(&self) -> Need {
        match self {
            Self::Publish => Need::All(&[Grant::Publish]),
            Self::Subscribe => Need::All(&[Grant::Subscribe]),
            Self::Both => Need::All(&[Grant::Publish, Grant::Subscribe]),
        }
    }
}

impl EndpointBody {
    fn validate(self, participant: Option<u64>) -> Result<NewEndpoint, ApiError> {
        if self.audio_level_extension == Some(0) {
            return Err(ApiError::BadRequest(
                "audio_level_extension must be an extension id of 1 to 255".into(),
            ));
        }
        let (profile, remote_master) = parse_srtp(&self.srtp.profile, &self.srtp.key)?;
        let role = match self.role {
            RoleBody::Publish => Role::Publish,
            RoleBody::Subscribe => Role::Subscribe,
            RoleBody::Both => Role::Both,
        };
        if role == Role::Subscribe && !self.tracks.is_empty() {
            return Err(ApiError::BadRequest(
                "a subscribe-only endpoint publishes no tracks".into(),
            ));
        }
        let tracks = self
            .tracks
            .into_iter()
            .map(|t| {
                if t.payload_type > 127 {
                    return Err(ApiError::BadRequest(format!(
                        "payload type {} is above 127",
                        t.payload_type
                    )));
                }
                let kind = match t.kind {
                    KindBody::Audio => MediaKind::Audio,
                    KindBody::Video => MediaKind::Video,
                };
                let rtx = t.rtx.map(|r| RtxStream {
                    ssrc: r.ssrc,
                    payload_type: r.payload_type,
                });
                if rtx.is_some_and(|r| r.payload_type > 127 || r.payload_type == t.payload_type) {
                    return Err(ApiError::BadRequest(
                        "an rtx payload type must be at most 127 and differ from the track's"
                            .into(),
                    ));
                }
                if let Some(red) = t.red_payload_type
                    && (kind != MediaKind::Audio
                        || red > 127
                        || red == t.payload_type
                        || rtx.is_some_and(|r| r.payload_type == red))
                {
                    return Err(ApiError::BadRequest(
                        "a red payload type needs an audio track, must be at most 127 and differ \
                         from the track's other payload types"
                            .into(),
                    ));
                }
                Ok(TrackConfig {
                    kind,
                    ssrc: t.ssrc,
                    payload_type: t.payload_type,
                    rtx,
                    codec: crate::whip::core_codec(sfu_core::sdp::assumed_codec(kind)),
                    layer_of: t.layer_of,
                    red_payload_type: t.red_payload_type,
                    source: match t.source {
                        SourceBody::Camera => TrackSource::Camera,
                        SourceBody::Screen => TrackSource::Screen,
                    },
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(remote) = self.remote
            && !usable_unicast(remote)
        {
            return Err(ApiError::BadRequest(format!(
                "remote {remote} is not a usable address"
            )));
        }
        let subscription = match self.subscribe {
            Some(s) => s.into_subscription()?,
            None => Subscription::All,
        };
        let rtx_payload_types = RtxPayloadTypes {
            video: self.rtx_payload_types.video,
            audio: self.rtx_payload_types.audio,
        };
        if [rtx_payload_types.video, rtx_payload_types.audio]
            .into_iter()
            .flatten()
            .any(|pt| pt > 127)
        {
            return Err(ApiError::BadRequest(
                "rtx payload types must be at most 127".into(),
            ));
        }
        if self.red_payload_type.is_some_and(|pt| pt > 127) {
            return Err(ApiError::BadRequest(
                "the red payload type must be at most 127".into(),
            ));
        }
        if role == Role::Publish && self.red_payload_type.is_some() {
            return Err(ApiError::BadRequest(
                "a publish-only endpoint receives no RED".into(),
            ));
        }
        if role == Role::Publish && rtx_payload_types != RtxPayloadTypes::default() {
            return Err(ApiError::BadRequest(
                "a publish-only endpoint receives no retransmissions".into(),
            ));
        }
        Ok(NewEndpoint {
            role,
            profile,
            remote_master,
            tracks,
            remote: self.remote,
            subscription,
            rtcp_ssrc: self.rtcp_ssrc,
            rtx_payload_types,
            participant,
            audio_level_extension: self.audio_level_extension,
            red_payload_type: self.red_payload_type,
            local_master: None,
            main_worker: false,
        })
    }
}

/// A unicast destination: not unspecified, multicast or broadcast, and a
/// port other than 0.
fn usable_unicast(addr: SocketAddr) -> bool {
    let ip = addr.ip().to_canonical();
    let broadcast = match ip {
        std::net::IpAddr::V4(v4) => v4.is_broadcast(),
        std::net::IpAddr::V6(_) => false,
    };
    addr.port() != 0 && !ip.is_unspecified() && !ip.is_multicast() && !broadcast
}

fn consumers_json(consumers: &[ConsumerInfo]) -> Value {
    consumers
        .iter()
        .map(|c| {
            json!({
                "kind": c.kind.as_str(),
                "slot": c.slot,
                "ssrc": c.ssrc,
                "producer_ssrc": c.producer_ssrc,
                "payload_type": c.payload_type,
                "rtx_ssrc": c.rtx_ssrc,
                "codec": c.codec.map(|c| c.name()),
            })
        })
        .collect()
}

/// `GET /v1/rooms/{room}/endpoints/{id}` (admin for the room): what the
/// endpoint receives now and, for a subscriber whose egress is estimated
/// (WHEP with the transport-wide sequence number), its bandwidth estimate.
async fn get_endpoint(
    State(state): State<Arc<AppState>>,
    token: Token,
    Params((room, id)): Params<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    token.need(Some(&room), Need::Admin)?;
    let endpoint = id.clone();
    let (consumers, bandwidth) =
        blocking(&state, move |s| s.endpoint_state(&room, &endpoint)).await?;
    let bandwidth = bandwidth.map(|b| {
        json!({
            "target_bps": b.target_bps,
            "delay_based_bps": b.delay_based_bps,
            "loss_bound_bps": b.loss_bound_bps,
            "remb_bps": b.remb_bps,
            "acked_bps": b.acked_bps,
            "loss_permille": b.loss_permille,
            "delay_state": format!("{:?}", b.delay_state).to_lowercase(),
            "rtt_ms": b.rtt_ms,
            "paused_videos": b.paused,
            "trials_passed": b.trials_passed,
            "trials_failed": b.trials_failed,
            "last_trial": b.last_trial.map(|(target, acked)| json!({
                "target_bps": target,
                "acked_bps": acked,
            })),
        })
    });
    Ok(Json(json!({
        "id": id,
        "consumers": consumers_json(&consumers),
        "bandwidth": bandwidth,
    })))
}

async fn create_endpoint(
    State(state): State<Arc<AppState>>,
    token: Token,
    trunk: Option<axum::Extension<crate::cluster::TrunkRequest>>,
    Params(room): Params<String>,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    token.need(Some(&room), Need::Any)?;
    let body: EndpointBody = body.json()?;
    token.need(Some(&room), body.role.need())?;
    if body.remote.is_some() {
        // A given address is sent to without the peer ever proving it
        // wants the media: operators only (see the README's security model).
        token.need(Some(&room), Need::OneOf(&[Grant::Admin, Grant::Trunk]))?;
    }
    let mut new = body.validate(token.0.participant())?;
    new.main_worker = trunk.is_some();
    let name = room.clone();
    let created = blocking(&state, move |s| s.create_endpoint(&room, new)).await?;
    let answer = json!({
        "id": created.id,
        "room": name,
        "media": created.media.to_string(),
        "srtp": {
            "profile": created.profile.name(),
            "key": encode_key(&created.local_master),
        },
        "consumers": consumers_json(&created.consumers),
    });
    Ok((StatusCode::CREATED, Json(answer)))
}

async fn set_subscription(
    State(state): State<Arc<AppState>>,
    token: Token,
    Params((room, id)): Params<(String, String)>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    token.need(Some(&room), Need::All(&[Grant::Subscribe]))?;
    let subscription = body.json::<SubscribeBody>()?.into_subscription()?;
    let consumers = blocking(&state, move |s| {
        s.set_subscription(&room, &id, subscription)
    })
    .await?;
    Ok(Json(json!({ "consumers": consumers_json(&consumers) })))
}

/// `PUT /v1/rooms/{room}/endpoints/{id}/layers`: at least one of
/// `max_layer` and `pinned`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MaxLayerBody {
    slot: u16,
    /// Absent: the cap is left as it is; `null` lifts it.
    #[serde(default, deserialize_with = "present_nullable")]
    max_layer: Option<Option<u8>>,
    /// Pins (or unpins) the video consumer: its layers are allocated
    /// before other cameras' (after screen shares). Absent: unchanged.
    #[serde(default)]
    pinned: Option<bool>,
}

/// A field that may be absent (`None`), `null` (`Some(None)`) or a value.
fn present_nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// Caps the simulcast layer one subscriber gets on one video slot (or
/// lifts the cap): admin for the room, since it is the operator's or the
/// signaling service's decision, not the viewer's. The bandwidth estimate
/// still chooses below the cap; the consumer moves at the next keyframe of
/// its new layer.
async fn set_max_layer(
    State(state): State<Arc<AppState>>,
    token: Token,
    Params((room, id)): Params<(String, String)>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    token.need(Some(&room), Need::Admin)?;
    let body = body.json::<MaxLayerBody>()?;
    if body.max_layer.is_none() && body.pinned.is_none() {
        return Err(ApiError::BadRequest(
            "the body needs max_layer (a layer or null) or pinned".into(),
        ));
    }
    blocking(&state, move |s| {
        if let Some(max_layer) = body.max_layer {
            s.set_max_layer(&room, &id, body.slot, max_layer)?;
        }
        if let Some(pinned) = body.pinned {
            s.set_pinned(&room, &id, body.slot, pinned)?;
        }
        Ok::<_, ApiError>(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// One change of `PUT /v1/rooms/{room}/subscriptions`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscriptionChangeBody {
    endpoint: String,
    subscribe: SubscribeBody,
}

/// `PUT /v1/rooms/{room}/subscriptions`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscriptionsBody {
    changes: Vec<SubscriptionChangeBody>,
}

impl SubscriptionsBody {
    fn into_changes(self) -> Result<Vec<(String, Subscription)>, ApiError> {
        self.changes
            .into_iter()
            .map(|c| Ok((c.endpoint, c.subscribe.into_subscription()?)))
            .collect()
    }
}

/// Several endpoints' subscriptions in one request (the signaling service
/// switching a room's speaker): admin for the room, since it changes what
/// other participants receive.
async fn set_subscriptions(
    State(state): State<Arc<AppState>>,
    token: Token,
    Params(room): Params<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    token.need(Some(&room), Need::Admin)?;
    let changes = body.json::<SubscriptionsBody>()?.into_changes()?;
    let results = blocking(&state, move |s| s.set_subscriptions(&room, changes)).await?;
    let results: Vec<Value> = results
        .into_iter()
        .map(|(endpoint, result)| match result {
            Ok(consumers) => json!({
                "endpoint": endpoint,
                "consumers": consumers_json(&consumers),
            }),
            Err(e) => json!({
                "endpoint": endpoint,
                "error": e.to_string(),
                "code": e.code(),
            }),
        })
        .collect();
    Ok(Json(json!({ "results": results })))
}

async fn delete_endpoint(
    State(state): State<Arc<AppState>>,
    token: Token,
    Params((room, id)): Params<(String, String)>,
) -> Result<StatusCode, ApiError> {
    token.need(Some(&room), Need::Any)?;
    blocking(&state, move |s| s.delete_endpoint(&room, &id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Parses `data` as each JSON request body and runs the checks its handler
/// runs before touching any state; the results are dropped. The entry point
/// of the `api_json` fuzz target (`fuzz/`), not an API.
#[doc(hidden)]
pub fn parse_bodies_for_fuzzing(data: &[u8]) {
    let body = Body(Bytes::copy_from_slice(data));
    if let Ok(b) = body.json::<CreateRoomBody>() {
        let _ = validate_room_name(&b.room);
    }
    if let Ok(b) = body.json::<EndpointBody>() {
        let _ = b.role.need();
        let _ = b.validate(None);
    }
    if let Ok(b) = body.json::<SubscribeBody>() {
        let _ = b.into_subscription();
    }
    if let Ok(b) = body.json::<SubscriptionsBody>() {
        let _ = b.into_changes();
    }
    let _ = body.json::<MaxLayerBody>();
    let _ = crate::whep_events::parse_event_list(data);
    let _ = crate::whep_events::parse_layer_request(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validate(body: Value) -> Result<NewEndpoint, ApiError> {
        serde_json::from_value::<EndpointBody>(body)
            .expect("the body parses")
            .validate(None)
    }

    #[test]
    fn red_payload_types_reach_the_router_config() {
        let key = crate::state::encode_key(&[7; 28]);
        let new = validate(json!({
            "role": "both",
            "srtp": { "profile": "AEAD_AES_128_GCM", "key": key },
            "tracks": [
                { "kind": "audio", "ssrc": 1, "payload_type": 111, "red_payload_type": 63 },
                { "kind": "video", "ssrc": 2, "payload_type": 96 },
            ],
            "red_payload_type": 100,
        }))
        .expect("valid");
        assert_eq!(new.tracks[0].red_payload_type, Some(63));
        assert_eq!(new.tracks[1].red_payload_type, None);
        assert_eq!(new.red_payload_type, Some(100));
    }

    #[test]
    fn a_tracks_source_is_camera_or_screen() {
        let key = crate::state::encode_key(&[7; 28]);
        let body = |source: Option<&str>| {
            let mut track = json!({ "kind": "video", "ssrc": 2, "payload_type": 96 });
            if let Some(s) = source {
                track["source"] = json!(s);
            }
            json!({
                "role": "publish",
                "srtp": { "profile": "AEAD_AES_128_GCM", "key": key },
                "tracks": [track],
            })
        };
        for (source, want) in [
            (None, TrackSource::Camera),
            (Some("camera"), TrackSource::Camera),
            (Some("screen"), TrackSource::Screen),
        ] {
            let new = validate(body(source)).expect("valid");
            assert_eq!(new.tracks[0].source, want, "{source:?}");
        }
        for bad in ["Screen", "projector", ""] {
            assert!(
                serde_json::from_value::<EndpointBody>(body(Some(bad))).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_layers_body_takes_a_cap_a_pin_or_both() {
        let parse =
            |v: Value| serde_json::from_value::<MaxLayerBody>(v).map(|b| (b.max_layer, b.pinned));
        assert_eq!(
            parse(json!({ "slot": 0, "max_layer": 1 })).expect("valid"),
            (Some(Some(1)), None)
        );
        assert_eq!(
            parse(json!({ "slot": 0, "max_layer": null })).expect("valid"),
            (Some(None), None)
        );
        assert_eq!(
            parse(json!({ "slot": 0, "pinned": true })).expect("valid"),
            (None, Some(true))
        );
        assert_eq!(parse(json!({ "slot": 0 })).expect("valid"), (None, None));
        assert!(parse(json!({ "slot": 0, "pinned": 1 })).is_err());
    }
}
