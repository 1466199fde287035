#!/usr/bin/env python3
"""Send one STUN Binding request (RFC 8489) to HOST PORT and check the success response.

Exit 0 and print the XOR-MAPPED-ADDRESS on success; exit 1 with "STUN not answered" (or what
was wrong with the answer) otherwise. Standard library only, so it runs anywhere the smoke test
does. Usage: stun_binding.py HOST PORT [TIMEOUT_S]
"""

import os
import socket
import struct
import sys

MAGIC_COOKIE = 0x2112A442
BINDING_REQUEST = 0x0001
BINDING_SUCCESS = 0x0101
XOR_MAPPED_ADDRESS = 0x0020
ATTEMPTS = 3  # UDP: retransmit, as RFC 8489 section 6.2.1 does


def fail(msg):
    print(f"stun_binding: {msg}", file=sys.stderr)
    sys.exit(1)


def xor_mapped_address(body, txid):
    pos = 0
    while pos + 4 <= len(body):
        atype, alen = struct.unpack_from("!HH", body, pos)
        value = body[pos + 4 : pos + 4 + alen]
        if atype == XOR_MAPPED_ADDRESS and len(value) >= 8:
            family, xport = struct.unpack_from("!xBH", value)
            port = xport ^ (MAGIC_COOKIE >> 16)
            if family == 1:
                raw = bytes(a ^ b for a, b in zip(value[4:8], struct.pack("!I", MAGIC_COOKIE)))
                return f"{socket.inet_ntop(socket.AF_INET, raw)}:{port}"
            if family == 2 and len(value) >= 20:
                key = struct.pack("!I", MAGIC_COOKIE) + txid
                raw = bytes(a ^ b for a, b in zip(value[4:20], key))
                return f"[{socket.inet_ntop(socket.AF_INET6, raw)}]:{port}"
        pos += 4 + ((alen + 3) & ~3)  # attributes are padded to 4 bytes
    return None


def main():
    if len(sys.argv) not in (3, 4):
        fail("usage: stun_binding.py HOST PORT [TIMEOUT_S]")
    host, port = sys.argv[1], int(sys.argv[2])
    timeout = float(sys.argv[3]) if len(sys.argv) == 4 else 6.0
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    txid = os.urandom(12)
    # 20-byte header, no attributes: type, length 0, magic cookie, transaction ID.
    request = struct.pack("!HHI", BINDING_REQUEST, 0, MAGIC_COOKIE) + txid
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout / ATTEMPTS)
        for _ in range(ATTEMPTS):
            sock.sendto(request, (host, port))
            try:
                data, _ = sock.recvfrom(2048)
            except socket.timeout:
                continue
            except ConnectionRefusedError:
                fail(f"STUN not answered: nothing listens on udp {host}:{port}")
            if len(data) < 20:
                fail(f"STUN answer too short ({len(data)} bytes): {data.hex()}")
            mtype, mlen, cookie = struct.unpack_from("!HHI", data)
            if cookie != MAGIC_COOKIE or data[8:20] != txid:
                continue  # not an answer to us
            if mtype != BINDING_SUCCESS:
                fail(f"STUN answered with message type 0x{mtype:04x}, not 0x0101 (Binding success)")
            mapped = xor_mapped_address(data[20 : 20 + mlen], txid)
            if mapped is None:
                fail("STUN Binding success without XOR-MAPPED-ADDRESS")
            print(f"STUN Binding success from udp {host}:{port}: XOR-MAPPED-ADDRESS {mapped}")
            return
    fail(f"STUN not answered: no Binding response from udp {host}:{port} within {timeout:g} s")


if __name__ == "__main__":
    main()
