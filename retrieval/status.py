"""What ``clipdex status --json`` prints: the keys of ``Index.status`` shown to users (no heavy imports)."""

STATUS_KEYS = ("collection", "points", "model", "dim", "student_of", "store", "roots", "offline", "problems",
               "ocr", "engines", "layout", "videos", "moments", "failed")
"""What ``clipdex status --json`` prints (``Index.status`` has a few more fields)."""
