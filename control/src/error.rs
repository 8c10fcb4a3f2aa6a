//! Errors of the control API and how they map to HTTP answers.

use std::net::SocketAddr;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sfu_core::router::RouterError;

use packet_path::RequestError;

use crate::auth::AuthError;

/// Largest request body the API reads.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Why an API request was refused. Every refusal leaves the node unchanged.
///
/// Answered as `{"error": "<message>", "code": "<code>"}` with the status of
/// [`ApiError::status`] and the code of [`ApiError::code`]; a 401 also
/// carries `WWW-Authenticate: Bearer` (RFC 6750 §3), and an
/// [`ApiError::Auth`] answer carries its [`AuthError`] as a response
/// extension, for the failure counter. A 429 carries `Retry-After`, a 408
/// `Connection: close`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// Malformed JSON, missing or unknown fields, values out of range (400).
    #[error("{0}")]
    BadRequest(String),
    /// The SRTP profile name is not one the node implements (400).
    #[error(
        "unsupported SRTP profile {0:?} (expected AEAD_AES_128_GCM or AES_CM_128_HMAC_SHA1_80)"
    )]
    UnsupportedProfile(String),
    /// The SRTP key is not base64 or has the wrong length for the profile (400).
    #[error("{0}")]
    BadKey(String),
    /// The requested worker index does not exist (400).
    #[error("no worker {0} (the node has {1})")]
    UnknownWorker(usize, usize),
    /// The worker's router refused the request as contradictory (400).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The request body is larger than [`MAX_BODY_BYTES`] (413).
    #[error("request body larger than {MAX_BODY_BYTES} bytes")]
    PayloadTooLarge,
    /// No room of that name (404).
    #[error("unknown room {0:?}")]
    UnknownRoom(String),
    /// No endpoint of that id in the room (404).
    #[error("unknown endpoint {0:?}")]
    UnknownEndpoint(String),
    /// No valid bearer token (401), or the token does not allow the
    /// request (403); see [`AuthError::is_forbidden`].
    #[error("{0}")]
    Auth(AuthError),
    /// No such route (404).
    #[error("no such route")]
    NotFound,
    /// The route exists but not with this method (405).
    #[error("method not allowed")]
    MethodNotAllowed,
    /// A room of that name exists (409).
    #[error("room {0:?} exists")]
    RoomExists(String),
    /// The SSRC is already used by an endpoint on this node (409).
    #[error("SSRC {0} is already in use on this node")]
    DuplicateSsrc(u32),
    /// Another endpoint on the same worker has this remote address (409).
    #[error("remote address {0} is already used by another endpoint on this worker")]
    RemoteInUse(SocketAddr),
    /// A configured limit of the worker would be exceeded (503).
    #[error("limit reached: {0}")]
    TooMany(String),
    /// The worker did not answer within its timeout (504); what it does
    /// with the command later is undone by a compensating command.
    #[error("worker did not answer in time")]
    WorkerTimeout,
    /// The worker has stopped (503).
    #[error("worker stopped")]
    WorkerStopped,
    /// The request was not received and answered within the configured
    /// request timeout, e.g. its body stalled (408); the connection is closed.
    #[error("request not completed in time")]
    RequestTimeout,
    /// Too many sessions created lately by this client address or token
    /// (429, with `Retry-After`); see [`crate::ratelimit`].
    #[error("too many sessions created by this {key}; retry in {retry_after} s")]
    RateLimited {
        /// `"ip"` or `"token"`.
        key: &'static str,
        /// Seconds until a session may be created again.
        retry_after: u64,
    },
    /// The node is draining: it serves its rooms but takes no new one
    /// (503).
    #[error("the node is draining and takes no new room")]
    Draining,
    /// The room's owner could not be reached (503 with `Retry-After: 1`):
    /// it may have died; once its registry entry expires another node
    /// takes the room over.
    #[error("the node owning room {room} ({owner}) is unreachable: {why}")]
    OwnerUnreachable {
        /// The room.
        room: String,
        /// The owner's node id.
        owner: String,
        /// Why.
        why: String,
    },
    /// A forwarded request reached a node that neither owns the room nor
    /// may claim it (the owner changed meanwhile; 503 with `Retry-After:
    /// 1`).
    #[error("room {0} moved while the request was forwarded; retry")]
    RoomMoved(String),
    /// This node cannot relay the room (a relay's replica cannot be
    /// made or its origin refused the trunk; 503): the origin that passed
    /// the request serves it itself.
    #[error("cannot relay the room here: {0}")]
    RelayUnavailable(String),
    /// A bug or a state the control plane cannot explain (500).
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_)
            | Self::UnsupportedProfile(_)
            | Self::BadKey(_)
            | Self::UnknownWorker(..)
            | Self::Invalid(_) => StatusCode::BAD_REQUEST,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Auth(e) if e.is_forbidden() => StatusCode::FORBIDDEN,
            Self::Auth(_) => StatusCode::UNAUTHORIZED,
            Self::UnknownRoom(_) | Self::UnknownEndpoint(_) | Self::NotFound => {
                StatusCode::NOT_FOUND
            }
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::RoomExists(_) | Self::DuplicateSsrc(_) | Self::RemoteInUse(_) => {
                StatusCode::CONFLICT
            }
            Self::TooMany(_)
            | Self::WorkerStopped
            | Self::Draining
            | Self::OwnerUnreachable { .. }
            | Self::RelayUnavailable(_)
            | Self::RoomMoved(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::WorkerTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable machine-readable code in the answer's `code` field.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::UnsupportedProfile(_) => "unsupported_profile",
            Self::BadKey(_) => "bad_key",
            Self::UnknownWorker(..) => "unknown_worker",
            Self::Invalid(_) => "invalid",
            Self::PayloadTooLarge => "payload_too_large",
            Self::Auth(e) => e.as_str(),
            Self::UnknownRoom(_) => "unknown_room",
            Self::UnknownEndpoint(_) => "unknown_endpoint",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::RoomExists(_) => "room_exists",
            Self::DuplicateSsrc(_) => "duplicate_ssrc",
            Self::RemoteInUse(_) => "remote_in_use",
            Self::TooMany(_) => "too_many",
            Self::WorkerTimeout => "worker_timeout",
            Self::WorkerStopped => "worker_stopped",
            Self::RequestTimeout => "request_timeout",
            Self::RateLimited { .. } => "rate_limited",
            Self::Draining => "draining",
            Self::OwnerUnreachable { .. } => "owner_unreachable",
            Self::RoomMoved(_) => "room_moved",
            Self::RelayUnavailable(_) => "relay_unavailable",
            Self::Internal(_) => "internal",
        }
    }
}

/// The limit that refused a request (as a metric label, e.g.
/// `endpoints_per_room`), carried from the answer to the request counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitRefused(pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.to_string(), "code": self.code() });
        let mut response = (self.status(), Json(body)).into_response();
        match &self {
            Self::TooMany(limit) => {
                response
                    .extensions_mut()
                    .insert(LimitRefused(limit.replace(' ', "_").to_ascii_lowercase()));
            }
            Self::RequestTimeout => {
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            Self::RateLimited { retry_after, .. } => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
            }
            Self::OwnerUnreachable { .. } | Self::RoomMoved(_) => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(1u32));
            }
            _ => {}
        }
        if let Self::Auth(e) = self {
            let challenge = match e {
                AuthError::Missing => r#"Bearer realm="sfu""#,
                e if e.is_forbidden() => r#"Bearer realm="sfu", error="insufficient_scope""#,
                _ => r#"Bearer realm="sfu", error="invalid_token""#,
            };
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
            response.extensions_mut().insert(e);
        }
        response
    }
}

impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> Self {
        match e {
            RequestError::Router(e) => e.into(),
            RequestError::Timeout => Self::WorkerTimeout,
            RequestError::Stopped => Self::WorkerStopped,
            #[allow(unreachable_patterns)]
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<RouterError> for ApiError {
    /// Room and endpoint names are not known at this level; the caller
    /// checks existence in its own model first, so these arms only fire when
    /// the worker and the model disagree.
    fn from(e: RouterError) -> Self {
        match e {
            RouterError::UnknownRoom => Self::UnknownRoom(String::new()),
            RouterError::RoomExists => Self::RoomExists(String::new()),
            RouterError::UnknownEndpoint => Self::UnknownEndpoint(String::new()),
            RouterError::DuplicateSsrc(ssrc) => Self::DuplicateSsrc(ssrc),
            RouterError::BadKey(e) => Self::BadKey(e.to_string()),
            RouterError::TooMany(what) => Self::TooMany(what.to_owned()),
            RouterError::Invalid(why) => Self::Invalid(why.to_owned()),
            other => Self::Internal(other.to_string()),
        }
    }
}
