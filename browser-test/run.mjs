// Browser end-to-end test of the SFU: one headless Chromium page publishes
// its fake camera and microphone through WHIP, a second page subscribes
// through WHEP, and the subscriber's getStats() decides the verdict.
//
// Run by control/tests/browser.rs (which starts a node, creates the room and
// mints the tokens); by hand:
//
//   node browser-test/run.mjs --base http://127.0.0.1:7880 --room demo \
//        --publish-token "$PUB" --subscribe-token "$SUB" [--duration 10] \
//        [--allow-freeze] [--simulcast] [--camera WxH]
//
// Every option may also come from the environment: SFU_BASE, SFU_ROOM,
// SFU_PUBLISH_TOKEN, SFU_SUBSCRIBE_TOKEN, SFU_DURATION (seconds),
// SFU_ALLOW_FREEZE (1), CHROMIUM (executable, default /usr/bin/chromium).
//
// --allow-freeze      measure a bad path (control/tests/browser_loss.rs runs
//                     it under packet loss): a second without a decoded frame,
//                     or no first frame within 10 s, is reported
//                     (frozenSeconds, firstFrameMs null) but is no error, so
//                     the run completes with its figures; every other check
//                     still applies.
// --simulcast         the publisher sends its camera as three simulcast
//                     layers (rids q, h, f: 1/4, 1/2 and full resolution, at
//                     most 150, 500 and 1500 kbit/s); control/tests/
//                     browser_simulcast.rs runs it.
// --camera WxH        the size the publisher asks of its fake camera
//                     (default 640x480; SFU_CAMERA). Chromium's encoder puts
//                     few bits into the fake camera's simple picture, so a
//                     test that needs its middle simulcast layer above a
//                     given rate asks for a larger camera.
//
// Progress on stderr, one line each, for a caller that acts during the
// window (browser_simulcast.rs):
//   run.mjs: subscribed <WHEP resource URL>
//   run.mjs: first-frame <Date.now() of the viewer's first decoded frame>
//
// Other modes:
//   --dump-offers DIR   write the publisher's (WHIP) and the subscriber's
//                       (WHEP, recvonly) offers to DIR/chrome-whip-offer.sdp and
//                       DIR/chrome-whep-offer.sdp; needs no SFU.
//   --loopback          connect the two pages to each other directly (no SFU),
//                       to check this harness and the stats it reads.
//
// Output: ONE JSON line on stdout
//   {ok, framesDecodedPerSecond:[...], framesDecoded, audioPacketsReceived,
//    audioSamplesReceived, packetsLost, srtpCipher, dtlsCipher, ..., errors:[...]}
// The loss figures, all of the subscriber's (the viewer's) unless under
// `publisher`. Counters are totals from the connection's start to the end
// of the window (so they include the wait for the first frame); the rates
// cover the window only:
//   frozenSeconds            seconds of the window without a decoded frame
//   fpsMean                  frames decoded in the window / its seconds
//   freezeCount, totalFreezesDuration
//                            Chromium's own freeze detector (inbound video)
//   nackCount, pliCount, firCount
//                            NACK, PLI and FIR RTCP packets the viewer sent
//   retransmittedPacketsReceived, retransmittedBytesReceived
//   videoPacketsReceived, videoPacketsLost, keyFramesDecoded, framesDropped
//   audioConcealedSamples, audioConcealedPercent
//                            concealedSamples / totalSamplesReceived, in %
//   publisher.{nackCount, pliCount, firCount}
//                            feedback the publisher received (from the SFU)
//   publisher.{retransmittedPacketsSent, retransmittedBytesSent,
//              keyFramesEncoded, qualityLimitationReason}
//   whipAnswer, whepAnswer   {feedback: the answer's rtcp-fb values, rtx:
//                            whether it accepted RTX}
// Per second of the window (one entry per sample):
//   sampleAtMs               Date.now() when the sample was taken
//   frameWidthPerSecond, frameHeightPerSecond
//                            the viewer's inbound video frame size then
//   videoKbpsPerSecond       the viewer's inbound video bytesReceived delta,
//                            in kbit/s
//   publisherLayersPerSecond {rid: "WxH kbit/s"} of each outbound video
//                            stream of the publisher (rid "" without
//                            simulcast); publisher.layers has their totals
// Exit status: 0 when every check passed, 1 when a check failed, 2 when the
// harness itself could not run (bad arguments, no Chromium, no playwright-core).
//
// Checks, on the subscriber, after the first decoded frame:
//   - video framesDecoded rises in every one-second sample for `duration`
//     seconds (a single flat second is a freeze and fails);
//   - audio packetsReceived and totalSamplesReceived rise over the run;
//   - the transport's srtpCipher is AEAD_AES_128_GCM;
//   - both WHIP/WHEP resources answer DELETE with 2xx.
//
// Chromium flags (measured on these machines, /work/shared/MEASURED.md):
//   --no-sandbox                      we run as root; the sandbox refuses root
//   --disable-gpu                     no GPU in the VM
//   --disable-quic --no-first-run --disable-background-networking
//   --disable-component-update --disable-sync
//                                     no traffic to Google, no first-run UI
//   --use-fake-device-for-media-stream
//                                     a synthetic camera (moving pattern) and a
//                                     synthetic microphone (beeps)
//   --use-fake-ui-for-media-stream    grant getUserMedia without a prompt
//   --allow-loopback-in-peer-connection
//                                     Chromium gathers no 127.0.0.1/::1 host
//                                     candidates without it, and would not pair
//                                     with the SFU's 127.0.0.1 candidate
//   --autoplay-policy=no-user-gesture-required
//                                     the subscriber's <video>/<audio> play
//                                     without a click (audio is only pulled from
//                                     the jitter buffer, and totalSamplesReceived
//                                     only rises, while an element plays it)
//   --disable-background-timer-throttling --disable-renderer-backgrounding
//   --disable-backgrounding-occluded-windows
//                                     two pages: neither may be throttled
// playwright-core's launch() adds --headless and a fresh, temporary
// user-data dir. The pages come from an http://127.0.0.1 origin served below
// (a secure context, which getUserMedia requires); the SFU's CORS admits it.

import { createServer } from 'node:http';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

const EXIT_FAILED = 1;
const EXIT_HARNESS = 2;

const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream',
  '--allow-loopback-in-peer-connection',
  '--autoplay-policy=no-user-gesture-required',
  '--disable-background-timer-throttling',
  '--disable-renderer-backgrounding',
  '--disable-backgrounding-occluded-windows',
];

// The page: helpers the harness calls through page.evaluate(). Everything
// that touches WebRTC runs in the browser; node only orchestrates.
const PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>sfu browser test</title></head>
<body>
<video id="v" autoplay playsinline muted></video>
<audio id="a" autoplay></audio>
<script>
'use strict';
window.pc = null;

function iceGatheringComplete(pc, ms) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { clearTimeout(t); resolve(); };
    const t = setTimeout(done, ms);
    pc.addEventListener('icegatheringstatechange', () => {
      if (pc.iceGatheringState === 'complete') done();
    });
  });
}

// Creates this page's peer connection and offer; returns the offer SDP once
// ICE gathering is complete (non-trickle; capped at 3 s).
async function makeOffer(role, simulcast, camera = { width: 640, height: 480 }) {
  const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle' });
  window.pc = pc;
  if (role === 'publish') {
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: true,
      video: { width: camera.width, height: camera.height, frameRate: 30 },
    });
    for (const track of stream.getTracks()) {
      const init = { direction: 'sendonly', streams: [stream] };
      if (simulcast && track.kind === 'video') {
        init.sendEncodings = [
          { rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150000 },
          { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500000 },
          { rid: 'f', maxBitrate: 1500000 },
        ];
      }
      pc.addTransceiver(track, init);
    }
  } else {
    pc.addTransceiver('audio', { direction: 'recvonly' });
    pc.addTransceiver('video', { direction: 'recvonly' });
    pc.ontrack = play;
  }
  await pc.setLocalDescription(await pc.createOffer());
  await iceGatheringComplete(pc, 3000);
  return pc.localDescription.sdp;
}

// Plays a received track in the page's <video> or <audio> element.
function play(ev) {
  const el = document.getElementById(ev.track.kind === 'video' ? 'v' : 'a');
  el.srcObject = new MediaStream([ev.track]);
  el.play().catch(() => {});
}

// Loopback mode: this page answers another page's offer directly.
async function answerOffer(sdp) {
  const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle' });
  window.pc = pc;
  pc.ontrack = play;
  await pc.setRemoteDescription({ type: 'offer', sdp });
  await pc.setLocalDescription(await pc.createAnswer());
  await iceGatheringComplete(pc, 3000);
  return pc.localDescription.sdp;
}

// WHIP/WHEP: POST the offer, apply the answer, return the resource URL.
async function exchange(url, token, offer) {
  let res;
  try {
    res = await fetch(url, {
      method: 'POST',
      headers: { 'Content-Type': 'application/sdp', 'Authorization': 'Bearer ' + token },
      body: offer,
    });
  } catch (e) {
    throw new Error('POST ' + url + ' failed (network or CORS): ' + e.message);
  }
  const body = await res.text();
  if (res.status !== 201) {
    throw new Error('POST ' + url + ' answered ' + res.status + ', expected 201: ' + body.slice(0, 300));
  }
  const location = res.headers.get('Location');
  if (!location) {
    throw new Error('POST ' + url + ': 201 without a readable Location header '
      + '(the SFU must send it and list it in Access-Control-Expose-Headers)');
  }
  const type = res.headers.get('Content-Type') || '';
  if (!type.startsWith('application/sdp')) {
    throw new Error('POST ' + url + ': answer Content-Type is "' + type + '", expected application/sdp');
  }
  await window.pc.setRemoteDescription({ type: 'answer', sdp: body });
  return { location: new URL(location, url).href, answer: body };
}

async function applyAnswer(sdp) {
  await window.pc.setRemoteDescription({ type: 'answer', sdp });
}

async function remove(url, token) {
  try {
    const res = await fetch(url, { method: 'DELETE', headers: { 'Authorization': 'Bearer ' + token } });
    return res.status;
  } catch (e) {
    return 'DELETE failed: ' + e.message;
  }
}

function waitConnected(ms) {
  const pc = window.pc;
  return new Promise((resolve) => {
    const check = () => {
      const s = pc.connectionState;
      if (s === 'connected' || s === 'failed' || s === 'closed') { clearTimeout(t); resolve(s); }
    };
    const t = setTimeout(() => resolve('timeout (' + pc.connectionState + ', ice ' + pc.iceConnectionState + ')'), ms);
    pc.addEventListener('connectionstatechange', check);
    check();
  });
}

// The figures the harness needs from getStats(), flattened.
async function sample() {
  const out = { video: null, audio: null, outVideo: null, outVideos: [], outAudio: null, transport: null, pair: null, codecs: {} };
  const report = await window.pc.getStats();
  for (const s of report.values()) {
    if (s.type === 'inbound-rtp' && s.kind === 'video') {
      out.video = { framesDecoded: s.framesDecoded || 0, framesReceived: s.framesReceived || 0,
        packetsReceived: s.packetsReceived || 0, packetsLost: s.packetsLost || 0,
        bytesReceived: s.bytesReceived || 0, frameWidth: s.frameWidth, frameHeight: s.frameHeight, freezeCount: s.freezeCount,
        keyFramesDecoded: s.keyFramesDecoded, pliCount: s.pliCount, nackCount: s.nackCount,
        firCount: s.firCount, totalFreezesDuration: s.totalFreezesDuration, framesDropped: s.framesDropped,
        retransmittedPacketsReceived: s.retransmittedPacketsReceived,
        retransmittedBytesReceived: s.retransmittedBytesReceived,
        decoderImplementation: s.decoderImplementation, codecId: s.codecId };
    } else if (s.type === 'inbound-rtp' && s.kind === 'audio') {
      out.audio = { packetsReceived: s.packetsReceived || 0, packetsLost: s.packetsLost || 0,
        totalSamplesReceived: s.totalSamplesReceived || 0, concealedSamples: s.concealedSamples || 0,
        codecId: s.codecId };
    } else if (s.type === 'outbound-rtp' && s.kind === 'video') {
      out.outVideo = { framesEncoded: s.framesEncoded || 0, packetsSent: s.packetsSent || 0, codecId: s.codecId,
        bytesSent: s.bytesSent || 0, targetBitrate: s.targetBitrate ?? null,
        qualityLimitationReason: s.qualityLimitationReason ?? null,
        frameWidth: s.frameWidth, frameHeight: s.frameHeight,
        nackCount: s.nackCount, pliCount: s.pliCount, firCount: s.firCount,
        retransmittedPacketsSent: s.retransmittedPacketsSent, retransmittedBytesSent: s.retransmittedBytesSent,
        keyFramesEncoded: s.keyFramesEncoded, rid: s.rid ?? '' };
      out.outVideos.push(out.outVideo);
    } else if (s.type === 'outbound-rtp' && s.kind === 'audio') {
      out.outAudio = { packetsSent: s.packetsSent || 0, codecId: s.codecId };
    } else if (s.type === 'transport') {
      out.transport = { srtpCipher: s.srtpCipher, dtlsCipher: s.dtlsCipher, tlsVersion: s.tlsVersion,
        dtlsState: s.dtlsState, dtlsRole: s.dtlsRole, selectedCandidatePairId: s.selectedCandidatePairId };
    } else if (s.type === 'codec') {
      out.codecs[s.id] = s.mimeType;
    }
  }
  // With simulcast: the full-resolution layer stands for the publisher's
  // video, and bytesSent totals all layers.
  if (out.outVideos.length > 1) {
    const top = out.outVideos.reduce((a, b) => ((b.frameWidth ?? 0) > (a.frameWidth ?? 0) ? b : a));
    out.outVideo = { ...top, bytesSent: out.outVideos.reduce((n, v) => n + v.bytesSent, 0) };
  }
  if (out.transport && out.transport.selectedCandidatePairId) {
    const pair = report.get(out.transport.selectedCandidatePairId);
    const local = pair && report.get(pair.localCandidateId);
    const remote = pair && report.get(pair.remoteCandidateId);
    out.pair = {
      local: local ? local.address + ':' + local.port + ' ' + local.protocol : null,
      remote: remote ? remote.address + ':' + remote.port + ' ' + remote.protocol : null,
      currentRoundTripTime: pair ? pair.currentRoundTripTime : null,
      // The sender's bandwidth estimate (transport-cc driven in Chromium).
      availableOutgoingBitrate: pair ? pair.availableOutgoingBitrate ?? null : null,
    };
  }
  return out;
}
</script>
</body></html>
`;

function usage(message) {
  process.stderr.write(`run.mjs: ${message}\n`
    + 'usage: node run.mjs --base URL --room NAME --publish-token T --subscribe-token T [--duration S] [--allow-freeze] [--simulcast] [--camera WxH]\n'
    + '       node run.mjs --dump-offers DIR\n'
    + '       node run.mjs --loopback [--duration S]\n');
  process.exit(EXIT_HARNESS);
}

function options() {
  let parsed;
  try {
    parsed = parseArgs({
      options: {
        base: { type: 'string' },
        room: { type: 'string' },
        'publish-token': { type: 'string' },
        'subscribe-token': { type: 'string' },
        duration: { type: 'string' },
        'dump-offers': { type: 'string' },
        loopback: { type: 'boolean' },
        'allow-freeze': { type: 'boolean' },
        simulcast: { type: 'boolean' },
        camera: { type: 'string' },
      },
    }).values;
  } catch (e) {
    usage(e.message);
  }
  const env = process.env;
  const o = {
    base: (parsed.base ?? env.SFU_BASE ?? '').replace(/\/+$/, ''),
    room: parsed.room ?? env.SFU_ROOM,
    publishToken: parsed['publish-token'] ?? env.SFU_PUBLISH_TOKEN,
    subscribeToken: parsed['subscribe-token'] ?? env.SFU_SUBSCRIBE_TOKEN,
    duration: Number(parsed.duration ?? env.SFU_DURATION ?? 10),
    dumpOffers: parsed['dump-offers'],
    loopback: parsed.loopback ?? false,
    allowFreeze: parsed['allow-freeze'] ?? env.SFU_ALLOW_FREEZE === '1',
    simulcast: parsed.simulcast ?? false,
    camera: parsed.camera ?? env.SFU_CAMERA ?? '640x480',
    chromium: env.CHROMIUM ?? '/usr/bin/chromium',
  };
  if (!Number.isInteger(o.duration) || o.duration < 1 || o.duration > 600) {
    usage(`--duration must be a whole number of seconds in 1..600, not ${parsed.duration ?? env.SFU_DURATION}`);
  }
  const size = /^([1-9][0-9]{1,3})x([1-9][0-9]{1,3})$/.exec(o.camera);
  if (!size) usage(`--camera must be WIDTHxHEIGHT, e.g. 1280x720, not ${o.camera}`);
  o.camera = { width: Number(size[1]), height: Number(size[2]) };
  if (!o.dumpOffers && !o.loopback) {
    for (const [name, value] of [['--base', o.base], ['--room', o.room],
      ['--publish-token', o.publishToken], ['--subscribe-token', o.subscribeToken]]) {
      if (!value) usage(`missing ${name}`);
    }
  }
  return o;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Serves PAGE on an ephemeral port of 127.0.0.1.
async function servePage() {
  const server = createServer((req, res) => {
    if (req.url === '/' || req.url === '/index.html') {
      res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-store' });
      res.end(PAGE);
    } else if (req.url === '/favicon.ico') {
      res.writeHead(204).end();
    } else {
      res.writeHead(404).end();
    }
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  return { server, origin: `http://127.0.0.1:${server.address().port}/` };
}

async function launch(o) {
  if (!existsSync(o.chromium)) {
    throw new HarnessError(`no Chromium at ${o.chromium}: run \`bash .ci/test\` (it installs Debian's chromium)`);
  }
  let chromium;
  try {
    ({ chromium } = await import('playwright-core'));
  } catch (e) {
    throw new HarnessError(`playwright-core is not installed (${e.message}): run \`bash .ci/test\` (it runs npm ci in browser-test/)`);
  }
  // libwebrtc sends at most two simulcast layers of a 640x480 source (its
  // legacy layer limit by resolution: the third, `f`, stays at 0 bytes);
  // this field trial lets it send the three layers asked for.
  const args = o.simulcast
    ? [...CHROMIUM_ARGS, '--force-fieldtrials=WebRTC-LegacySimulcastLayerLimit/Disabled/']
    : CHROMIUM_ARGS;
  return chromium.launch({ executablePath: o.chromium, args, timeout: 30_000 });
}

class HarnessError extends Error {}

// Runs the test; returns the result object (result.ok decides the exit status).
async function run(o, browser, origin) {
  const result = {
    ok: false,
    mode: o.loopback ? 'loopback' : 'sfu',
    allowFreeze: o.allowFreeze,
    simulcast: o.simulcast,
    framesDecodedPerSecond: [],
    sampleAtMs: [],
    frameWidthPerSecond: [],
    frameHeightPerSecond: [],
    videoKbpsPerSecond: [],
    publisherLayersPerSecond: [],
    framesDecoded: 0,
    audioPacketsReceived: 0,
    audioSamplesReceived: 0,
    packetsLost: 0,
    srtpCipher: null,
    dtlsCipher: null,
    tlsVersion: null,
    videoCodec: null,
    audioCodec: null,
    frameSize: null,
    candidatePair: null,
    connectMs: null,
    firstFrameMs: null,
    deleteStatus: {},
    errors: [],
  };
  const errors = result.errors;
  const page = async (name) => {
    const p = await browser.newPage();
    p.on('console', (m) => { if (m.type() === 'error') process.stderr.write(`[${name} console] ${m.text()}\n`); });
    p.on('pageerror', (e) => errors.push(`${name} page error: ${e.message}`));
    await p.goto(origin);
    return p;
  };
  const pub = await page('publisher');
  const sub = await page('subscriber');

  const t0 = Date.now();
  let pubResource = null;
  let subResource = null;
  let exchanged = false;
  try {
    const pubOffer = await pub.evaluate(
      ([sc, camera]) => makeOffer('publish', sc, camera), [o.simulcast, o.camera]);
    if (o.loopback) {
      const answer = await sub.evaluate((s) => answerOffer(s), pubOffer);
      await pub.evaluate((s) => applyAnswer(s), answer);
    } else {
      const room = encodeURIComponent(o.room);
      const whip = await pub.evaluate(([u, t, s]) => exchange(u, t, s),
        [`${o.base}/whip/${room}`, o.publishToken, pubOffer]);
      pubResource = whip.location;
      result.whipAnswer = negotiated(whip.answer);
      if (o.simulcast) {
        // The node learns a rid layer's SSRC from its first packet; a WHEP
        // offer before any layer is bound is answered with the video
        // section inactive. Give the publisher time to start sending.
        await sleep(3000);
      }
      const subOffer = await sub.evaluate(() => makeOffer('subscribe'));
      const whep = await sub.evaluate(([u, t, s]) => exchange(u, t, s),
        [`${o.base}/whep/${room}`, o.subscribeToken, subOffer]);
      subResource = whep.location;
      process.stderr.write(`run.mjs: subscribed ${subResource}\n`);
      result.whepAnswer = negotiated(whep.answer);
    }
    exchanged = true;
  } catch (e) {
    errors.push(e.message.replace(/^page\.evaluate: (Error: )?/, '').split('\n')[0]);
  }
  if (exchanged) {
    await measure(pub, sub, o, result, t0);
  }
  for (const [name, p, url, token] of [['subscriber', sub, subResource, o.subscribeToken],
    ['publisher', pub, pubResource, o.publishToken]]) {
    if (!url) continue;
    const status = await p.evaluate(([u, t]) => remove(u, t), [url, token]);
    result.deleteStatus[name] = status;
    if (typeof status !== 'number' || status < 200 || status > 299) {
      errors.push(`DELETE ${url} (${name}) answered ${status}, expected 2xx`);
    }
  }
  result.ok = errors.length === 0;
  return result;
}

// Waits for both connections and the first decoded frame, then samples the
// subscriber once a second for o.duration seconds and checks the figures.
async function measure(pub, sub, o, result, t0) {
  const errors = result.errors;
  const [pubState, subState] = await Promise.all([
    pub.evaluate(() => waitConnected(10_000)),
    sub.evaluate(() => waitConnected(10_000)),
  ]);
  result.connectMs = Date.now() - t0;
  if (pubState !== 'connected') errors.push(`publisher connection: ${pubState}`);
  if (subState !== 'connected') errors.push(`subscriber connection: ${subState}`);
  if (errors.length) return;

  // The first frame needs a key frame through the SFU; allow 10 s.
  let first = null;
  for (const deadline = Date.now() + 10_000; Date.now() < deadline; await sleep(100)) {
    const s = await sub.evaluate(() => sample());
    if (s.video && s.video.framesDecoded > 0) { first = s; break; }
  }
  result.firstFrameMs = first ? Date.now() - t0 : null;
  if (first) process.stderr.write(`run.mjs: first-frame ${Date.now()}\n`);
  if (!first) {
    const s = await sub.evaluate(() => sample());
    if (!o.allowFreeze) {
      errors.push(`no video frame decoded within 10 s of connecting (subscriber video: ${JSON.stringify(s.video)})`);
      return;
    }
    // Measuring a bad path: the window starts anyway.
    first = s;
  }

  const windowStart = first;
  let prev = first;
  let last = first;
  let pubPrev = await pub.evaluate(() => sample());
  result.publisherEstimateKbps = [];
  result.publisherKbps = [];
  for (let i = 0; i < o.duration; i++) {
    await sleep(1000);
    last = await sub.evaluate(() => sample());
    result.sampleAtMs.push(Date.now());
    const delta = (last.video?.framesDecoded ?? 0) - (prev.video?.framesDecoded ?? 0);
    result.framesDecodedPerSecond.push(delta);
    result.frameWidthPerSecond.push(last.video?.frameWidth ?? null);
    result.frameHeightPerSecond.push(last.video?.frameHeight ?? null);
    result.videoKbpsPerSecond.push(Math.round(((last.video?.bytesReceived ?? 0) - (prev.video?.bytesReceived ?? 0)) * 8 / 1000));
    prev = last;
    const p = await pub.evaluate(() => sample());
    const layers = {};
    for (const v of p.outVideos) {
      const before = pubPrev.outVideos.find((b) => b.rid === v.rid);
      const kbps = Math.round((v.bytesSent - (before?.bytesSent ?? 0)) * 8 / 1000);
      layers[v.rid] = `${v.frameWidth ?? 0}x${v.frameHeight ?? 0} ${kbps}`;
    }
    result.publisherLayersPerSecond.push(layers);
    const estimate = p.pair?.availableOutgoingBitrate;
    result.publisherEstimateKbps.push(typeof estimate === 'number' ? Math.round(estimate / 1000) : null);
    result.publisherKbps.push(Math.round(((p.outVideo?.bytesSent ?? 0) - (pubPrev.outVideo?.bytesSent ?? 0)) * 8 / 1000));
    pubPrev = p;
  }
  const pubLast = pubPrev;

  const v = last.video ?? {};
  const a = last.audio ?? {};
  const t = last.transport ?? {};
  result.framesDecoded = v.framesDecoded ?? 0;
  result.audioPacketsReceived = a.packetsReceived ?? 0;
  result.audioSamplesReceived = a.totalSamplesReceived ?? 0;
  result.packetsLost = (v.packetsLost ?? 0) + (a.packetsLost ?? 0);
  result.videoPacketsLost = v.packetsLost ?? 0;
  result.audioPacketsLost = a.packetsLost ?? 0;
  result.srtpCipher = t.srtpCipher ?? null;
  result.dtlsCipher = t.dtlsCipher ?? null;
  result.tlsVersion = t.tlsVersion ?? null;
  result.videoCodec = last.codecs[v.codecId] ?? null;
  result.audioCodec = last.codecs[a.codecId] ?? null;
  result.frameSize = v.frameWidth ? `${v.frameWidth}x${v.frameHeight}` : null;
  result.freezeCount = v.freezeCount ?? null;
  result.pliCount = v.pliCount ?? null;
  result.nackCount = v.nackCount ?? null;
  result.firCount = v.firCount ?? null;
  result.totalFreezesDuration = v.totalFreezesDuration ?? null;
  result.keyFramesDecoded = v.keyFramesDecoded ?? null;
  result.framesDropped = v.framesDropped ?? null;
  result.retransmittedPacketsReceived = v.retransmittedPacketsReceived ?? null;
  result.retransmittedBytesReceived = v.retransmittedBytesReceived ?? null;
  result.videoPacketsReceived = v.packetsReceived ?? 0;
  result.frozenSeconds = result.framesDecodedPerSecond.filter((d) => d <= 0).length;
  result.fpsMean = Math.round(((v.framesDecoded ?? 0) - (windowStart.video?.framesDecoded ?? 0)) / o.duration * 10) / 10;
  result.audioConcealedSamples = a.concealedSamples ?? 0;
  result.audioConcealedPercent = a.totalSamplesReceived
    ? Math.round(a.concealedSamples / a.totalSamplesReceived * 1000) / 10 : null;
  result.candidatePair = last.pair;
  result.publisher = {
    framesEncoded: pubLast.outVideo?.framesEncoded ?? 0,
    videoPacketsSent: pubLast.outVideo?.packetsSent ?? 0,
    audioPacketsSent: pubLast.outAudio?.packetsSent ?? 0,
    srtpCipher: pubLast.transport?.srtpCipher ?? null,
    dtlsCipher: pubLast.transport?.dtlsCipher ?? null,
    candidatePair: pubLast.pair,
    qualityLimitationReason: pubLast.outVideo?.qualityLimitationReason ?? null,
    targetBitrate: pubLast.outVideo?.targetBitrate ?? null,
    frameSize: pubLast.outVideo?.frameWidth ? `${pubLast.outVideo.frameWidth}x${pubLast.outVideo.frameHeight}` : null,
    nackCount: pubLast.outVideo?.nackCount ?? null,
    pliCount: pubLast.outVideo?.pliCount ?? null,
    firCount: pubLast.outVideo?.firCount ?? null,
    retransmittedPacketsSent: pubLast.outVideo?.retransmittedPacketsSent ?? null,
    retransmittedBytesSent: pubLast.outVideo?.retransmittedBytesSent ?? null,
    keyFramesEncoded: pubLast.outVideo?.keyFramesEncoded ?? null,
    layers: pubLast.outVideos.map((v) => ({ rid: v.rid,
      frameSize: v.frameWidth ? `${v.frameWidth}x${v.frameHeight}` : null, bytesSent: v.bytesSent,
      framesEncoded: v.framesEncoded, targetBitrate: v.targetBitrate,
      qualityLimitationReason: v.qualityLimitationReason, keyFramesEncoded: v.keyFramesEncoded })),
  };

  const stalls = result.framesDecodedPerSecond
    .map((d, i) => [d, i + 1]).filter(([d]) => d <= 0).map(([, s]) => s);
  if (stalls.length && !o.allowFreeze) {
    errors.push(`video froze: framesDecoded did not rise in second(s) ${stalls.join(', ')} `
      + `of ${o.duration} (per second: ${result.framesDecodedPerSecond.join(' ')})`);
  }
  const aFirst = first.audio ?? {};
  if (!(result.audioPacketsReceived > (aFirst.packetsReceived ?? 0))) {
    errors.push(`audio packetsReceived did not rise: ${aFirst.packetsReceived ?? 0} -> ${result.audioPacketsReceived}`);
  }
  if (!(result.audioSamplesReceived > (aFirst.totalSamplesReceived ?? 0))) {
    errors.push(`audio totalSamplesReceived did not rise: ${aFirst.totalSamplesReceived ?? 0} -> ${result.audioSamplesReceived}`);
  }
  // Chromium's DTLS client offers use_srtp 0x0001, 0x0008, 0x0007
  // (AES_CM_128_HMAC_SHA1_80, AEAD_AES_256_GCM, AEAD_AES_128_GCM); the
  // server's preference decides. Two Chromiums (loopback) settle on CM; the
  // SFU prefers AEAD_AES_128_GCM and must get it.
  // Chromium 156 names the suite "SRTP_AEAD_AES_128_GCM" (BoringSSL's name);
  // the SDP/IANA name (RFC 7714) is "AEAD_AES_128_GCM". Compare without the prefix.
  result.srtpProfile = srtpProfile(result.srtpCipher);
  result.publisher.srtpProfile = srtpProfile(result.publisher.srtpCipher);
  for (const [who, cipher] of [['subscriber', result.srtpProfile], ['publisher', result.publisher.srtpProfile]]) {
    if (!o.loopback && cipher !== 'AEAD_AES_128_GCM') {
      errors.push(`${who} srtpCipher is ${JSON.stringify(cipher)}, expected "AEAD_AES_128_GCM"`);
    }
  }
}

// What an SFU answer negotiated for repair: its rtcp-fb values (all
// payload types) and whether it accepted RTX.
function negotiated(sdp) {
  const lines = sdp.split(/\r?\n/);
  return {
    feedback: [...new Set(lines.filter((l) => l.startsWith('a=rtcp-fb:'))
      .map((l) => l.replace(/^a=rtcp-fb:\S+\s+/, '')))],
    rtx: lines.some((l) => /^a=rtpmap:\d+ rtx\//i.test(l)),
  };
}

function srtpProfile(cipher) {
  return typeof cipher === 'string' ? cipher.replace(/^SRTP_/, '') : null;
}

async function dumpOffers(o, browser, origin) {
  const p = await browser.newPage();
  await p.goto(origin);
  const whip = await p.evaluate(() => makeOffer('publish'));
  await p.reload();
  const whep = await p.evaluate(() => makeOffer('subscribe'));
  mkdirSync(o.dumpOffers, { recursive: true });
  const files = {
    whip: join(o.dumpOffers, 'chrome-whip-offer.sdp'),
    whep: join(o.dumpOffers, 'chrome-whep-offer.sdp'),
  };
  writeFileSync(files.whip, whip);
  writeFileSync(files.whep, whep);
  return { ok: true, mode: 'dump-offers', browser: browser.version(), files, errors: [] };
}

async function main() {
  const o = options();
  const { server, origin } = await servePage();
  let browser = null;
  let result;
  let status;
  try {
    browser = await launch(o);
    result = o.dumpOffers ? await dumpOffers(o, browser, origin) : await run(o, browser, origin);
    result.browser = browser.version();
    status = result.ok ? 0 : EXIT_FAILED;
  } catch (e) {
    const harness = e instanceof HarnessError;
    result = { ok: false, errors: [harness ? e.message : `harness error: ${e.stack ?? e}`] };
    status = EXIT_HARNESS;
  } finally {
    if (browser) await browser.close().catch(() => {});
    server.close();
  }
  process.stdout.write(JSON.stringify(result) + '\n');
  if (!result.ok) process.stderr.write(`run.mjs: FAILED: ${result.errors.join('; ')}\n`);
  process.exit(status);
}

main();
