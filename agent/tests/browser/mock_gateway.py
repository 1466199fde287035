#!/usr/bin/env python3
"""A stand-in for a meshgate gateway's signaling listener, in aiortc: serves the page (GET /),
GET /v1/info and POST /v1/dial (checks the ES256 JWT as the gateway must), and answers the
session and stream protocol with an echo service `svc:echo` (`svc:` anything else gets OPEN_ERR).
It was written to develop index.html and the drivers before the Rust listener existed; the Rust
tests do not use it. Differences from the real gateway: aiortc answers with full ICE and
a=setup:active (so the offerer is the DTLS server and its channels get odd SCTP stream ids),
and there is no rate limit.

    python mock_gateway.py --listen 127.0.0.1:8099 --page agent/static/index.html
"""

import argparse
import asyncio
import base64
import json
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from aiortc_dial import (CREDIT, DATA, EOF, GRANT, MAX, OPEN, OPEN_ERR, OPEN_OK, PING, PONG,  # noqa: E402
                         RESET, WINDOW, b32, frame, parse, sdp_node_id)

import aiortc.rtcpeerconnection  # noqa: E402
from aiortc import RTCPeerConnection, RTCSessionDescription  # noqa: E402
from aiortc.rtcdtlstransport import RTCCertificate  # noqa: E402
from cryptography.exceptions import InvalidSignature  # noqa: E402
from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature  # noqa: E402

MESH = "meshgate"
CERT = RTCCertificate.generateCertificate()
# One certificate for every answer, so the mock has one node ID.
aiortc.rtcpeerconnection.RTCCertificate.generateCertificate = staticmethod(lambda: CERT)
ID = b32(bytes.fromhex(next(f.value for f in CERT.getFingerprints() if f.algorithm == "sha-256").replace(":", "")))


def unb64(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def check_jwt(token, offer_id):
    """None if the token is good for this offer, else (status, reason)."""
    try:
        h, b, s = token.split(".")
        head, claims, sig = json.loads(unb64(h)), json.loads(unb64(b)), unb64(s)
        jwk = head["jwk"]
        if head.get("alg") != "ES256" or jwk.get("kty") != "EC" or jwk.get("crv") != "P-256" or len(sig) != 64:
            return 400, "token: expected ES256 with an EC P-256 jwk"
        pub = ec.EllipticCurvePublicNumbers(int.from_bytes(unb64(jwk["x"]), "big"),
                                            int.from_bytes(unb64(jwk["y"]), "big"), ec.SECP256R1()).public_key()
    except (ValueError, KeyError, TypeError) as e:
        return 400, f"malformed token: {e}"
    try:
        der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
        pub.verify(der, f"{h}.{b}".encode(), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return 401, "token: bad signature"
    now = time.time()
    if not isinstance(claims.get("exp"), int) or not isinstance(claims.get("iat"), int):
        return 401, "token: iat and exp must be integers"
    if claims["exp"] - claims["iat"] > 300:
        return 401, "token: exp is more than 300 s after iat"
    if claims["exp"] < now - 60:
        return 401, "token: expired"
    if claims.get("aud") != ID:
        return 401, "token: aud is not this gateway"
    if claims.get("sub") != offer_id:
        return 401, "token: sub is not the offer's sha-256 fingerprint"
    return None


class Stream:
    """Echoes what it gets, within the credit the dialer grants; grants as it echoes."""

    def __init__(self, ch):
        self.ch, self.credit, self.pending, self.eof = ch, WINDOW, bytearray(), False
        self.opened, self.unacked = False, 0
        ch.on("message", self.message)

    def send(self, kind, payload=b""):
        self.ch.send(frame(kind, payload))

    def message(self, msg):
        for kind, payload in parse(msg):
            if kind == OPEN and not self.opened:
                target = payload.decode()
                if target == "svc:echo":
                    self.opened = True
                    self.send(OPEN_OK)
                else:
                    self.send(OPEN_ERR, f"no service {target!r} here")
            elif kind == DATA:
                self.pending += payload
            elif kind == EOF:
                self.eof = True
            elif kind == CREDIT:
                self.credit += struct.unpack("<I", payload)[0]
            elif kind == PING:
                self.send(PONG, payload)
            elif kind == RESET:
                self.ch.close()
        self.pump()

    def pump(self):
        while self.pending and self.credit > 0:
            n = min(MAX, self.credit, len(self.pending))
            self.send(DATA, bytes(self.pending[:n]))
            del self.pending[:n]
            self.credit -= n
            self.unacked += n
            if self.unacked >= GRANT:
                self.send(CREDIT, struct.pack("<I", self.unacked))
                self.unacked = 0
        if self.eof and not self.pending:
            self.eof = False
            self.send(EOF)


def on_channel(ch):
    if ch.label == "ctl":
        def message(msg):
            for kind, payload in parse(msg):
                if kind == OPEN:
                    ch.send(frame(OPEN, f"meshgate/1 mesh={MESH} role=gateway"))
                elif kind == OPEN_OK:
                    ch.send(frame(OPEN_OK))
                elif kind == PING:
                    ch.send(frame(PONG, payload))
        ch.on("message", message)
    else:
        Stream(ch)


PCS = []


async def answer(offer):
    pc = RTCPeerConnection()
    PCS.append(pc)
    pc.on("datachannel", on_channel)
    await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
    await pc.setLocalDescription(await pc.createAnswer())
    return pc.localDescription.sdp


def serve(listen, page, loop):
    class H(BaseHTTPRequestHandler):
        def reply(self, code, body, ctype="text/plain; charset=utf-8"):
            raw = body.encode() if isinstance(body, str) else body
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(raw)))
            self.send_header("Access-Control-Allow-Origin", "*")
            self.send_header("Access-Control-Expose-Headers", "Date")
            self.end_headers()
            self.wfile.write(raw)

        def do_OPTIONS(self):
            self.send_response(204)
            self.send_header("Access-Control-Allow-Origin", "*")
            self.send_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
            self.send_header("Access-Control-Allow-Headers", "authorization, content-type")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self):
            if self.path == "/":
                self.reply(200, Path(page).read_bytes(), "text/html; charset=utf-8")
            elif self.path == "/v1/info":
                self.reply(200, json.dumps({"id": ID, "short_id": ID[:8], "mesh": MESH, "role": "gateway"}),
                           "application/json")
            else:
                self.reply(404, "not found\n")

        def do_POST(self):
            if not self.path.startswith("/v1/dial"):
                return self.reply(404, "not found\n")
            if "?to=" in self.path:
                return self.reply(404, "unknown node (the mock reaches no other node)\n")
            offer = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode(errors="replace")
            offer_id = sdp_node_id(offer)
            if not offer_id:
                return self.reply(400, "malformed SDP: no a=fingerprint:sha-256\n")
            auth = self.headers.get("Authorization", "")
            if not auth.startswith("Bearer "):
                return self.reply(401, "missing Authorization: Bearer token\n")
            bad = check_jwt(auth[7:], offer_id)
            if bad:
                return self.reply(bad[0], bad[1] + "\n")
            sdp = asyncio.run_coroutine_threadsafe(answer(offer), loop).result(15)
            self.reply(200, sdp, "application/sdp")

        def log_message(self, fmt, *a):
            sys.stderr.write("mock: " + fmt % a + "\n")

    host, port = listen.rsplit(":", 1)
    ThreadingHTTPServer((host, int(port)), H).serve_forever()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--listen", default="127.0.0.1:8099")
    p.add_argument("--page", default=str(Path(__file__).parents[2] / "static" / "index.html"))
    p.add_argument("--lifetime-s", type=float, default=600)
    a = p.parse_args()
    loop = asyncio.new_event_loop()
    threading.Thread(target=serve, args=(a.listen, a.page, loop), daemon=True).start()
    print(json.dumps({"id": ID, "listen": a.listen}), flush=True)
    loop.run_until_complete(asyncio.sleep(a.lifetime_s))


if __name__ == "__main__":
    main()
