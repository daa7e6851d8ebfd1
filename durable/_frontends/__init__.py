"""The front-ends: the ways a user writes a workflow.

The decorator API (``@workflow``, ``@step``, ``parallel()``, ``map()``, durable
sleeps and signal waits, plain calls outside an engine) with the compiler
that turns a workflow's source into a graph, and the state-machine builder.
Both hand the engine a definition; neither runs anything itself.
"""
