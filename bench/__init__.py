"""`make bench`: the pipeline measured against plain redis-py on the same Redis."""
