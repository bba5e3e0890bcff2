"""The built-in loggers; each imports its package only when a config uses it."""
