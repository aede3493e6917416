"""The worker's sans-I/O core: pure decisions, no sockets, no Kafka, no event loop.

Modules (edges feed them plain data and perform the I/O they decide on):

* ``settings``  -- ``WorkerSettings`` from the operator's document plus env overrides;
  ``key_reference()`` is the table docs/worker-config.md is generated from.
* ``events``    -- ``RawRecord`` -> ``Event`` (one JSON parse), or ``BadRecord(reason)``.
* ``envelope``  -- event envelopes rendered once per event, batch frames, SSE messages.
* ``protocol``  -- close codes, control frames, defensive client-frame parsing.
* ``cursor``    -- the opaque resume id and ``ChannelPosition`` (per-partition offsets).
* ``window``    -- recent dispatched events per partition (the cheap resume path).
* ``resume``    -- ``plan_resume``: ``FromWindow`` / ``FromKafka`` / ``Reset(reason)``.
* ``replay``    -- ``ReplaySession``: replay with honest ids, then release live frames.
* ``principal`` -- who a connection is (organizations, user, token expiry).
* ``outbox``    -- per-connection bounded queue (count and bytes), batching, hold.
* ``hub``       -- org/user/broadcast indexes and the fan-out loop.
* ``dispatch``  -- the per-event live path: position, envelope, window, fan-out.
* ``auth``      -- token extraction, JWT verification, claims, origin allow-list.
* ``drain``     -- spreading reconnect advice and closes over the drain window.
* ``backoff``   -- the client reconnect policy (full jitter, capped).
"""
