//! Limits on the state clients can create: the `[limits]` section of the
//! config file and the `SFU_LIMITS_*` variables.
//!
//! Every room, endpoint, track, consumer and unconnected WebRTC session is
//! created on a client's request, so each has a bound here. The node-wide
//! room limit is enforced by the control plane; the others by each worker's
//! router ([`sfu_core::router::RouterConfig`]), which refuses a command that
//! would exceed one with the limit's name. The API answers such a refusal
//! with 503 and `{"error": "limit reached: <limit>", "code": "too_many"}`,
//! and counts it in `sfu_limit_refusals_total{limit="<limit>"}`.

use serde::{Deserialize, Serialize};
use sfu_core::router::RouterConfig;

/// The limits (see the module doc). Field names are the config keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Rooms on the node.
    pub rooms: usize,
    /// Rooms on one worker; placement skips a full worker.
    pub rooms_per_worker: usize,
    /// Endpoints on one worker; placement skips a full worker.
    pub endpoints_per_worker: usize,
    /// Endpoints in one room.
    pub endpoints_per_room: usize,
    /// Tracks one endpoint publishes, simulcast layers included (at most
    /// 32, the SSRCs of its inbound SRTP context).
    pub tracks_per_endpoint: usize,
    /// Consumers (received streams) of one endpoint.
    pub consumers_per_endpoint: usize,
    /// WHIP/WHEP sessions on one worker whose ICE + DTLS have not completed.
    pub pending_sessions_per_worker: usize,
    /// WHIP/WHEP sessions in one room whose ICE + DTLS have not completed.
    pub pending_sessions_per_room: usize,
    /// Seconds a WHIP/WHEP session may take to complete ICE + DTLS; then
    /// it is removed (`sfu_endpoints_removed_total{reason="never_connected"}`).
    pub pending_session_timeout_secs: usize,
    /// Seconds a connected WHIP/WHEP session may go without a valid ICE
    /// check (RFC 7675 consent; browsers check every few seconds) before it
    /// is removed (`reason="consent_lost"`: a tab closed without DELETE);
    /// also how long an address learnt from media is kept without an
    /// authentic packet.
    pub consent_timeout_secs: usize,
}

impl Default for Limits {
    fn default() -> Self {
        let router = RouterConfig::default();
        Self {
            rooms: 1000,
            rooms_per_worker: router.max_rooms,
            endpoints_per_worker: router.max_endpoints,
            endpoints_per_room: router.max_endpoints_per_room,
            tracks_per_endpoint: router.max_tracks_per_endpoint,
            consumers_per_endpoint: router.max_consumers_per_endpoint,
            pending_sessions_per_worker: router.max_pending_webrtc,
            pending_sessions_per_room: router.max_pending_webrtc_per_room,
            pending_session_timeout_secs: router.pending_webrtc_timeout.as_secs() as usize,
            consent_timeout_secs: router.consent_timeout.as_secs() as usize,
        }
    }
}

/// The names of the limits, as config keys and as the suffix of their
/// `SFU_LIMITS_*` variables (upper case).
pub const NAMES: [&str; 10] = [
    "rooms",
    "rooms_per_worker",
    "endpoints_per_worker",
    "endpoints_per_room",
    "tracks_per_endpoint",
    "consumers_per_endpoint",
    "pending_sessions_per_worker",
    "pending_sessions_per_room",
    "pending_session_timeout_secs",
    "consent_timeout_secs",
];

impl Limits {
    /// The limit called `name` (one of [`NAMES`]).
    fn slot(&mut self, name: &str) -> Option<&mut usize> {
        Some(match name {
            "rooms" => &mut self.rooms,
            "rooms_per_worker" => &mut self.rooms_per_worker,
            "endpoints_per_worker" => &mut self.endpoints_per_worker,
            "endpoints_per_room" => &mut self.endpoints_per_room,
            "tracks_per_endpoint" => &mut self.tracks_per_endpoint,
            "consumers_per_endpoint" => &mut self.consumers_per_endpoint,
            "pending_sessions_per_worker" => &mut self.pending_sessions_per_worker,
            "pending_sessions_per_room" => &mut self.pending_sessions_per_room,
            "pending_session_timeout_secs" => &mut self.pending_session_timeout_secs,
            "consent_timeout_secs" => &mut self.consent_timeout_secs,
            _ => return None,
        })
    }

    /// Applies every limit `layer` sets.
    pub fn apply(&mut self, layer: &LimitsLayer) {
        for (name, value) in &layer.0 {
            if let Some(slot) = self.slot(name) {
                *slot = *value;
            }
        }
    }

    /// Each worker router's limits.
    pub fn router_config(&self) -> RouterConfig {
        RouterConfig {
            max_rooms: self.rooms_per_worker,
            max_endpoints: self.endpoints_per_worker,
            max_endpoints_per_room: self.endpoints_per_room,
            max_tracks_per_endpoint: self.tracks_per_endpoint,
            max_consumers_per_endpoint: self.consumers_per_endpoint,
            max_pending_webrtc: self.pending_sessions_per_worker,
            max_pending_webrtc_per_room: self.pending_sessions_per_room,
            pending_webrtc_timeout: std::time::Duration::from_secs(
                self.pending_session_timeout_secs as u64,
            ),
            consent_timeout: std::time::Duration::from_secs(self.consent_timeout_secs as u64),
            ..RouterConfig::default()
        }
    }

    /// Refuses zero limits and limits the routers cannot honour.
    pub fn validate(&self) -> Result<(), String> {
        if self.rooms == 0 {
            return Err("limits.rooms must be at least 1".into());
        }
        self.router_config()
            .check()
            .map_err(|e| format!("limits: {e}"))
    }
}

/// Some limits, by name: one config layer's `[limits]` section or
/// `SFU_LIMITS_*` variables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LimitsLayer(pub Vec<(&'static str, usize)>);

impl LimitsLayer {
    /// Sets limit `name` (case-insensitive); `Err` names the known ones.
    pub fn set(&mut self, name: &str, value: usize) -> Result<(), String> {
        let lower = name.to_ascii_lowercase();
        let known = NAMES
            .iter()
            .find(|n| **n == lower)
            .ok_or_else(|| format!("unknown limit {name:?} (known: {})", NAMES.join(", ")))?;
        self.0.retain(|(n, _)| n != known);
        self.0.push((known, value));
        Ok(())
    }
}

impl<'de> Deserialize<'de> for LimitsLayer {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let table = std::collections::BTreeMap::<String, usize>::deserialize(deserializer)?;
        let mut layer = Self::default();
        for (name, value) in table {
            layer.set(&name, value).map_err(serde::de::Error::custom)?;
        }
        Ok(layer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_set_known_limits_only() {
        let mut layer = LimitsLayer::default();
        layer.set("ROOMS", 5).unwrap();
        layer.set("endpoints_per_room", 7).unwrap();
        assert!(
            layer
                .set("bogus", 1)
                .unwrap_err()
                .contains("rooms_per_worker")
        );
        let mut limits = Limits::default();
        limits.apply(&layer);
        assert_eq!((limits.rooms, limits.endpoints_per_room), (5, 7));
        assert_eq!(limits.router_config().max_endpoints_per_room, 7);
        let parsed: LimitsLayer = toml::from_str("tracks_per_endpoint = 4").unwrap();
        assert_eq!(parsed.0, vec![("tracks_per_endpoint", 4)]);
        assert!(toml::from_str::<LimitsLayer>("nope = 4").is_err());
    }

    #[test]
    fn contradictory_limits_are_refused() {
        assert!(Limits::default().validate().is_ok());
        for name in NAMES {
            let mut limits = Limits::default();
            *limits.slot(name).unwrap() = 0;
            assert!(limits.validate().is_err(), "{name} = 0");
        }
        let too_many_tracks = Limits {
            tracks_per_endpoint: 33,
            ..Limits::default()
        };
        assert!(too_many_tracks.validate().is_err());
    }
}
