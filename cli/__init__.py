"""`pipeline`: the operator's command line. It reads the same environment as the
services (REDIS_URL, STREAM, GROUP, ...) and answers what redis-cli only shows raw."""
