"""``statefleet loadtest``: conversation-aware load against running instances, with failure injection.

A tool, not part of the runtime: the engine, the store and the server never import it.
"""
