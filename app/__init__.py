"""The delivery layer: HTTP API, CLI and the embedded database default."""
