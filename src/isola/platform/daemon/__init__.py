"""isolad: the platform served over HTTP on a unix socket (and optionally TCP).

`app` (the FastAPI app), `routes/` (one module per resource), `auth` (who is calling), `errors` (errors as
answers), `models` (the bodies, hence the OpenAPI schemas), `server` (sockets, signals, the `isolad` command).
"""
