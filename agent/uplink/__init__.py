"""Talking to the server: the HTTP client, check-ins and policy sync, the spool,
key trust, backoff."""
