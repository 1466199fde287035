"""STUN Binding through aioice (an independent Python STUN/ICE stack) against a meshgate port.

Usage: python aioice_stun.py PORT
Prints the server-reflexive address aioice learned; exits 1 if it learned none.
"""
import asyncio
import sys

import aioice
import aioice.ice

# On the host, gather from loopback only: the test may talk to nothing else.
aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]


async def main(port: int) -> int:
    conn = aioice.Connection(ice_controlling=True, stun_server=("127.0.0.1", port))
    try:
        await asyncio.wait_for(conn.gather_candidates(), 10)
        srflx = [c for c in conn.local_candidates if c.type == "srflx"]
        host = [c for c in conn.local_candidates if c.type == "host"]
        for c in conn.local_candidates:
            print(f"{c.type} {c.host}:{c.port}")
        if not srflx:
            print("no server-reflexive candidate", file=sys.stderr)
            return 1
        # The reflexive address is the host candidate's own, seen from the server.
        if (srflx[0].host, srflx[0].port) != (host[0].host, host[0].port):
            print("reflexive address differs from the host candidate", file=sys.stderr)
            return 1
        return 0
    finally:
        await conn.close()


sys.exit(asyncio.run(main(int(sys.argv[1]))))
