"""``/microphone``: record from the browser into the gateway's ``/stream`` endpoint and watch the
call's trajectory live, to try callsense without a telephone system.

The page asks for the microphone (getUserMedia), resamples it to 16 kHz in the browser and sends
100 ms binary frames of stereo PCM16 (channel 0 = a silent agent, channel 1 = you, the customer:
customer emotion is the product's default). A browser's WebSocket cannot send an Authorization
header, so when the gateway has a token the page gets a ticket for its one call id, minted here
with that token (which never reaches the browser) and valid for two minutes to connect.
"""

from __future__ import annotations

import html
import json
import secrets
from typing import TYPE_CHECKING, Any

from callsense.dashboard.auth import SECURITY_HEADERS
from callsense.ingest.gateway import mint_ticket
from flask import Flask, Response, request

if TYPE_CHECKING:
    from callsense.settings import Settings

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>callsense: microphone</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/assets/style.css"></head>
<body><nav><span class="brand">callsense</span><a href="/">Live</a><a href="/history">History</a>
<a href="/upload">Upload</a><a href="/webhooks">Webhooks</a><a href="/microphone">Microphone</a>
</nav><main>
<h2>Microphone</h2>
<p>Speak as a customer would: your voice streams to the gateway as call
<code id="mic-call">{call_id}</code> (you are the customer channel) and the live view shows
its emotion trajectory as the pipeline produces it. Nothing is recorded beyond what any call
keeps.</p>
<p><button id="mic-start">Start</button> <button id="mic-stop" disabled>Stop</button>
<span id="mic-status" role="status">idle</span></p>
<p><a id="mic-watch" href="/call/{call_id}">Watch this call's trajectory</a></p>
</main>
<script>
const CFG = {cfg};
const RATE = 16000, FRAME = 1600;  // 100 ms per binary frame
let ws = null, ctx = null, node = null, stream = null, pending = [];
const status = (t) => {{ document.getElementById("mic-status").textContent = t; }};
function send(samples) {{
  // stereo int16: channel 0 (agent) silent, channel 1 (customer) = the microphone
  const out = new Int16Array(samples.length * 2);
  for (let i = 0; i < samples.length; i++) {{
    const v = Math.max(-1, Math.min(1, samples[i]));
    out[2 * i + 1] = v < 0 ? v * 32768 : v * 32767;
  }}
  ws.send(out.buffer);
}}
async function start() {{
  document.getElementById("mic-start").disabled = true;
  try {{
    stream = await navigator.mediaDevices.getUserMedia({{audio: {{channelCount: 1,
      echoCancellation: false, noiseSuppression: false, autoGainControl: false}}}});
  }} catch (e) {{
    status("microphone refused: " + e.message);
    document.getElementById("mic-start").disabled = false;
    return;
  }}
  ws = new WebSocket(CFG.url);
  ws.binaryType = "arraybuffer";
  ws.onclose = (e) => status(e.code === 1000 ? "stopped" : "closed: " + e.code + " " + e.reason);
  ws.onerror = () => status("cannot reach the gateway at " + CFG.url);
  ws.onopen = () => {{
    ws.send(JSON.stringify({{type: "start", call_id: CFG.call_id, sample_rate: RATE,
      channels: 2, encoding: "pcm16", agent_channel: 0, queue: "microphone"}}));
    ctx = new AudioContext({{sampleRate: RATE}});
    const src = ctx.createMediaStreamSource(stream);
    node = ctx.createScriptProcessor(4096, 1, 1);
    node.onaudioprocess = (ev) => {{
      const x = ev.inputBuffer.getChannelData(0);
      for (let i = 0; i < x.length; i++) pending.push(x[i]);
      while (pending.length >= FRAME && ws.readyState === 1) send(pending.splice(0, FRAME));
    }};
    src.connect(node); node.connect(ctx.destination);
    status("streaming");
    document.getElementById("mic-stop").disabled = false;
  }};
}}
function stop() {{
  document.getElementById("mic-stop").disabled = true;
  if (node) node.disconnect();
  if (stream) stream.getTracks().forEach((t) => t.stop());
  if (ws && ws.readyState === 1) {{
    if (pending.length) send(pending.splice(0));
    ws.send(JSON.stringify({{type: "stop"}}));
    ws.close(1000);
  }}
  if (ctx) ctx.close();
}}
document.getElementById("mic-start").onclick = start;
document.getElementById("mic-stop").onclick = stop;
</script></body></html>
"""


def gateway_url(settings: Settings, host: str) -> str:
    """The gateway as the browser reaches it: the public URL when set, else the dashboard's host
    on the gateway port."""
    if settings.gateway_public_url:
        return settings.gateway_public_url.rstrip("/")
    return f"ws://{host.rsplit(':', 1)[0]}:{settings.gateway_port}"


def install_microphone(server: Flask, settings: Settings) -> None:
    @server.get("/microphone")
    def microphone() -> Any:
        call_id = f"mic-{secrets.token_hex(6)}"
        base = gateway_url(settings, request.host)
        url = base + "/stream"
        token = settings.gateway_token
        if token is not None:
            url += "?ticket=" + mint_ticket(token.get_secret_value(), call_id)
        cfg = json.dumps({"url": url, "call_id": call_id}).replace("</", "<\\/")
        body = PAGE.format(call_id=html.escape(call_id), cfg=cfg)
        # this page alone may open a WebSocket to the gateway
        csp = SECURITY_HEADERS["Content-Security-Policy"].replace(
            "connect-src 'self'", f"connect-src 'self' {base.split('?')[0]}"
        )
        return Response(body, mimetype="text/html", headers={"Content-Security-Policy": csp})
