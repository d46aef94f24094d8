"""The daemon's I/O side: sockets, the ESP data path, routes and timers.

Everything in here is glue between the sans-I/O engine (``ikev2``), the ESP data plane
(``esp``), the TUN device (``tun``), NAT traversal framing (``nat_t``) and the operating
system. ``aioipsec.daemon`` composes these pieces into one asyncio program.
"""
