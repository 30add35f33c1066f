"""Fault injection: run the real pipeline under load, break it, heal it, then check that
every accepted dispatch was processed or dead-lettered (`make chaos`)."""
