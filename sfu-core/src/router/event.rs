//! What the router tells the control plane: [`Event`]s, taken with
//! [`Router::poll_event`](super::Router::poll_event).
//!
//! Events are queued in a bounded ring ([`EVENT_QUEUE`] entries, allocated
//! once); the caller drains it after every batch. When the queue is full
//! the newest event is dropped and counted
//! ([`Counter::EventsDropped`]); removals
//! are also kept for [`Command::TakeRemoved`](super::Command::TakeRemoved),
//! so a control plane that missed an event can still reconcile.

use std::collections::VecDeque;

use super::stats::{Counter, RemovalReason, RouterStats};
use super::{EndpointId, MediaKind, RoomId, SpeakerList};
use crate::srtp::Profile;

/// Events the queue holds before it drops new ones.
pub const EVENT_QUEUE: usize = 1024;

/// A state change of the router the control plane should know about.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A WebRTC endpoint completed ICE and DTLS: media flows.
    Connected {
        /// The endpoint.
        endpoint: EndpointId,
        /// The SRTP protection profile DTLS negotiated.
        profile: Profile,
    },
    /// A simulcast layer announced by `rid` became a producer: its first
    /// authentic packet told its SSRC.
    ProducerBound {
        /// The publishing endpoint.
        endpoint: EndpointId,
        /// The layer's SSRC.
        ssrc: u32,
        /// The layer's `rid`.
        rid: Box<str>,
        /// Audio or video.
        kind: MediaKind,
    },
    /// An endpoint had no valid ICE check (or, without ICE, no authentic
    /// packet) for [`CONSENT_TIMEOUT`](super::CONSENT_TIMEOUT): the router
    /// stopped sending to it. A connected WebRTC endpoint is removed right
    /// after ([`Event::Removed`] with [`RemovalReason::ConsentLost`]).
    ConsentLost {
        /// The endpoint.
        endpoint: EndpointId,
    },
    /// The router removed an endpoint by itself: it never connected, lost
    /// consent, or its DTLS failed or was closed. Its slot, SSRCs and ufrag
    /// are free again.
    Removed {
        /// The endpoint.
        endpoint: EndpointId,
        /// Why.
        reason: RemovalReason,
    },
    /// A room's dominant speaker changed (decided on its audio levels,
    /// every [`DECISION_INTERVAL`](crate::speaker::DECISION_INTERVAL) at most).
    DominantSpeaker {
        /// The room.
        room: RoomId,
        /// An audio publisher of the dominant participant; `None` when the
        /// dominant speaker left and nobody has spoken since.
        endpoint: Option<EndpointId>,
        /// Its participant, when its endpoints carry one.
        participant: Option<u64>,
    },
    /// The set of a room's participants talking now changed (the dominant
    /// speaker and those who spoke in at least three of the last ten
    /// ~100 ms blocks), at most [`ACTIVE_SPEAKERS`](super::ACTIVE_SPEAKERS),
    /// most recent first, by one audio publisher each.
    ActiveSpeakers {
        /// The room.
        room: RoomId,
        /// Who is talking.
        speakers: SpeakerList,
    },
    /// The router sent a keyframe request (PLI) to a publisher.
    KeyframeRequested {
        /// The publishing endpoint.
        endpoint: EndpointId,
        /// The producer's SSRC.
        ssrc: u32,
    },
}

/// The bounded event ring.
#[derive(Debug)]
pub(super) struct EventQueue {
    queue: VecDeque<Event>,
}

impl EventQueue {
    pub(super) fn new() -> Self {
        Self {
            queue: VecDeque::with_capacity(EVENT_QUEUE),
        }
    }

    /// Queues `event`, or counts it lost when the queue is full.
    pub(super) fn push(&mut self, event: Event, stats: &mut RouterStats) {
        if self.queue.len() >= EVENT_QUEUE {
            stats.inc(Counter::EventsDropped);
        } else {
            self.queue.push_back(event);
        }
    }

    pub(super) fn pop(&mut self) -> Option<Event> {
        self.queue.pop_front()
    }
}
