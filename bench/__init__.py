"""The bus benchmark suite (issue 8): `python -m bench [--quick] [--json] [--scenario NAME]`.

It starts its own Redis (AOF, appendfsync everysec), `bus serve`, `bus worker`
processes, a fast receiver and a load generator, all on 127.0.0.1, and
verifies every run by counting events at the receiver.
"""
