//! Passes a request to the node that owns its room and returns that node's
//! answer as it is (status, headers, body): a browser behind a load
//! balancer never follows a redirect, and the answer's SDP names the
//! owner's media address.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderName, HeaderValue, Request, Response, Uri, header};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Marks a request passed on by nodes, with their ids in order (comma
/// separated): the receiver claims a new room for itself (it was placed
/// there), and a request is passed on at most twice in all.
pub const FORWARDED: HeaderName = HeaderName::from_static("x-sfu-forwarded");

/// Set on an answer that came from another node, with that node's id.
pub const SERVED_BY: HeaderName = HeaderName::from_static("x-sfu-served-by");

/// How long a peer may take to answer a forwarded request (it waits for
/// its worker, up to 2 s, like any request).
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

/// How long connecting to a peer may take: a dead peer's address refuses
/// at once on a LAN, a vanished host does not answer at all.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Headers that concern one connection, not the request (RFC 9110 7.6.1).
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
];

/// An HTTP/1.1 client with a pool of kept-alive connections to peers.
#[derive(Debug, Clone)]
pub struct Proxy {
    client: Client<HttpConnector, Body>,
}

/// Why a request could not be passed on.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The peer's URL with the request's path is not a URI.
    #[error("bad peer URL: {0}")]
    Url(String),
    /// Connecting or the exchange failed.
    #[error("{0}")]
    Http(String),
    /// No answer within [`FORWARD_TIMEOUT`].
    #[error("no answer within {FORWARD_TIMEOUT:?}")]
    Timeout,
}

impl Default for Proxy {
    fn default() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Self { client }
    }
}

impl Proxy {
    /// Sends the request `parts` with `body` to the node at `base`
    /// (`http://host:port`), marked as forwarded by `via` (the nodes it
    /// passed, comma separated); returns its answer with hop-by-hop
    /// headers removed and [`SERVED_BY`] set to `owner`.
    pub async fn forward(
        &self,
        base: &str,
        via: &str,
        owner: &str,
        parts: axum::http::request::Parts,
        body: Bytes,
    ) -> Result<Response<Body>, ForwardError> {
        let path_and_query = parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path(), |p| p.as_str());
        let uri: Uri = format!("{}{path_and_query}", base.trim_end_matches('/'))
            .parse()
            .map_err(|e| ForwardError::Url(format!("{e}")))?;
        let (method, mut headers) = (parts.method, parts.headers);
        for h in HOP_BY_HOP {
            headers.remove(h);
        }
        headers.remove(header::HOST);
        headers.remove(header::CONTENT_LENGTH);
        headers.insert(
            FORWARDED,
            HeaderValue::from_str(via).map_err(|e| ForwardError::Url(e.to_string()))?,
        );
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::from(body))
            .map_err(|e| ForwardError::Url(e.to_string()))?;
        *request.headers_mut() = headers;
        let answer = tokio::time::timeout(FORWARD_TIMEOUT, self.client.request(request))
            .await
            .map_err(|_| ForwardError::Timeout)?
            .map_err(|e| {
                // The cause names the refused connection; the error itself
                // only says "client error (Connect)".
                let mut why = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    why = format!("{why}: {s}");
                    source = s.source();
                }
                ForwardError::Http(why)
            })?;
        let (mut parts, incoming) = answer.into_parts();
        for h in HOP_BY_HOP {
            parts.headers.remove(h);
        }
        if let Ok(v) = HeaderValue::from_str(owner) {
            parts.headers.insert(SERVED_BY, v);
        }
        Ok(Response::from_parts(parts, Body::new(incoming)))
    }
}
