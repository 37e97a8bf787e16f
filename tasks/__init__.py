"""Tasks: one module per external system; each task observes or changes exactly one thing."""
