"""Real processes for tests and benchmarks: shim under gunicorn, redis-server, npm CLIs (no test framework)."""
