//! A blocking client of the node's control API (`ureq`), for the calls the
//! load generator makes: rooms, endpoints, subscriptions, simulcast layer
//! caps and `/v1/load`. Every request carries a bearer token the client
//! mints itself from the API secret (`--api-secret`), for room `*` with
//! every grant ([`control::auth`]); an endpoint created for a named
//! participant gets a token whose `sub` is that identity (the node's
//! participant id, which keeps a participant out of its own last-N slots).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use control::auth::{self, Claims, Grant};
use serde::Deserialize;
use serde_json::{Value, json};
use sfu_core::srtp::Profile;

use super::Kind;
use super::plan::Role;

/// A handle on one node's control API. Cheap to clone (the agent shares its
/// connection pool).
#[derive(Clone)]
pub struct ControlClient {
    agent: ureq::Agent,
    base: String,
    /// `Bearer <token>`.
    authorization: String,
    /// The API secret, for tokens naming a participant.
    secret: std::sync::Arc<[u8]>,
    /// Lifetime of every token.
    valid_for: Duration,
}

impl std::fmt::Debug for ControlClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// A track as declared when an endpoint is created.
#[derive(Debug, Clone, Copy)]
pub struct Track {
    /// Audio or video.
    pub kind: Kind,
    /// Its SSRC.
    pub ssrc: u32,
    /// Its payload type.
    pub payload_type: u8,
    /// Its retransmission stream (RFC 4588), if the publisher answers
    /// NACKs: (RTX SSRC, RTX payload type).
    pub rtx: Option<(u32, u8)>,
    /// For a simulcast track's upper layer: the SSRC of the track's first
    /// layer, declared earlier (`layer_of`).
    pub layer_of: Option<u32>,
}

/// What the load generator asks for when creating an endpoint.
#[derive(Debug, Clone)]
pub struct EndpointRequest<'a> {
    /// Endpoint role.
    pub role: Role,
    /// SRTP profile.
    pub profile: Profile,
    /// Master key || salt the endpoint protects its packets with.
    pub master: &'a [u8],
    /// Published tracks.
    pub tracks: &'a [Track],
    /// Where the node sends this endpoint's media; `None` = learn by comedia.
    pub remote: Option<SocketAddr>,
    /// What it receives.
    pub subscribe: Subscribe<'a>,
    /// The RTX payload types it receives retransmissions with, (video,
    /// audio); `None` = it negotiated no RTX (field left out).
    pub rtx_payload_types: Option<(u8, u8)>,
    /// The participant's identity: the request's token carries it as
    /// `sub`. `None` = the client's own token (each endpoint its own
    /// participant).
    pub identity: Option<&'a str>,
    /// Id of the RFC 6464 audio-level extension in its audio
    /// (`audio_level_extension`); `None` = left out.
    pub audio_level_extension: Option<u8>,
}

/// The `subscribe` field of an endpoint creation.
#[derive(Debug, Clone, Copy)]
pub enum Subscribe<'a> {
    /// Left out (publishers).
    Omit,
    /// `"all"`.
    All,
    /// Explicit (video, audio) producer SSRCs.
    Explicit(&'a [u32], &'a [u32]),
    /// Last-N: `{"slots": {"video": N, "audio": M}}`.
    Slots(u16, u16),
}

/// A consumer the node created for an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Consumer {
    /// `"audio"` or `"video"`.
    #[serde(deserialize_with = "de_kind")]
    pub kind: Kind,
    /// Slot within its kind.
    pub slot: u16,
    /// The SSRC the node sends it with.
    pub ssrc: u32,
    /// The producer SSRC it currently forwards, if any.
    pub producer_ssrc: Option<u32>,
    /// Payload type on the way out.
    pub payload_type: u8,
    /// The SSRC of its retransmissions, when the endpoint negotiated RTX.
    #[serde(default)]
    pub rtx_ssrc: Option<u32>,
}

fn de_kind<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Kind, D::Error> {
    let s = String::deserialize(d)?;
    match s.as_str() {
        "audio" => Ok(Kind::Audio),
        "video" => Ok(Kind::Video),
        other => Err(serde::de::Error::custom(format!("unknown kind {other:?}"))),
    }
}

/// The node's answer to an endpoint creation.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The endpoint id, for later calls.
    pub id: String,
    /// The node's media address for this endpoint.
    pub media: SocketAddr,
    /// Master key || salt the node protects towards this endpoint with.
    pub node_master: Vec<u8>,
    /// Its consumers.
    pub consumers: Vec<Consumer>,
    /// The node that served the request when another node passed it on
    /// (`X-Sfu-Served-By`, the room's owner in a cluster); `None` when
    /// the node asked answered itself.
    pub served_by: Option<String>,
}

#[derive(Deserialize)]
struct EndpointAnswer {
    id: String,
    media: String,
    srtp: SrtpAnswer,
    #[serde(default)]
    consumers: Vec<Consumer>,
}

#[derive(Deserialize)]
struct SrtpAnswer {
    key: String,
}

#[derive(Deserialize)]
struct ConsumersAnswer {
    consumers: Vec<Consumer>,
}

/// The claims of the load generator's token: every room, every grant, valid
/// from `now` (seconds since the Unix epoch) for `valid_for`.
pub fn token_claims(now: u64, valid_for: Duration) -> Claims {
    Claims::new(
        auth::ANY_ROOM,
        &[Grant::Admin, Grant::Publish, Grant::Subscribe],
        now,
        valid_for.as_secs(),
    )
}

impl ControlClient {
    /// A client of the control API at `base` (e.g. `http://127.0.0.1:7880`)
    /// whose token is signed with `secret` and valid for `valid_for`.
    pub fn new(base: &str, secret: &[u8], valid_for: Duration) -> Self {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .max_idle_connections_per_host(16)
            .build();
        let token = auth::mint(secret, &token_claims(auth::unix_now(), valid_for));
        Self {
            agent: config.into(),
            base: base.trim_end_matches('/').to_owned(),
            authorization: format!("Bearer {token}"),
            secret: secret.into(),
            valid_for,
        }
    }

    /// `Bearer <token>` for `identity`: the client's claims with `sub` set.
    fn authorization_for(&self, identity: &str) -> String {
        let mut claims = token_claims(auth::unix_now(), self.valid_for);
        claims.sub = Some(identity.to_owned());
        format!("Bearer {}", auth::mint(&self.secret, &claims))
    }

    /// `GET /v1/load`.
    pub fn load(&self) -> anyhow::Result<Value> {
        let resp = self
            .agent
            .get(format!("{}/v1/load", self.base))
            .header("authorization", &self.authorization)
            .call()?;
        expect_json(resp, 200, "GET /v1/load")
    }

    /// `GET /metrics` (Prometheus text).
    pub fn metrics(&self) -> anyhow::Result<String> {
        let mut resp = self
            .agent
            .get(format!("{}/metrics", self.base))
            .header("authorization", &self.authorization)
            .call()?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .read_to_string()
            .context("GET /metrics: reading the body")?;
        if status != 200 {
            bail!("GET /metrics: HTTP {status} (want 200): {body}");
        }
        Ok(body)
    }

    /// The base URL this client talks to.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET /healthz` through `agent` (one with short timeouts):
    /// `Ok(status)` when the node answered, `Err` when it could not be
    /// reached (a node that is down).
    pub fn healthz(&self, agent: &ureq::Agent) -> Result<u16, ureq::Error> {
        let resp = agent.get(format!("{}/healthz", self.base)).call()?;
        Ok(resp.status().as_u16())
    }

    /// `POST /v1/rooms`, where a room of that name may exist already:
    /// `Ok(true)` if this call created it, `Ok(false)` if the node
    /// answered 409 `room_exists`.
    pub fn create_room_if_absent(&self, room: &str) -> anyhow::Result<bool> {
        let mut resp = self
            .agent
            .post(format!("{}/v1/rooms", self.base))
            .header("authorization", &self.authorization)
            .send_json(json!({ "room": room }))?;
        let status = resp.status().as_u16();
        let body = resp.body_mut().read_to_string().unwrap_or_default();
        match status {
            201 => Ok(true),
            409 if body.contains("room_exists") => Ok(false),
            _ => bail!("POST /v1/rooms: HTTP {status} (want 201, or 409 room_exists): {body}"),
        }
    }

    /// `POST /v1/rooms`; returns the room's media address.
    pub fn create_room(&self, room: &str) -> anyhow::Result<SocketAddr> {
        let resp = self
            .agent
            .post(format!("{}/v1/rooms", self.base))
            .header("authorization", &self.authorization)
            .send_json(json!({ "room": room }))?;
        let v = expect_json(resp, 201, "POST /v1/rooms")?;
        let media = v["media"].as_str().context("room answer without media")?;
        media.parse().context("room media address")
    }

    /// `DELETE /v1/rooms/{room}`.
    pub fn delete_room(&self, room: &str) -> anyhow::Result<()> {
        let resp = self
            .agent
            .delete(format!("{}/v1/rooms/{room}", self.base))
            .header("authorization", &self.authorization)
            .call()?;
        expect_status(resp, 204, "DELETE /v1/rooms/{room}")
    }

    /// `POST /v1/rooms/{room}/endpoints`.
    pub fn create_endpoint(
        &self,
        room: &str,
        req: &EndpointRequest<'_>,
    ) -> anyhow::Result<Endpoint> {
        let tracks: Vec<Value> = req
            .tracks
            .iter()
            .map(|t| {
                let mut track = json!({
                    "kind": kind_name(t.kind),
                    "ssrc": t.ssrc,
                    "payload_type": t.payload_type,
                });
                if let Some((ssrc, payload_type)) = t.rtx {
                    track["rtx"] = json!({ "ssrc": ssrc, "payload_type": payload_type });
                }
                if let Some(first) = t.layer_of {
                    track["layer_of"] = json!(first);
                }
                track
            })
            .collect();
        let mut body = json!({
            "role": req.role.as_str(),
            "srtp": { "profile": req.profile.name(), "key": BASE64.encode(req.master) },
            "tracks": tracks,
        });
        match req.subscribe {
            Subscribe::Omit => {}
            Subscribe::All => body["subscribe"] = subscribe_body(None),
            Subscribe::Explicit(video, audio) => {
                body["subscribe"] = subscribe_body(Some((video, audio)));
            }
            Subscribe::Slots(video, audio) => {
                body["subscribe"] = json!({ "slots": { "video": video, "audio": audio } });
            }
        }
        if let Some(id) = req.audio_level_extension {
            body["audio_level_extension"] = json!(id);
        }
        if let Some(remote) = req.remote {
            body["remote"] = Value::String(remote.to_string());
        }
        if let Some((video, audio)) = req.rtx_payload_types {
            body["rtx_payload_types"] = json!({ "video": video, "audio": audio });
        }
        let authorization = match req.identity {
            Some(identity) => self.authorization_for(identity),
            None => self.authorization.clone(),
        };
        let resp = self
            .agent
            .post(format!("{}/v1/rooms/{room}/endpoints", self.base))
            .header("authorization", &authorization)
            .send_json(&body)?;
        let served_by = resp
            .headers()
            .get("x-sfu-served-by")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let v = expect_json(resp, 201, "POST /v1/rooms/{room}/endpoints")?;
        let answer: EndpointAnswer =
            serde_json::from_value(v).context("endpoint answer does not parse")?;
        let node_master = BASE64
            .decode(answer.srtp.key.as_bytes())
            .context("endpoint answer: srtp.key is not base64")?;
        let expected = req.profile.key_len() + req.profile.salt_len();
        if node_master.len() != expected {
            bail!(
                "endpoint answer: srtp.key has {} bytes, {} needs {expected}",
                node_master.len(),
                req.profile.name()
            );
        }
        Ok(Endpoint {
            id: answer.id,
            media: answer.media.parse().context("endpoint media address")?,
            node_master,
            consumers: answer.consumers,
            served_by,
        })
    }

    /// `PUT /v1/rooms/{room}/endpoints/{id}/subscriptions` with an explicit
    /// (video, audio) subscription; returns the consumers.
    pub fn set_subscription(
        &self,
        room: &str,
        id: &str,
        video: &[u32],
        audio: &[u32],
    ) -> anyhow::Result<Vec<Consumer>> {
        let resp = self
            .agent
            .put(format!(
                "{}/v1/rooms/{room}/endpoints/{id}/subscriptions",
                self.base
            ))
            .header("authorization", &self.authorization)
            .send_json(subscribe_body(Some((video, audio))))?;
        let v = expect_json(resp, 200, "PUT subscriptions")?;
        let answer: ConsumersAnswer =
            serde_json::from_value(v).context("subscriptions answer does not parse")?;
        Ok(answer.consumers)
    }

    /// `PUT /v1/rooms/{room}/endpoints/{id}/layers`: caps the simulcast
    /// layer of the endpoint's video consumer in `slot` (`None` lifts the
    /// cap).
    pub fn set_max_layer(
        &self,
        room: &str,
        id: &str,
        slot: u16,
        max_layer: Option<u8>,
    ) -> anyhow::Result<()> {
        let resp = self
            .agent
            .put(format!(
                "{}/v1/rooms/{room}/endpoints/{id}/layers",
                self.base
            ))
            .header("authorization", &self.authorization)
            .send_json(json!({ "slot": slot, "max_layer": max_layer }))?;
        expect_status(resp, 204, "PUT layers")
    }

    /// `PUT /v1/rooms/{room}/subscriptions`: several endpoints' (id, video,
    /// audio) subscriptions in one request. Returns how many changes the
    /// node refused (each is answered on its own).
    pub fn set_subscriptions(
        &self,
        room: &str,
        changes: &[(&str, Vec<u32>, Vec<u32>)],
    ) -> anyhow::Result<usize> {
        let changes: Vec<Value> = changes
            .iter()
            .map(|(id, video, audio)| {
                json!({ "endpoint": id, "subscribe": subscribe_body(Some((video, audio))) })
            })
            .collect();
        let resp = self
            .agent
            .put(format!("{}/v1/rooms/{room}/subscriptions", self.base))
            .header("authorization", &self.authorization)
            .send_json(json!({ "changes": changes }))?;
        let v = expect_json(resp, 200, "PUT room subscriptions")?;
        let results = v["results"]
            .as_array()
            .context("room subscriptions answer has no results")?;
        if results.len() != changes.len() {
            bail!(
                "room subscriptions: {} results for {} changes",
                results.len(),
                changes.len()
            );
        }
        Ok(results.iter().filter(|r| r.get("error").is_some()).count())
    }
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Audio => "audio",
        Kind::Video => "video",
    }
}

fn subscribe_body(sub: Option<(&[u32], &[u32])>) -> Value {
    match sub {
        None => Value::String("all".into()),
        Some((video, audio)) => json!({ "video": video, "audio": audio }),
    }
}

fn expect_status(
    mut resp: ureq::http::Response<ureq::Body>,
    want: u16,
    what: &str,
) -> anyhow::Result<()> {
    let status = resp.status().as_u16();
    if status != want {
        let body = resp.body_mut().read_to_string().unwrap_or_default();
        bail!("{what}: HTTP {status} (want {want}): {body}");
    }
    Ok(())
}

fn expect_json(
    mut resp: ureq::http::Response<ureq::Body>,
    want: u16,
    what: &str,
) -> anyhow::Result<Value> {
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .read_to_string()
        .with_context(|| format!("{what}: reading the body"))?;
    if status != want {
        bail!("{what}: HTTP {status} (want {want}): {body}");
    }
    serde_json::from_str(&body).with_context(|| format!("{what}: body is not JSON: {body}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The minted token verifies with the same secret, covers every room
    /// and every route's grant, and outlives the run.
    #[test]
    fn token_is_an_admin_token_for_every_room() {
        let claims = token_claims(1_000, Duration::from_secs(7_200));
        assert_eq!(claims.exp, 8_200);
        let token = auth::mint(auth::DEV_API_SECRET.as_bytes(), &claims);
        let verified = auth::Verifier::new(auth::DEV_API_SECRET.as_bytes())
            .verify(&token, 8_000)
            .expect("valid until exp");
        for need in [
            auth::Need::Admin,
            auth::Need::All(&[Grant::Publish, Grant::Subscribe]),
        ] {
            assert_eq!(verified.authorize(None, need), Ok(()));
            assert_eq!(verified.authorize(Some("lg-room-0"), need), Ok(()));
        }
    }

    #[test]
    fn identity_tokens_name_the_participant() {
        let client = ControlClient::new(
            "http://127.0.0.1:1/",
            auth::DEV_API_SECRET.as_bytes(),
            Duration::from_secs(60),
        );
        assert_eq!(client.base, "http://127.0.0.1:1");
        let header = client.authorization_for("lg-7");
        let token = header.strip_prefix("Bearer ").expect("a bearer token");
        let claims = auth::Verifier::new(auth::DEV_API_SECRET.as_bytes())
            .verify(token, auth::unix_now())
            .expect("valid");
        assert_eq!(claims.sub.as_deref(), Some("lg-7"));
        assert_eq!(claims.participant(), Some(auth::participant_id("lg-7")));
        assert!(!format!("{client:?}").contains("secret"));
    }

    #[test]
    fn subscription_bodies() {
        assert_eq!(subscribe_body(None), json!("all"));
        assert_eq!(
            subscribe_body(Some((&[1], &[2, 3]))),
            json!({"video": [1], "audio": [2, 3]})
        );
    }

    #[test]
    fn consumers_parse() {
        let v = json!({"consumers": [
            {"kind": "video", "slot": 0, "ssrc": 555, "producer_ssrc": 1234, "payload_type": 96, "rtx_ssrc": 131627},
            {"kind": "audio", "slot": 1, "ssrc": 556, "producer_ssrc": null, "payload_type": 111}
        ]});
        let a: ConsumersAnswer = serde_json::from_value(v).expect("valid");
        assert_eq!(a.consumers[0].kind, Kind::Video);
        assert_eq!(a.consumers[1].producer_ssrc, None);
        assert_eq!(a.consumers[0].rtx_ssrc, Some(131_627));
        assert_eq!(a.consumers[1].rtx_ssrc, None);
        let bad = json!({"consumers": [{"kind": "data", "slot": 0, "ssrc": 1, "producer_ssrc": null, "payload_type": 0}]});
        assert!(serde_json::from_value::<ConsumersAnswer>(bad).is_err());
    }
}
