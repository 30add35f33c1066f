"""Developer scripts (the dependency audit of `make lint`)."""
