"""The dev harness: real processes for `make run`, the fault-injection suite, the bench
and the tests. A private redis-server or Redis Cluster on free loopback ports, the
services as `python -m` children that die with their parent, and one Stack of them."""
