"""The engine layer: runs workflow instances against a store.

The :class:`~durable._engine.engine.Engine` façade, the workflow service and
its run driver, the checkpointed step call every kind of step goes through,
the builder's interpreter, fan-out, durable sleeps, signals, child workflows,
suspended instances and their timers, events and jobs.
"""
