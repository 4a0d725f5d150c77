"""The local stack: `identity dev` (with `--demo`) on embedded PostgreSQL and the embedded broker.

Only this package (and the test suite) uses the `embedded` extra; the service's processes never import it.
"""
