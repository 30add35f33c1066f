"""Developer scripts; `run_local.py` is what `make run` runs."""
