//! The packet path's own counters and gauges, each declared once (with its
//! metric name and help) by [`sfu_core::counter_table!`], like the router's
//! [`sfu_core::router::Counter`]. A worker publishes them into arrays of
//! atomics indexed by these enums; the control plane writes `/metrics` by
//! iterating `ALL`.

sfu_core::counter_table! {
    /// Counters of one worker's socket, pool and event channel, exported
    /// as `sfu_<name>_total{worker}`.
    pub enum PathCounter {
        /// Egress copies lost to an empty send-buffer pool.
        PoolExhausted => "pool_exhausted", "Times the worker found its send-buffer pool empty.";
        /// 1 if the kernel refused `UDP_SEGMENT` at start (the worker then
        /// sends without GSO), else 0.
        GsoFallbacks => "gso_fallbacks", "1 if the kernel refused UDP GSO on the worker's socket at start (it then sends without GSO).";
        /// Segmented sends the kernel refused for their destination.
        GsoRefusals => "gso_refusals", "GSO trains the kernel refused for their destination (resent unsegmented; the destination backs off from GSO).";
        /// GSO trains the kernel accepted.
        GsoSends => "gso_sends", "GSO trains (segmented messages) the kernel accepted from the worker.";
        /// Datagrams whose send failed.
        SendErrors => "send_errors", "Failed send calls of the worker.";
        /// Failed receive or wait calls (timeouts excluded).
        RecvErrors => "recv_errors", "Failed receive calls of the worker.";
        /// Router events the node's event channel had no room for.
        EventsLost => "worker_events_lost", "Router events (connected, removed, ...) the node's event channel had no room for.";
    }
}

sfu_core::counter_table! {
    /// Gauges of one worker, exported as `sfu_<name>{worker}` (booleans as
    /// 0 or 1).
    pub enum PathGauge {
        /// Send buffers in use when the counters were published.
        PoolInUse => "pool_in_use", "Send buffers of the worker's pool in use.";
        /// Send buffers in the pool.
        PoolCapacity => "pool_capacity", "Send buffers in the worker's pool.";
        /// Destinations currently sent without GSO after a refusal.
        GsoFallbackDestinations => "gso_fallback_destinations", "Destinations the worker currently sends without GSO after a refusal.";
        /// Whether the socket can send GSO trains.
        GsoEnabled => "gso_enabled", "1 if the worker's socket can send with UDP GSO.";
        /// Whether the socket receives GRO trains.
        GroEnabled => "gro_enabled", "1 if the worker receives with UDP GRO.";
        /// Whether the worker's packet I/O runs on io_uring.
        IoUring => "io_uring", "1 if the worker's packet I/O runs on io_uring, 0 if on recvmmsg/sendmmsg (the socket backend, also after an io_uring fallback).";
        /// Rooms on the worker.
        Rooms => "rooms", "Rooms on the worker.";
        /// Endpoints on the worker.
        Endpoints => "endpoints", "Endpoints on the worker.";
    }
}
