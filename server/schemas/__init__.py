"""The server's wire format: what the HTTP API answers and accepts, one module per resource.

Pure pydantic, no FastAPI and no database: the routes declare these models as
their answers (so `/openapi.json` says what the server really sends), and the
`warden` CLI parses the answers into the very same models.
"""
