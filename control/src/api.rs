//! The HTTP control API (axum): routes, request parsing and answers.
//!
//! | method and path | answer |
//! |---|---|
//! | `GET /healthz` | 200 `{"status":"ok"}`, 503 `{"status":"draining"}` while shutting down |
//! | `GET /metrics` | Prometheus text ([`crate::metrics`]) |
//! | `GET /v1/load` | node and per-worker load ([`crate::metrics::load`]) |
//! | `GET /v1/rooms` | 200 `{"rooms": [...]}` |
//! | `POST /v1/rooms` | 201, or 400/409 |
//! | `DELETE /v1/rooms/{room}` | 204, or 404 |
//! | `POST /v1/rooms/{room}/endpoints` | 201, or 400/404/409 |
//! | `PUT /v1/rooms/{room}/endpoints/{id}/subscriptions` | 200, or 400/404 |
//! | `DELETE /v1/rooms/{room}/endpoints/{id}` | 204, or 404 |
//!
//! Every error is `{"error": "...", "code": "..."}` ([`ApiError`]); bodies
//! over [`MAX_BODY_BYTES`] are refused with 413. Handlers parse and check
//! the request, then run the mutation on a blocking thread
//! (`spawn_blocking`): it waits for the worker's answer, and a blocking task
//! runs to its end even if the client goes away, so the model never misses
//! a change the worker made.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{
    DefaultBodyLimit, FromRequest, FromRequestParts, MatchedPath, Path, Request, State,
};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use sfu_core::router::{ConsumerInfo, MediaKind, Role, Subscription, TrackConfig};

use crate::error::{ApiError, MAX_BODY_BYTES};
use crate::metrics;
use crate::state::{AppState, NewEndpoint, encode_key, parse_srtp, validate_room_name};

/// The API's router over `state`.
pub fn app(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(prometheus))
        .route("/v1/load", get(load))
        .route("/v1/rooms", get(list_rooms).post(create_room))
        .route("/v1/rooms/{room}", delete(delete_room))
        .route("/v1/rooms/{room}/endpoints", post(create_endpoint))
        .route("/v1/rooms/{room}/endpoints/{id}", delete(delete_endpoint))
        .route(
            "/v1/rooms/{room}/endpoints/{id}/subscriptions",
            put(set_subscription),
        )
        .route_layer(middleware::from_fn(label_route))
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            count_requests,
        ))
        .with_state(state)
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
/// `"unmatched"`) and status for `sfu_http_requests_total`.
async fn count_requests(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    let route = response
        .extensions()
        .get::<RouteLabel>()
        .map_or_else(|| "unmatched".to_owned(), |l| l.0.clone());
    state.count_request(route, response.status().as_u16());
    response
}

/// A JSON body: read up to [`MAX_BODY_BYTES`] (else 413), then parsed (else 400).
/// The content type is not checked.
#[derive(Debug)]
struct JsonBody<T>(T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else {
                ApiError::BadRequest(e.body_text())
            }
        })?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
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

/// Runs a mutation of `state` on a blocking thread and waits for it.
async fn blocking<T, F>(state: &Arc<AppState>, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&AppState) -> Result<T, ApiError> + Send + 'static,
{
    let state = Arc::clone(state);
    tokio::task::spawn_blocking(move || f(&state))
        .await
        .map_err(|e| ApiError::Internal(format!("control task failed: {e}")))?
}

async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    if state.draining() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "draining"})),
        )
            .into_response()
    } else {
        Json(json!({"status": "ok"})).into_response()
    }
}

async fn prometheus(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics::render(&state),
    )
        .into_response()
}

async fn load(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(metrics::load(&state))
}

async fn list_rooms(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({ "rooms": state.rooms() }))
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
    JsonBody(body): JsonBody<CreateRoomBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    validate_room_name(&body.room)?;
    let name = body.room.clone();
    let (worker, media) = blocking(&state, move |s| s.create_room(&body.room, body.worker)).await?;
    let answer = json!({ "room": name, "worker": worker, "media": media.to_string() });
    Ok((StatusCode::CREATED, Json(answer)))
}

async fn delete_room(
    State(state): State<Arc<AppState>>,
    Params(room): Params<String>,
) -> Result<StatusCode, ApiError> {
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
}

/// `"all"` or `{"video": [...], "audio": [...]}`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum SubscribeBody {
    Keyword(String),
    Explicit(ExplicitBody),
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
}

impl EndpointBody {
    fn validate(self) -> Result<NewEndpoint, ApiError> {
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
                Ok(TrackConfig {
                    kind,
                    ssrc: t.ssrc,
                    payload_type: t.payload_type,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(remote) = self.remote
            && (remote.port() == 0 || remote.ip().is_unspecified())
        {
            return Err(ApiError::BadRequest(format!(
                "remote {remote} is not a usable address"
            )));
        }
        let subscription = match self.subscribe {
            Some(s) => s.into_subscription()?,
            None => Subscription::All,
        };
        Ok(NewEndpoint {
            role,
            profile,
            remote_master,
            tracks,
            remote: self.remote,
            subscription,
            rtcp_ssrc: self.rtcp_ssrc,
        })
    }
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
            })
        })
        .collect()
}

async fn create_endpoint(
    State(state): State<Arc<AppState>>,
    Params(room): Params<String>,
    JsonBody(body): JsonBody<EndpointBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let new = body.validate()?;
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
    Params((room, id)): Params<(String, String)>,
    JsonBody(body): JsonBody<SubscribeBody>,
) -> Result<Json<Value>, ApiError> {
    let subscription = body.into_subscription()?;
    let consumers = blocking(&state, move |s| {
        s.set_subscription(&room, &id, subscription)
    })
    .await?;
    Ok(Json(json!({ "consumers": consumers_json(&consumers) })))
}

async fn delete_endpoint(
    State(state): State<Arc<AppState>>,
    Params((room, id)): Params<(String, String)>,
) -> Result<StatusCode, ApiError> {
    blocking(&state, move |s| s.delete_endpoint(&room, &id)).await?;
    Ok(StatusCode::NO_CONTENT)
}
