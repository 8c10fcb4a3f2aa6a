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
        GsoSends => "gso_sends", "GSO trains (segmented messages) sent: accepted by the kernel, or cut into frames by AF_XDP.";
        /// Datagrams whose send failed.
        SendErrors => "send_errors", "Failed send calls of the worker.";
        /// Failed receive or wait calls (timeouts excluded).
        RecvErrors => "recv_errors", "Failed receive calls of the worker.";
        /// Router events the node's event channel had no room for.
        EventsLost => "worker_events_lost", "Router events (connected, removed, ...) the node's event channel had no room for.";
        /// Datagrams received through the AF_XDP ring.
        XdpRxFrames => "af_xdp_rx_frames", "Datagrams the worker received through its AF_XDP socket.";
        /// Datagrams sent through the AF_XDP ring.
        XdpTxFrames => "af_xdp_tx_frames", "Datagrams the worker sent through its AF_XDP socket.";
        /// Datagrams the AF_XDP backend's kernel socket received.
        XdpKernelReceives => "af_xdp_kernel_receives", "Datagrams the AF_XDP worker received on its kernel UDP socket (passed by the XDP program: another queue, IPv6, another interface).";
        /// Messages the AF_XDP backend sent through its kernel socket.
        XdpKernelSends => "af_xdp_kernel_sends", "Messages the AF_XDP worker sent through its kernel UDP socket (next hop not learnt yet, IPv6, larger than a frame).";
        /// Frames dropped as malformed by the AF_XDP backend.
        XdpRxMalformed => "af_xdp_rx_malformed", "Frames from the AF_XDP socket dropped as malformed (lengths, IPv4 header checksum) or too large.";
        /// Datagrams that found no free AF_XDP transmit frame.
        XdpTxNoFrame => "af_xdp_tx_no_frame", "Datagrams that found no free AF_XDP transmit frame (sent through the worker's kernel UDP socket instead).";
        /// Times the io_uring multishot receive ran out of provided buffers.
        UringBuffersExhausted => "io_uring_buffers_exhausted", "Times the worker's io_uring multishot receive ran out of provided buffers (the socket keeps the data; the receive is armed again).";
        /// The kernel's drops on the AF_XDP socket.
        XdpKernelDropped => "af_xdp_kernel_dropped", "Frames the kernel dropped on the worker's AF_XDP socket (receive ring full, fill ring empty, invalid descriptors).";
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
        /// Whether the io_uring backend receives with a multishot `RecvMsg`.
        IoUringMultishot => "io_uring_multishot", "1 if the worker's io_uring backend receives with a multishot RecvMsg into provided buffers, 0 with linked RecvMsg operations or without io_uring.";
        /// Whether the worker's packet I/O runs on AF_XDP.
        IoAfXdp => "io_af_xdp", "1 if the worker's packet I/O runs on AF_XDP (beside its kernel UDP socket), 0 otherwise (also after an AF_XDP fallback).";
        /// Whether the AF_XDP socket runs in zero-copy mode.
        XdpZeroCopy => "af_xdp_zerocopy", "1 if the worker's AF_XDP socket runs in zero-copy mode (the driver writes into UMEM), 0 in copy mode or without AF_XDP.";
        /// Whether the XDP program runs in the driver.
        XdpNative => "af_xdp_native", "1 if the node's XDP program runs in the driver (native XDP), 0 in generic mode or without AF_XDP.";
        /// Rooms on the worker.
        Rooms => "rooms", "Rooms on the worker.";
        /// Endpoints on the worker.
        Endpoints => "endpoints", "Endpoints on the worker.";
    }
}
