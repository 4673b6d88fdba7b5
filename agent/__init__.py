"""The Warden endpoint agent: sensors, the policy engine's findings, and the CLI.

Depends on `policies` and the agent extra (psutil, watchdog, requests,
pydantic-settings, cryptography) only; never on `server`.
"""
