"""The server's data access, one module per idea.

Conventions every module follows:

- Functions take an open `Session` first and never commit: the caller (one
  request, one CLI command) decides when the unit of work is done, so an
  answer is only sent after its changes are durable.
- Admin mutations (secrets, tokens, users, agents, policies) take `actor` and
  write their audit entry themselves, in the same transaction as the change:
  an action cannot land without its audit row, nor the other way round.
- Secrets are returned in clear exactly once, from the function that creates
  them; only their hashes are stored.
- `as_dict` helpers give the JSON shape the HTTP API uses.
"""
