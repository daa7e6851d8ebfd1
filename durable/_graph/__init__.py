"""The graph layer: the workflow IR both front-ends produce, and what user code sees of a run.

States and graphs with their validation, catch matching, the workflow
context, diagrams, and :class:`~durable._graph.states.WorkflowSpec` (what a
workflow is, before any engine runs it). Pure: no I/O, no engine.
"""
