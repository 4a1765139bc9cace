"""The applications the HTTP benchmark serves: statefleet's echo agent and the two comparison apps.

All of them answer ``POST /v1/conversations/{id}/messages`` with ``{"text": ...}``, so one load script fits all.
"""
