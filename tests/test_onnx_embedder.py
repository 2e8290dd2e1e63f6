"""The ONNX Runtime path gives the torch path's vectors, and falls back cleanly."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bot.memory.embedder import SentenceTransformerEmbedder
from bot.memory.onnx_runtime import OnnxSentenceRuntime, supported_shape

TEXTS = [
    "My sister moved to Paris last spring.",
    "Я люблю зелёный чай без сахара",
    "short",
    "a much longer sentence " * 40,  # past the model's 256 tokens: truncated alike
    "",
]


def test_onnx_vectors_match_torch_in_any_batch_order(tmp_path: Path, embedder: SentenceTransformerEmbedder) -> None:
    assert embedder.runtime == "onnxruntime"
    onnx = embedder.encode(TEXTS)
    torch = embedder._encode_torch(TEXTS)
    assert onnx.shape == (len(TEXTS), embedder.dim) and onnx.dtype == np.float32
    assert np.allclose(np.linalg.norm(onnx, axis=1), 1.0, atol=1e-5)
    assert np.min(np.sum(onnx * torch, axis=1)) > 0.9999
    # One at a time gives the same as in a padded batch.
    assert np.allclose(embedder.encode([TEXTS[1]])[0], onnx[1], atol=1e-5)


def test_the_export_is_cached_and_reused(tmp_path: Path, embedder: SentenceTransformerEmbedder) -> None:
    model = embedder._model
    OnnxSentenceRuntime(model, tmp_path)
    [exported] = list(tmp_path.glob("*.onnx"))
    stamp = exported.stat().st_mtime_ns
    again = OnnxSentenceRuntime(model, tmp_path)
    assert list(tmp_path.glob("*")) == [exported] and exported.stat().st_mtime_ns == stamp
    assert again.encode(["hello"]).shape == (1, embedder.dim)


def test_a_corrupt_cached_export_is_exported_again(tmp_path: Path, embedder: SentenceTransformerEmbedder) -> None:
    OnnxSentenceRuntime(embedder._model, tmp_path)
    [exported] = list(tmp_path.glob("*.onnx"))
    exported.write_bytes(b"not a model")
    repaired = OnnxSentenceRuntime(embedder._model, tmp_path)
    assert exported.stat().st_size > 1_000_000
    assert np.allclose(repaired.encode(["hello"]), embedder.encode(["hello"]), atol=1e-5)


def test_without_onnx_the_torch_path_gives_the_same_vectors(embedder: SentenceTransformerEmbedder) -> None:
    plain = SentenceTransformerEmbedder(onnx=False)
    assert plain.runtime == "torch"
    assert np.allclose(plain.encode(TEXTS[:2]), embedder.encode(TEXTS[:2]), atol=1e-4)


def test_other_model_shapes_keep_torch(embedder: SentenceTransformerEmbedder) -> None:
    assert supported_shape(embedder._model)
    assert not supported_shape(list(embedder._model)[:1])  # no pooling: not ours to reproduce
