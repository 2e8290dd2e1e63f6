"""Per-user long-term memory: embedder, FAISS indexes, store, extraction."""
