"""``clipdex ingest``, ``search`` and ``status``."""
