"""Walking, decoding and batching images for ingest."""
