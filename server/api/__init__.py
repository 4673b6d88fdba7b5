"""The HTTP API: the agent door (`agent.py`) and the people door (`admin/`), sharing `deps.py`."""
