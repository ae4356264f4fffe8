"""Launch files, parameters, the single-process runner and the instruction CLI."""
