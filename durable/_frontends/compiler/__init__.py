"""The decorator's compiler: a ``@workflow`` function's source -> a :class:`~durable.Graph`.

``walk`` compiles the statements and is the entry point
(:func:`~durable._frontends.compiler.walk.compile_workflow`); ``graph`` holds
the state table and freezes it; ``source`` reads the source and resolves
names; ``primitives`` makes the states of durable's primitives (sleep,
signals, child workflows, map, parallel).
"""
