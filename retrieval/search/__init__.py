"""How a search runs, in one folder.

* ``request``  — :class:`SearchRequest`: every field and limit a search takes (library, CLI and HTTP alike);
* ``vector``   — the query vector: text, example image and negative prompts turned into one unit vector;
* ``run``      — :func:`run.search`, the entry point :meth:`retrieval.index.Index.search` calls: the filter,
  like/unlike by stored vectors, or the hybrid path;
* ``refs``     — like/unlike examples: indexed paths or point ids and their stored vectors;
* ``concept``  — searches that rank by, steer from or filter on a personal concept (retrieval.concepts);
* ``hybrid``   — CLIP, fused with BM25 over recognised text, and ``text_in_image``;
* ``cutoff``   — the adaptive relevance threshold (``--relevant``);
* ``fetch``    — downloading a query image given as a URL, bounded in size and time;
* ``context``  — what the search path needs of an open collection (store, settings, query encoder).

Text normalisation shared with ingest's OCR pass lives beside this package in :mod:`retrieval.words`, the
unit-vector arithmetic shared with the stores in :mod:`retrieval.vectors`. This ``__init__`` imports nothing, so
a store can use ``retrieval.vectors`` and the CLI can read ``request`` without loading the rest.
"""
