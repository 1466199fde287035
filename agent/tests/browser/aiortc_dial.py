#!/usr/bin/env python3
"""An aiortc (PyPI) node dialling a meshgate gateway the way the browser page does: POST
/v1/dial with an ES256 JWT, the `ctl` session handshake, then a `tcp` stream to a target that
echoes N random bytes back, compared by SHA-256. Prints one JSON line; exit 0 on success, 1 with
the error otherwise.

    python aiortc_dial.py --url http://10.77.0.1:8080/ [--bytes N] [--target svc:echo] [--to ID]
                          [--timeout-s 120]
    python aiortc_dial.py --url ... --jwt-case CASE      # negative tests: prints the HTTP answer

--jwt-case posts one offer and prints {"case", "status", "body"} (exit 0 on any HTTP answer):
  expired        iat/exp 1000/700 s in the past
  bad-signature  one bit of the signature flipped
  wrong-sub      sub is another node ID than the offer's fingerprint
  wrong-aud      aud is another node ID than the gateway's
  long-lived     exp = iat + 3600 (more than 300 s)
  missing        no Authorization header
  garbage-sdp    a valid token, but the body is not SDP
  valid          a valid token (the answer is not used)

aiortc makes its own certificate per RTCPeerConnection: the node ID is read from its own offer's
`a=fingerprint:sha-256` (aiortc lists sha-256, sha-384 and sha-512). The JWT is signed with a
separate `cryptography` P-256 key whose public part travels in the header's `jwk`; the DER
signature is turned into JWS's raw r||s.
"""

import argparse
import asyncio
import base64
import hashlib
import json
import os
import re
import struct
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

DATA, OPEN, OPEN_OK, OPEN_ERR, EOF, RESET, CREDIT, PING, PONG = range(9)
MAX = 16384
WINDOW = 262144
GRANT = 65536
HIGH = 1 << 20


def frame(kind, payload=b""):
    if isinstance(payload, str):
        payload = payload.encode()
    if len(payload) > MAX:
        raise ValueError(f"frame payload {len(payload)} > {MAX}")
    return struct.pack("<IHBB", 0, len(payload), kind, 0) + payload


def parse(msg):
    """Frames in one SCTP message (normally one); ValueError on anything malformed."""
    if isinstance(msg, str):
        raise ValueError("a text message where frames are binary")
    out, i = [], 0
    while i < len(msg):
        if len(msg) - i < 8:
            raise ValueError("truncated frame header")
        _, length, kind, flags = struct.unpack_from("<IHBB", msg, i)
        if length > MAX or flags != 0 or kind > PONG or len(msg) - i - 8 < length:
            raise ValueError(f"bad frame (type {kind}, flags {flags}, length {length})")
        out.append((kind, bytes(msg[i + 8 : i + 8 + length])))
        i += 8 + length
    return out


def b32(raw):
    return base64.b32encode(raw).decode().rstrip("=").lower()


def b64url(raw):
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def sdp_node_id(sdp):
    m = re.search(r"^a=fingerprint:sha-256 ([0-9A-Fa-f:]{95})\s*$", sdp, re.M)
    return b32(bytes.fromhex(m.group(1).replace(":", ""))) if m else None


def make_jwt(sub, aud, case="valid", now=None):
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    key = ec.generate_private_key(ec.SECP256R1())
    pub = key.public_key().public_numbers()
    jwk = {"kty": "EC", "crv": "P-256", "x": b64url(pub.x.to_bytes(32, "big")),
           "y": b64url(pub.y.to_bytes(32, "big"))}
    iat = int(time.time() if now is None else now)
    exp = iat + 300
    if case == "expired":
        iat, exp = iat - 1000, iat - 700
    elif case == "long-lived":
        exp = iat + 3600
    elif case == "wrong-sub":
        sub = b32(os.urandom(32))
    elif case == "wrong-aud":
        aud = b32(os.urandom(32))
    head = b64url(json.dumps({"alg": "ES256", "typ": "JWT", "jwk": jwk}, separators=(",", ":")).encode())
    body = b64url(json.dumps({"sub": sub, "aud": aud, "iat": iat, "exp": exp}, separators=(",", ":")).encode())
    r, s = decode_dss_signature(key.sign(f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256())))
    sig = bytearray(r.to_bytes(32, "big") + s.to_bytes(32, "big"))
    if case == "bad-signature":
        sig[10] ^= 0x01
    return f"{head}.{body}.{b64url(bytes(sig))}"


def http(method, url, body=None, headers=None, timeout=10):
    """(status, headers, body text) of one request; HTTP errors are answers, not exceptions."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode(errors="replace")


async def ahttp(*a, **kw):
    return await asyncio.to_thread(http, *a, **kw)


class Channel:
    """One data channel carrying frames: a queue of parsed frames, send credit and buffering."""

    def __init__(self, ch, name):
        self.ch, self.name = ch, name
        self.frames = asyncio.Queue()
        self.credit = WINDOW
        self.opened = asyncio.Event()
        self.closed = False
        self.wakeup = asyncio.Event()
        ch.bufferedAmountLowThreshold = HIGH // 4
        ch.on("open", self.opened.set)
        ch.on("bufferedamountlow", self.wakeup.set)
        ch.on("message", self._message)
        ch.on("close", self._close)

    def _message(self, msg):
        try:
            for kind, payload in parse(msg):
                if kind == CREDIT:
                    self.credit += struct.unpack("<I", payload)[0] if len(payload) == 4 else 0
                    self.wakeup.set()
                elif kind == PING:
                    self.send(PONG, payload)
                else:
                    self.frames.put_nowait((kind, payload))
        except ValueError as e:
            self.frames.put_nowait((RESET, f"protocol error from the peer: {e}".encode()))

    def _close(self):
        self.closed = True
        self.frames.put_nowait((None, b""))
        self.wakeup.set()

    def send(self, kind, payload=b""):
        self.ch.send(frame(kind, payload))

    async def next(self):
        kind, payload = await self.frames.get()
        if kind is None:
            raise RuntimeError(f"{self.name}: channel closed")
        return kind, payload

    async def write(self, data):
        i = 0
        while i < len(data):
            if self.closed:
                raise RuntimeError(f"{self.name}: channel closed while writing")
            if self.credit <= 0 or self.ch.bufferedAmount > HIGH:
                self.wakeup.clear()
                try:
                    # bufferedamountlow is the wake-up; the short timeout re-checks anyway.
                    await asyncio.wait_for(self.wakeup.wait(), 0.05)
                except asyncio.TimeoutError:
                    pass
                continue
            n = min(MAX, self.credit, len(data) - i)
            self.send(DATA, data[i : i + n])
            self.credit -= n
            i += n


async def offer_pc(args):
    from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection

    servers = []
    if args.turn:
        servers.append(RTCIceServer(urls=args.turn, username=args.turn_user, credential=args.turn_pass))
    pc = RTCPeerConnection(RTCConfiguration(iceServers=servers))
    # The DTLS client's first channel gets SCTP stream 0: the session's control channel.
    ctl = Channel(pc.createDataChannel("ctl", protocol="meshgate/1"), "ctl")
    await pc.setLocalDescription(await pc.createOffer())
    return pc, ctl, pc.localDescription.sdp


async def run(args):
    base = args.url if args.url.endswith("/") else args.url + "/"
    status, headers, text = await ahttp("GET", urllib.parse.urljoin(base, "v1/info"))
    if status != 200:
        raise RuntimeError(f"GET /v1/info: HTTP {status}: {text.strip()}")
    info = json.loads(text)
    gateway, mesh = info["id"], info["mesh"]
    # The gateway's clock dates the token (routers may have no real time).
    try:
        from email.utils import parsedate_to_datetime
        now = parsedate_to_datetime(headers["Date"]).timestamp()
    except (KeyError, TypeError, ValueError):
        now = time.time()
    peer = args.to or gateway
    dial_url = urllib.parse.urljoin(base, "v1/dial")
    if args.to:
        dial_url += "?to=" + urllib.parse.quote(args.to)

    pc, ctl, offer = await offer_pc(args)
    try:
        me = sdp_node_id(offer)
        if args.jwt_case:
            auth = {} if args.jwt_case == "missing" else {
                "Authorization": "Bearer " + make_jwt(me, gateway, args.jwt_case, now)}
            body = b"this is not SDP\r\n" if args.jwt_case == "garbage-sdp" else offer.encode()
            status, _, text = await ahttp("POST", dial_url, body=body,
                                          headers={"Content-Type": "application/sdp", **auth})
            return {"ok": True, "case": args.jwt_case, "status": status, "body": text}

        t0 = time.monotonic()
        status, _, answer = await ahttp(
            "POST", dial_url, body=offer.encode(),
            headers={"Content-Type": "application/sdp",
                     "Authorization": "Bearer " + make_jwt(me, gateway, "valid", now)}, timeout=15)
        if status != 200:
            raise RuntimeError(f"POST /v1/dial: HTTP {status}: {answer.strip()}")
        got = sdp_node_id(answer)
        if got != peer:
            raise RuntimeError(f"the answer's fingerprint is {got}, expected node {peer}")
        from aiortc import RTCSessionDescription
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))

        # Session handshake on ctl: OPEN(hello) both ways, OPEN_OK both ways.
        await ctl.opened.wait()
        ctl.send(OPEN, f"meshgate/1 mesh={mesh} role=node")
        sent_ok = got_ok = False
        hello = None
        while not (sent_ok and got_ok):
            kind, payload = await ctl.next()
            if kind == OPEN:
                hello = payload.decode(errors="replace")
                if not hello.startswith("meshgate/1") or f"mesh={mesh}" not in hello.split():
                    ctl.send(OPEN_ERR, f"expected meshgate/1 mesh={mesh}")
                    raise RuntimeError(f"peer hello {hello!r} is not meshgate/1 mesh={mesh}")
                ctl.send(OPEN_OK)
                sent_ok = True
            elif kind == OPEN_OK:
                got_ok = True
            elif kind in (OPEN_ERR, RESET):
                raise RuntimeError(f"session refused: {payload.decode(errors='replace')}")
        session_ms = round((time.monotonic() - t0) * 1000)

        # One `tcp` stream: OPEN(target), then DATA within credit, EOF; read back until EOF.
        t1 = time.monotonic()
        tcp = Channel(pc.createDataChannel("tcp", protocol="meshgate/1"), args.target)
        await tcp.opened.wait()
        tcp.send(OPEN, args.target)
        data = os.urandom(args.bytes)

        async def writer():
            await tcp.write(data)
            tcp.send(EOF)

        async def reader():
            h, n, consumed, opened = hashlib.sha256(), 0, 0, False
            while True:
                kind, payload = await tcp.next()
                if kind == OPEN_OK:
                    opened = True
                elif kind == OPEN_ERR:
                    raise RuntimeError(f"OPEN_ERR for {args.target}: {payload.decode(errors='replace')}")
                elif kind == RESET:
                    raise RuntimeError(f"{args.target}: stream reset: {payload.decode(errors='replace')}")
                elif kind == DATA:
                    h.update(payload)
                    n += len(payload)
                    consumed += len(payload)
                    if consumed >= GRANT:
                        tcp.send(CREDIT, struct.pack("<I", consumed))
                        consumed = 0
                elif kind == EOF:
                    if not opened:
                        raise RuntimeError(f"{args.target}: EOF before OPEN_OK")
                    return n, h.hexdigest()

        w = asyncio.ensure_future(writer())
        try:
            n, sha_received = await reader()
            await w
        finally:
            w.cancel()
        ms = round((time.monotonic() - t1) * 1000)
        tcp.ch.close()
        sha_sent = hashlib.sha256(data).hexdigest()
        return {"ok": n == len(data) and sha_sent == sha_received, "bytes": len(data), "received": n,
                "sha_sent": sha_sent, "sha_received": sha_received, "ms": ms,
                "session_ms": session_ms, "id": me, "peer": peer, "hello": hello}
    finally:
        await pc.close()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True)
    p.add_argument("--bytes", type=int, default=1 << 20)
    p.add_argument("--target", default="svc:echo")
    p.add_argument("--to")
    p.add_argument("--turn")
    p.add_argument("--turn-user", default="")
    p.add_argument("--turn-pass", default="")
    p.add_argument("--timeout-s", type=float, default=120)
    p.add_argument("--jwt-case", choices=["expired", "bad-signature", "wrong-sub", "wrong-aud",
                                           "long-lived", "missing", "garbage-sdp", "valid"])
    args = p.parse_args()
    try:
        result = asyncio.run(asyncio.wait_for(run(args), args.timeout_s))
    except asyncio.TimeoutError:
        result = {"ok": False, "error": f"overall timeout of {args.timeout_s} s"}
    except Exception as e:  # noqa: BLE001 - every failure becomes the JSON line
        result = {"ok": False, "error": f"{type(e).__name__}: {e}"}
    print(json.dumps(result), flush=True)
    sys.exit(0 if result.get("ok") else 1)


if __name__ == "__main__":
    main()
