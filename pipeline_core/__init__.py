"""The shared core: what every process of the pipeline knows (settings from the
environment, the Redis connection, the wire format and key names, the log setup, the
reading of the group's state). It imports nothing from dispatcher, consumer or cli, and
holds no service policy."""
