"""The randomized fault suite (issue 11): schedules (``schedule.py``) run on engine processes (``fleet.py``,
``worker.py``) by ``runner.py``, checked against the guarantees by ``checker.py``; ``suite.py`` drives many."""
