"""Infrastructure every package may use: URLs and password redaction, process checks, file locks,
retry with backoff. Imports nothing from the project's other packages (the ground of the graph)."""
