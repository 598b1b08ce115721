"""One router per resource: system, tenants, instances (with the console), hosts (with the scheduler)."""
