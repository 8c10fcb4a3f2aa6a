#!/usr/bin/env python3
"""Publishes a VP8 test pattern and an Opus tone from GStreamer's webrtcbin
to the node over WHIP, for control/tests/gstreamer.rs.

    whip_publish.py --base http://127.0.0.1:PORT --room ROOM --token TOKEN \
        [--duration SECONDS]
    whip_publish.py --check

webrtcbin (bundle-policy=max-bundle, both transceivers sendonly) makes an
offer; it is POSTed to BASE/whip/ROOM and the 201 answer becomes the remote
description. The node is ICE-lite and answers with its only candidate, so
nothing is trickled. Once ICE and DTLS are connected the pipeline runs for
DURATION seconds more, webrtcbin's get-stats is read, the WHIP resource is
DELETEd and ONE JSON line is printed with what was observed:

  ok, errors              verdict and every problem seen
  ice_connection_state    last ICE connection state (and *_history)
  connection_state        last peer connection state (and *_history)
  dtls_state, dtls_client last state of the bundled DTLS transport and
                          whether webrtcbin was the DTLS client
  certificate             webrtcbin's own DTLS certificate, read from the
                          transport (key type, bits, SHA-256 fingerprint, and
                          whether that fingerprint is the offer's)
  remote_certificate      the node's certificate as webrtcbin received it in
                          the handshake
  srtp                    cipher/auth of webrtcbin's srtpenc (set from the
                          SRTP profile the DTLS handshake negotiated)
  outbound                per-SSRC kind and packets/bytes sent (get-stats
                          outbound-rtp)
  packets_sent            their sum
  offer, answer           the SDP texts; post_status, delete_status

Exit status 0 when the session connected, media was sent and nothing failed;
1 otherwise; 2 when GStreamer, its Python bindings or an element is missing
(--check only checks that). Needs python3-gi, python3-gst-1.0, gir1.2-gst-plugins-bad-1.0,
gstreamer1.0-{plugins-base,plugins-good,plugins-bad,nice}.
"""

import argparse
import base64
import hashlib
import json
import sys
import urllib.error
import urllib.parse
import urllib.request

try:
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstSdp", "1.0")
    gi.require_version("GstWebRTC", "1.0")
    from gi.repository import GLib, Gst, GstSdp, GstWebRTC
except (ImportError, ValueError) as e:
    print(
        f"cannot load GStreamer's Python bindings ({e}): install python3-gi, "
        "python3-gst-1.0 and gir1.2-gst-plugins-bad-1.0",
        file=sys.stderr,
    )
    sys.exit(2)

# Every element the pipeline uses, with the Debian package that has it.
ELEMENTS = {
    "webrtcbin": "gstreamer1.0-plugins-bad",
    "dtlsenc": "gstreamer1.0-plugins-bad",
    "srtpenc": "gstreamer1.0-plugins-bad",
    "nicesink": "gstreamer1.0-nice",
    "vp8enc": "gstreamer1.0-plugins-good",
    "rtpvp8pay": "gstreamer1.0-plugins-good",
    "rtpbin": "gstreamer1.0-plugins-good",
    "opusenc": "gstreamer1.0-plugins-base",
    "rtpopuspay": "gstreamer1.0-plugins-good",
    "videotestsrc": "gstreamer1.0-plugins-base",
    "audiotestsrc": "gstreamer1.0-plugins-base",
    "audioconvert": "gstreamer1.0-plugins-base",
    "audioresample": "gstreamer1.0-plugins-base",
    "queue": "libgstreamer1.0-0",
}

VIDEO_PT = 96
AUDIO_PT = 111
# Seconds allowed for ICE and DTLS to connect after the answer arrived.
CONNECT_TIMEOUT = 15

PIPELINE = f"""
webrtcbin name=pc bundle-policy=max-bundle
videotestsrc is-live=true pattern=ball
  ! video/x-raw,width=320,height=240,framerate=15/1
  ! vp8enc deadline=1 keyframe-max-dist=30
  ! rtpvp8pay
  ! application/x-rtp,media=video,encoding-name=VP8,payload={VIDEO_PT}
  ! queue ! pc.
audiotestsrc is-live=true wave=sine
  ! audioconvert ! audioresample
  ! opusenc
  ! rtpopuspay
  ! application/x-rtp,media=audio,encoding-name=OPUS,payload={AUDIO_PT}
  ! queue ! pc.
"""

# OIDs (DER content bytes) of the public key algorithms and EC curves.
OID_RSA = bytes.fromhex("2a864886f70d010101")  # 1.2.840.113549.1.1.1
OID_EC = bytes.fromhex("2a8648ce3d0201")  # 1.2.840.10045.2.1
OID_ED25519 = bytes.fromhex("2b6570")  # 1.3.101.112
CURVES = {
    bytes.fromhex("2a8648ce3d030107"): "P-256",
    bytes.fromhex("2b81040022"): "P-384",
    bytes.fromhex("2b81040023"): "P-521",
}


def der_items(data):
    """The (tag, content) pairs of a run of DER TLVs."""
    items = []
    i = 0
    while i < len(data):
        tag = data[i]
        length = data[i + 1]
        i += 2
        if length & 0x80:
            n = length & 0x7F
            length = int.from_bytes(data[i : i + n], "big")
            i += n
        items.append((tag, data[i : i + length]))
        i += length
    return items


def describe_certificate(pem):
    """Key type and size, and SHA-256 fingerprint, of a PEM certificate,
    read with a minimal DER walk (no third-party module needed)."""
    if not pem:
        return None
    body = "".join(
        line for line in pem.strip().splitlines() if not line.startswith("-----")
    )
    der = base64.b64decode(body)
    digest = hashlib.sha256(der).hexdigest().upper()
    info = {
        "fingerprint": "sha-256 " + ":".join(digest[i : i + 2] for i in range(0, 64, 2)),
        "der_bytes": len(der),
    }
    try:
        (_, cert), = der_items(der)
        tbs = der_items(der_items(cert)[0][1])
        if tbs[0][0] == 0xA0:  # explicit version
            tbs = tbs[1:]
        # serial, signature, issuer, validity, subject, subjectPublicKeyInfo
        spki = der_items(tbs[5][1])
        alg = der_items(spki[0][1])
        oid = alg[0][1]
        key_bits = spki[1][1][1:]  # BIT STRING minus its unused-bits byte
        if oid == OID_RSA:
            modulus = der_items(der_items(key_bits)[0][1])[0][1].lstrip(b"\0")
            info["key_type"] = "RSA"
            info["key_bits"] = len(modulus) * 8 - (8 - modulus[0].bit_length())
        elif oid == OID_EC:
            info["key_type"] = "ECDSA"
            info["curve"] = CURVES.get(alg[1][1], alg[1][1].hex())
        elif oid == OID_ED25519:
            info["key_type"] = "Ed25519"
        else:
            info["key_type"] = "OID " + oid.hex()
    except (IndexError, ValueError) as e:
        info["key_type"] = f"unparsed ({e})"
    return info


def nick(value):
    return value.value_nick if value is not None else None


class Publisher:
    def __init__(self, args):
        self.args = args
        self.loop = GLib.MainLoop()
        self.pipe = Gst.parse_launch(PIPELINE)
        self.pc = self.pipe.get_by_name("pc")
        self.errors = []
        self.out = {
            "ice_connection_state_history": [],
            "connection_state_history": [],
            "dtls_state_history": [],
        }
        self.location = None
        self.connected_at = None
        self.transport = None
        self.offered = False
        # parse_launch requested webrtcbin's sink pads, creating one
        # transceiver each; they only send. (Set before PLAYING, so
        # negotiation starts with the final directions.)
        self.out["transceivers"] = 0
        while True:
            t = self.pc.emit("get-transceiver", self.out["transceivers"])
            if t is None:
                break
            t.set_property(
                "direction", GstWebRTC.WebRTCRTPTransceiverDirection.SENDONLY
            )
            self.out["transceivers"] += 1
        self.pc.connect("on-negotiation-needed", self.on_negotiation_needed)
        self.pc.connect("notify::ice-connection-state", self.on_ice_state)
        self.pc.connect("notify::connection-state", self.on_connection_state)
        bus = self.pipe.get_bus()
        bus.add_signal_watch()
        bus.connect("message::error", self.on_bus_error)
        bus.connect("message::warning", self.on_bus_warning)

    # --- helpers --------------------------------------------------------

    def fail(self, message):
        self.errors.append(message)
        self.loop.quit()

    def run(self):
        self.pipe.set_state(Gst.State.PLAYING)
        GLib.timeout_add_seconds(
            CONNECT_TIMEOUT + self.args.duration + 10, self.on_deadline
        )
        self.loop.run()
        self.finish()

    # --- negotiation ----------------------------------------------------

    def on_negotiation_needed(self, _pc):
        GLib.idle_add(self.make_offer)

    def make_offer(self):
        # One offer per run: the node's answer is final (no renegotiation).
        if self.offered:
            return False
        self.offered = True
        promise = Gst.Promise.new_with_change_func(self.on_offer_created, None)
        self.pc.emit("create-offer", None, promise)
        return False

    def on_offer_created(self, promise, _data):
        reply = promise.get_reply()
        offer = reply.get_value("offer") if reply else None
        if offer is None:
            error = reply.get_value("error") if reply else None
            GLib.idle_add(self.fail, f"create-offer failed: {error}")
            return
        sdp = offer.sdp.as_text()
        done = Gst.Promise.new_with_change_func(self.on_local_set, sdp)
        self.pc.emit("set-local-description", offer, done)

    def on_local_set(self, promise, sdp):
        reply = promise.get_reply()
        error = reply.get_value("error") if reply and reply.has_field("error") else None
        if error is not None:
            GLib.idle_add(self.fail, f"set-local-description failed: {error}")
            return
        # The node is ICE-lite and learns our address from our checks:
        # the offer needs no candidates, so it is sent at once.
        GLib.idle_add(self.post_offer, sdp)

    def post_offer(self, sdp):
        self.out["offer"] = sdp
        url = f"{self.args.base}/whip/{self.args.room}"
        request = urllib.request.Request(
            url,
            data=sdp.encode(),
            method="POST",
            headers={
                "Content-Type": "application/sdp",
                "Authorization": f"Bearer {self.args.token}",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                self.out["post_status"] = response.status
                answer = response.read().decode()
                location = response.headers.get("Location")
        except urllib.error.HTTPError as e:
            self.out["post_status"] = e.code
            self.fail(f"POST {url}: {e.code} {e.read().decode(errors='replace')}")
            return False
        except OSError as e:
            self.fail(f"POST {url}: {e}")
            return False
        self.out["answer"] = answer
        if self.out["post_status"] != 201:
            self.fail(f"POST {url}: status {self.out['post_status']}, expected 201")
            return False
        if location:
            self.location = urllib.parse.urljoin(url, location)
        self.out["location"] = location
        ok, message = GstSdp.SDPMessage.new_from_text(answer)
        if ok != GstSdp.SDPResult.OK:
            self.fail(f"the answer is not SDP GStreamer can parse: {ok}")
            return False
        description = GstWebRTC.WebRTCSessionDescription.new(
            GstWebRTC.WebRTCSDPType.ANSWER, message
        )
        promise = Gst.Promise.new_with_change_func(self.on_remote_set, None)
        self.pc.emit("set-remote-description", description, promise)
        GLib.timeout_add_seconds(CONNECT_TIMEOUT, self.on_connect_timeout)
        return False

    def on_remote_set(self, promise, _data):
        reply = promise.get_reply()
        if reply and reply.has_field("error"):
            error = reply.get_value("error")
            GLib.idle_add(self.fail, f"set-remote-description failed: {error}")
            return
        GLib.idle_add(self.watch_transport)

    def watch_transport(self):
        transceiver = self.pc.emit("get-transceiver", 0)
        sender = transceiver.get_property("sender") if transceiver else None
        self.transport = sender.get_property("transport") if sender else None
        if self.transport is None:
            self.fail("webrtcbin has no DTLS transport after the answer")
            return False
        self.transport.connect("notify::state", self.on_dtls_state)
        self.on_dtls_state(self.transport, None)
        return False

    # --- state ------------------------------------------------------------

    def on_ice_state(self, pc, _spec):
        state = nick(pc.get_property("ice-connection-state"))
        self.out["ice_connection_state_history"].append(state)
        if state == "failed":
            GLib.idle_add(self.fail, "ICE failed")

    def on_connection_state(self, pc, _spec):
        state = nick(pc.get_property("connection-state"))
        self.out["connection_state_history"].append(state)
        if state == "failed":
            GLib.idle_add(self.fail, "the peer connection failed")

    def on_dtls_state(self, transport, _spec):
        state = nick(transport.get_property("state"))
        history = self.out["dtls_state_history"]
        if not history or history[-1] != state:
            history.append(state)
        if state == "failed":
            GLib.idle_add(self.fail, "DTLS failed")
        elif state == "connected" and self.connected_at is None:
            self.connected_at = GLib.get_monotonic_time()
            GLib.idle_add(self.start_media_window)

    def start_media_window(self):
        GLib.timeout_add_seconds(self.args.duration, self.collect_stats)
        return False

    def on_connect_timeout(self):
        if self.connected_at is None:
            self.fail(f"DTLS not connected {CONNECT_TIMEOUT} s after the answer")
        return False

    def on_deadline(self):
        self.fail("overall deadline reached")
        return False

    def on_bus_error(self, _bus, message):
        error, debug = message.parse_error()
        self.fail(f"pipeline error from {message.src.get_name()}: {error.message} ({debug})")

    def on_bus_warning(self, _bus, message):
        warning, _debug = message.parse_warning()
        self.out.setdefault("warnings", []).append(
            f"{message.src.get_name()}: {warning.message}"
        )

    # --- stats ------------------------------------------------------------

    def collect_stats(self):
        promise = Gst.Promise.new_with_change_func(self.on_stats, None)
        self.pc.emit("get-stats", None, promise)
        return False

    def on_stats(self, promise, _data):
        reply = promise.get_reply()
        outbound = []
        transports = []
        if reply is not None:
            for i in range(reply.n_fields()):
                stat = reply.get_value(reply.nth_field_name(i))
                if not isinstance(stat, Gst.Structure):
                    continue
                kind = nick(stat.get_value("type")) if stat.has_field("type") else None
                if kind == "outbound-rtp":
                    ssrc = stat.get_value("ssrc")
                    outbound.append(
                        {
                            "ssrc": ssrc,
                            # GStreamer 1.22's own "kind" field says "audio"
                            # for video too: take the kind from the offer.
                            "kind": self.offer_kinds().get(ssrc),
                            "packets_sent": stat.get_value("packets-sent"),
                            "bytes_sent": stat.get_value("bytes-sent"),
                        }
                    )
                elif kind == "transport":
                    transports.append(stat.to_string())
        self.out["outbound"] = outbound
        self.out["packets_sent"] = sum(o["packets_sent"] or 0 for o in outbound)
        self.out["transport_stats"] = transports
        GLib.idle_add(self.loop.quit)

    def offer_kinds(self):
        """SSRC -> kind of its m= section, from the offer's a=ssrc lines."""
        kinds = {}
        kind = None
        for line in self.out.get("offer", "").splitlines():
            if line.startswith("m="):
                kind = line[2:].split(" ", 1)[0]
            elif line.startswith("a=ssrc:"):
                kinds[int(line[7:].split(" ", 1)[0])] = kind
        return kinds

    def srtp_ciphers(self):
        """The cipher and authentication of webrtcbin's srtpenc, which the
        DTLS handshake's negotiated SRTP profile set."""
        found = []
        it = self.pc.iterate_recurse()
        while True:
            result, element = it.next()
            if result != Gst.IteratorResult.OK:
                break
            factory = element.get_factory()
            if factory is not None and factory.get_name() == "srtpenc":
                found.append(
                    f"{nick(element.get_property('rtp-cipher'))}/"
                    f"{nick(element.get_property('rtp-auth'))}"
                )
        return found

    # --- end ------------------------------------------------------------

    def finish(self):
        out = self.out
        out["ice_connection_state"] = nick(self.pc.get_property("ice-connection-state"))
        out["connection_state"] = nick(self.pc.get_property("connection-state"))
        if self.transport is not None:
            out["dtls_state"] = nick(self.transport.get_property("state"))
            out["dtls_client"] = self.transport.get_property("client")
            out["certificate"] = describe_certificate(
                self.transport.get_property("certificate")
            )
            out["remote_certificate"] = describe_certificate(
                self.transport.get_property("remote-certificate")
            )
        out["srtp"] = self.srtp_ciphers()
        offer_fp = next(
            (
                line.split(":", 1)[1].strip()
                for line in out.get("offer", "").splitlines()
                if line.startswith("a=fingerprint:")
            ),
            None,
        )
        out["offer_fingerprint"] = offer_fp
        if out.get("certificate"):
            out["certificate"]["matches_offer"] = (
                offer_fp is not None
                and offer_fp.lower() == out["certificate"]["fingerprint"].lower()
            )
        if self.location:
            request = urllib.request.Request(
                self.location,
                method="DELETE",
                headers={"Authorization": f"Bearer {self.args.token}"},
            )
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    out["delete_status"] = response.status
            except urllib.error.HTTPError as e:
                out["delete_status"] = e.code
            except OSError as e:
                self.errors.append(f"DELETE {self.location}: {e}")
            if out.get("delete_status") != 200:
                self.errors.append(f"DELETE answered {out.get('delete_status')}")
        self.pipe.set_state(Gst.State.NULL)

        if self.connected_at is None and not self.errors:
            self.errors.append("never connected")
        if out["ice_connection_state"] not in ("connected", "completed"):
            self.errors.append(f"ICE ended {out['ice_connection_state']}")
        if out.get("dtls_state") != "connected":
            self.errors.append(f"DTLS ended {out.get('dtls_state')}")
        if not out.get("packets_sent"):
            self.errors.append("get-stats shows no packets sent")
        out["errors"] = self.errors
        out["ok"] = not self.errors
        print(json.dumps(out), flush=True)
        return 0 if out["ok"] else 1


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required="--check" not in sys.argv, help="http://host:port of the node")
    parser.add_argument("--room", required="--check" not in sys.argv)
    parser.add_argument("--token", required="--check" not in sys.argv, help="a token with the publish grant")
    parser.add_argument("--duration", type=int, default=5, help="seconds of media")
    parser.add_argument(
        "--check",
        action="store_true",
        help="only check that every GStreamer element is installed (exit 2 if not)",
    )
    args = parser.parse_args()
    Gst.init(None)
    missing = [
        f"{name} ({package})"
        for name, package in ELEMENTS.items()
        if Gst.ElementFactory.find(name) is None
    ]
    if missing:
        print("missing GStreamer elements: " + ", ".join(missing), file=sys.stderr)
        sys.exit(2)
    if args.check:
        print(f"{Gst.version_string()}: every element is installed")
        return
    publisher = Publisher(args)
    publisher.run()
    sys.exit(0 if not publisher.errors else 1)


if __name__ == "__main__":
    main()
