"""A cluster of aioipsec gateways (docs/cluster.md): RFC 5685 redirects placed by a shared
view of the members kept in Redis (or a static member list), and draining a gateway
without dropping its users' sessions.

* :mod:`aioipsec.cluster.settings`: the ``[cluster]`` table.
* :mod:`aioipsec.cluster.placement`: the policies (pure functions over a member view).
* :mod:`aioipsec.cluster.store`: membership, load and the drain flag in Redis (redis-py's
  asyncio client); a static view when no store is configured.
* :mod:`aioipsec.cluster.runtime`: the daemon side: the engine's placement hook, FQDN
  resolution for redirected clients, the ``redirect`` and ``drain`` control commands.
"""
