//! The event pump: the routers' [`Event`]s, as the workers hand them to the
//! node's channel ([`packet_path::Node::events`]), become model changes and
//! node events ([`crate::events::NodeEvent`]).
//!
//! One thread (`sfu-events`) blocks on the channel and, per event:
//! * `Removed` — forgets the endpoint under its room's lock
//!   ([`AppState::forget_removed`]), which publishes `participant_left` with
//!   the router's reason, at once rather than at the next reap;
//! * `Connected` — marks the endpoint connected in the model (`GET
//!   /v1/rooms` counts the room's `pending` sessions from it) and publishes
//!   `participant_connected`;
//! * `DominantSpeaker`, `ActiveSpeakers` — names the room (and its
//!   endpoints) and publishes `dominant_speaker` / `active_speakers`;
//! * `ProducerBound`, `KeyframeRequested`, `ConsentLost` — names the
//!   endpoint (room and public id) and publishes the matching node event. An event of an endpoint the model no longer knows (deleted
//!   meanwhile) is dropped.
//!
//! The thread ends when every worker is gone (the channel disconnects).
//! The once-a-second reaper ([`AppState::reap_removed`]) stays as the
//! reconciliation for a removal whose event was lost to a full channel.

use std::sync::Arc;
use std::thread::JoinHandle;

use packet_path::WorkerEvent;
use sfu_core::router::Event;

use crate::events::NodeEvent;
use crate::state::AppState;

/// Starts the `sfu-events` thread draining `events` into `state`.
pub fn spawn(
    state: Arc<AppState>,
    events: crossbeam_channel::Receiver<WorkerEvent>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("sfu-events".into())
        .spawn(move || {
            while let Ok(e) = events.recv() {
                apply(&state, e);
            }
        })
}

/// Applies one worker event.
pub fn apply(state: &AppState, WorkerEvent { worker, event }: WorkerEvent) {
    let named = |id| state.endpoint_name(worker, id);
    let node_event = match event {
        Event::Removed { endpoint, reason } => {
            state.forget_removed(worker, endpoint, reason);
            return;
        }
        Event::Connected { endpoint, profile } => {
            let Some((room, endpoint)) = state.mark_connected(worker, endpoint) else {
                return;
            };
            NodeEvent::ParticipantConnected {
                room,
                endpoint,
                profile: profile.name().into(),
            }
        }
        Event::ProducerBound {
            endpoint,
            ssrc,
            rid,
            kind,
        } => {
            let Some((room, endpoint)) = named(endpoint) else {
                return;
            };
            NodeEvent::ProducerBound {
                room,
                endpoint,
                ssrc,
                rid: Some(rid.into()),
                kind: kind.as_str().into(),
            }
        }
        Event::KeyframeRequested { endpoint, ssrc } => {
            let Some((room, endpoint)) = named(endpoint) else {
                return;
            };
            NodeEvent::KeyframeRequested {
                room,
                endpoint,
                ssrc,
            }
        }
        Event::ConsentLost { endpoint } => {
            let Some((room, endpoint)) = named(endpoint) else {
                return;
            };
            NodeEvent::ConsentLost { room, endpoint }
        }
        Event::DominantSpeaker {
            room,
            endpoint,
            participant,
        } => {
            let Some(room) = state.room_name(worker, room) else {
                return;
            };
            NodeEvent::DominantSpeaker {
                room,
                endpoint: endpoint.and_then(named).map(|(_, name)| name),
                participant: participant.map(|p| format!("{p:016x}")),
            }
        }
        Event::ActiveSpeakers { room, speakers } => {
            let Some(room) = state.room_name(worker, room) else {
                return;
            };
            let endpoints = speakers
                .as_slice()
                .iter()
                .filter_map(|s| named(s.endpoint).map(|(_, name)| name))
                .collect();
            NodeEvent::ActiveSpeakers { room, endpoints }
        }
        // A variant added later: nothing maps it yet.
        _ => return,
    };
    state.publish(node_event);
}
