"""``clipdex train`` and ``clipdex eval`` (filled in by the training work)."""
