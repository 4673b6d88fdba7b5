"""Warden's policy language, shared by the agent and the server.

A *catalog* says how each messaging app looks on each OS; a *policy* says what
an organisation allows. The compiler turns both into a signed-ready bundle and
the engine evaluates observations against that bundle, with no I/O.
"""

from policies.errors import PolicyError, ValidationIssue

__all__ = ["PolicyError", "ValidationIssue"]
