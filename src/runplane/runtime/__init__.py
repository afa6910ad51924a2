"""LangGraph, adapted: graphs from a `langgraph.json`, LangGraph's checkpointers opened on runplane's
database (with rollback, copy and fenced writes), and conversion of graph state to JSON.

Both sides use it through core protocols: the worker executes graphs with it, the API reads and
updates thread state through `core.graphs.GraphRuntime`. The composition root builds it.
"""
