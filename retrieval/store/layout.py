"""The store layout number, importable without numpy or qdrant-edge (``clipdex status`` through a server)."""

LAYOUT = 2
"""The store layout this clipdex writes. 1 (clipdex before 0.x of issue 18): float32 vectors, a keyword
list ``ancestors`` (every folder above a file) indexed for ``--folder``. 2: float16 vectors, no
``ancestors``; ``--folder`` is a prefix match on the ``path`` index; payload indexes memory-mapped once
their segment is sealed. Layout-1 stores open, search and ingest unchanged (their points keep getting
``ancestors``); ``clipdex rebuild`` rewrites one in layout 2."""
