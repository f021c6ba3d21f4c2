"""The gateway / data-concentrator agent (``openami gateway --config FILE``).

- :mod:`~openami.edge.config`: the TOML configuration, validated (one error naming the field);
- :mod:`~openami.edge.meters`: configured meters as the head-end collectors' targets;
- :mod:`~openami.edge.sink`: the collectors' publisher at the edge, into the archive;
- :mod:`~openami.edge.archive`: readings, events and the outbox of batches (SQLite, WAL);
- :mod:`~openami.edge.forwarder`: the MQTT link to the head-end (envelopes, ACKs, store and forward);
- :mod:`~openami.edge.timesync`: clock offset, round trip and drift from TIME answers;
- :mod:`~openami.edge.pulse`: pulse inputs read from counter files;
- :mod:`~openami.edge.agent`: the loop that ties them together.

See ``docs/operations/gateway.md`` and ``docs/drivers/gateway-link.md``.
"""
