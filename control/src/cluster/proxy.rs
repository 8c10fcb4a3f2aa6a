//! Passes a request to the node that owns its room and returns that node's
//! answer as it is (status, headers, body): a browser behind a load
//! balancer never follows a redirect, and the answer's SDP names the
//! owner's media address.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderName, HeaderValue, Method, Request, Response, Uri, header};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Marks a request passed on by nodes: `VIA;TS;SIG`, with `VIA` their ids
/// in order (comma separated), `TS` the Unix time in seconds and `SIG` the
/// hex HMAC-SHA256 under the API secret of `VIA;TS;METHOD;PATH` (see
/// [`Signer`]). The receiver claims a new room for itself (it was placed
/// there), and a request is passed on at most twice in all. A header that
/// does not verify is ignored: a client cannot pick where its room goes.
pub const FORWARDED: HeaderName = HeaderName::from_static("x-sfu-forwarded");

/// How far a [`FORWARDED`] header's time may be from the receiver's clock.
const FORWARDED_SKEW_SECS: u64 = 30;

/// Signs and checks [`FORWARDED`] headers with the cluster's API secret.
#[derive(Debug)]
pub struct Signer {
    key: ring::hmac::Key,
}

impl Signer {
    /// A signer with `secret` (every node of a cluster has the same).
    pub fn new(secret: &[u8]) -> Self {
        Self {
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret),
        }
    }

    fn signed(via: &str, ts: u64, method: &Method, path: &str) -> String {
        format!("{via};{ts};{method};{path}")
    }

    /// The header value for `via` passing `method path` at `now` (Unix
    /// seconds).
    pub fn sign(&self, via: &str, now: u64, method: &Method, path: &str) -> String {
        let tag = ring::hmac::sign(&self.key, Self::signed(via, now, method, path).as_bytes());
        let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        format!("{via};{now};{hex}")
    }

    /// The nodes a request passed, if its header verifies for `method
    /// path` at `now`; `None` otherwise.
    pub fn verify(
        &self,
        value: &str,
        now: u64,
        method: &Method,
        path: &str,
    ) -> Option<Vec<String>> {
        let mut parts = value.rsplitn(3, ';');
        let (hex, ts, via) = (parts.next()?, parts.next()?, parts.next()?);
        let ts: u64 = ts.parse().ok()?;
        if now.abs_diff(ts) > FORWARDED_SKEW_SECS || hex.len() != 64 {
            return None;
        }
        let tag: Vec<u8> = (0..32)
            .map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
            .collect::<Option<_>>()?;
        ring::hmac::verify(
            &self.key,
            Self::signed(via, ts, method, path).as_bytes(),
            &tag,
        )
        .ok()?;
        Some(via.split(',').map(str::to_owned).collect())
    }
}

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

/// An HTTP/1.1 client with a pool of kept-alive connections to peers,
/// over TLS to peers whose `control_url` is `https://`.
#[derive(Debug, Clone)]
pub struct Proxy {
    client: Client<HttpsConnector<HttpConnector>, Body>,
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

impl Proxy {
    /// A client that verifies `https://` peers with `tls`
    /// ([`crate::tls::peer_client_config`]); with `https_only` it refuses
    /// `http://` peers (a node that serves TLS never sends its clients'
    /// tokens in clear).
    pub fn new(tls: rustls::ClientConfig, https_only: bool) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        connector.enforce_http(false);
        let builder = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls);
        let builder = if https_only {
            builder.https_only()
        } else {
            builder.https_or_http()
        };
        let connector = builder.enable_http1().wrap_connector(connector);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Self { client }
    }

    /// Sends the request `parts` with `body` to the node at `base`
    /// (`http://host:port`), marked with `forwarded` (a [`FORWARDED`]
    /// value); returns its answer with hop-by-hop headers removed and
    /// [`SERVED_BY`] set to `owner` (unless the peer set it: it passed the
    /// request on).
    pub async fn forward(
        &self,
        base: &str,
        forwarded: &str,
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
            HeaderValue::from_str(forwarded).map_err(|e| ForwardError::Url(e.to_string()))?,
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
        // The node that served it, when the peer passed it on again (to a
        // relay).
        if !parts.headers.contains_key(SERVED_BY)
            && let Ok(v) = HeaderValue::from_str(owner)
        {
            parts.headers.insert(SERVED_BY, v);
        }
        Ok(Response::from_parts(parts, Body::new(incoming)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_headers_verify_only_as_signed() {
        let signer = Signer::new(b"a cluster secret of 32 bytes or more");
        let post = Method::POST;
        let v = signer.sign("n1,n2", 1000, &post, "/whip/r");
        assert_eq!(
            signer.verify(&v, 1010, &post, "/whip/r"),
            Some(vec!["n1".to_owned(), "n2".to_owned()])
        );
        assert_eq!(
            signer.verify(&v, 1010, &Method::GET, "/whip/r"),
            None,
            "method"
        );
        assert_eq!(signer.verify(&v, 1010, &post, "/whip/s"), None, "path");
        assert_eq!(signer.verify(&v, 1031, &post, "/whip/r"), None, "too old");
        assert_eq!(
            signer.verify(&v.replace("n1", "n3"), 1000, &post, "/whip/r"),
            None
        );
        let other = Signer::new(b"another secret of 32 bytes or more");
        assert_eq!(other.verify(&v, 1000, &post, "/whip/r"), None, "secret");
        for junk in ["", "n1", "n1;1000", ";;", "n1;x;00", "n1;1000;zz"] {
            assert_eq!(
                signer.verify(junk, 1000, &post, "/whip/r"),
                None,
                "{junk:?}"
            );
        }
    }
}
