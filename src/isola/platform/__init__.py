"""The platform: tenants, quotas, scheduling and reconcile over one state store.

`store` (SQLite connection, transactions, migrations), `records` (typed rows) and `repos` (per-table access)
are the foundation the rest of the platform is written against.
"""
