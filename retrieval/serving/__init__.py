"""What makes ``clipdex serve`` safe on a shared network: ASGI middleware (errors, limits, API key),
the HTTP protocol settings, and image decoding in worker processes with a time budget."""
