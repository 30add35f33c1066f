"""HTTP dispatcher: turns requests into entries on a Redis stream."""
