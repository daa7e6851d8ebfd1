"""The model layer: records, ids, retry policies, the clock and the record codec.

Everything above builds on these; they import nothing of durable's but
``durable.errors``.
"""
