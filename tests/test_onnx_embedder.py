"""The ONNX Runtime path gives the torch path's vectors, and falls back cleanly."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bot.memory.embedder import SentenceTransformerEmbedder, resolve_model
from bot.memory.onnx_runtime import (
    INT8_AGREEMENT,
    INT8_SUFFIX,
    PROBE,
    OnnxSentenceRuntime,
    source_key,
    supported_shape,
    write_manifest,
)

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
    OnnxSentenceRuntime.from_model(model, tmp_path)
    [exported] = list(tmp_path.glob("*.onnx"))
    stamp = exported.stat().st_mtime_ns
    again = OnnxSentenceRuntime.from_model(model, tmp_path)
    assert list(tmp_path.glob("*")) == [exported] and exported.stat().st_mtime_ns == stamp
    assert again.encode(["hello"]).shape == (1, embedder.dim)


def test_a_corrupt_cached_export_is_exported_again(tmp_path: Path, embedder: SentenceTransformerEmbedder) -> None:
    OnnxSentenceRuntime.from_model(embedder._model, tmp_path)
    [exported] = list(tmp_path.glob("*.onnx"))
    exported.write_bytes(b"not a model")
    repaired = OnnxSentenceRuntime.from_model(embedder._model, tmp_path)
    assert exported.stat().st_size > 1_000_000
    assert np.allclose(repaired.encode(["hello"]), embedder.encode(["hello"]), atol=1e-5)


def test_without_onnx_the_torch_path_gives_the_same_vectors(embedder: SentenceTransformerEmbedder) -> None:
    plain = SentenceTransformerEmbedder(onnx=False)
    assert plain.runtime == "torch"
    assert np.allclose(plain.encode(TEXTS[:2]), embedder.encode(TEXTS[:2]), atol=1e-4)


def test_other_model_shapes_keep_torch(embedder: SentenceTransformerEmbedder) -> None:
    assert supported_shape(embedder._model)
    assert not supported_shape(list(embedder._model)[:1])  # no pooling: not ours to reproduce


@pytest.fixture(scope="module")
def checked_export(tmp_path_factory: pytest.TempPathFactory, embedder: SentenceTransformerEmbedder) -> Path:
    """A cache folder as a first start leaves it: the export and its manifest."""
    cache = tmp_path_factory.mktemp("models")
    runtime = OnnxSentenceRuntime.from_model(embedder._model, cache)
    folder = Path(resolve_model(None)[0])
    write_manifest(runtime, embedder._model, folder, cache, embedder._encode_torch)
    return cache


def test_a_later_start_runs_the_checked_export_without_torch(
    checked_export: Path, tmp_path: Path, embedder: SentenceTransformerEmbedder
) -> None:
    """In a fresh interpreter, as at a restart: torch and sentence-transformers
    are never imported, and the vectors are torch's."""
    said, vectors = _load_in_a_fresh_interpreter(checked_export, tmp_path, int8=False)
    assert said == ["OnnxEmbedder", embedder.name, str(embedder.dim), "False", "False"]
    assert np.min(np.sum(vectors * embedder._encode_torch(TEXTS), axis=1)) > 0.9999


def _load_in_a_fresh_interpreter(cache: Path, tmp_path: Path, *, int8: bool) -> tuple[list[str], np.ndarray]:
    """What ``load_embedder`` gives at a restart, from ``cache``: its class,
    name, dimension, whether torch and sentence-transformers were imported,
    and its vectors for TEXTS."""
    out = tmp_path / "vectors.npy"
    script = (
        "import json, sys, numpy as np\n"
        "from pathlib import Path\n"
        "from bot.memory.embedder import load_embedder\n"
        f"e = load_embedder(cache_dir=Path({str(cache)!r}), int8={int8!r})\n"
        f"np.save({str(out)!r}, e.encode(json.loads(sys.argv[1])))\n"
        "print(type(e).__name__, e.name, e.dim, 'torch' in sys.modules, 'sentence_transformers' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, json.dumps(TEXTS)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"}, check=True)
    return done.stdout.split(), np.load(out)


def test_a_manifest_that_does_not_reproduce_torch_is_not_trusted(checked_export: Path, tmp_path: Path) -> None:
    folder = Path(resolve_model(None)[0])
    assert OnnxSentenceRuntime.from_manifest(folder, checked_export) is not None
    manifest_path = checked_export / f"{source_key(folder)}.json"
    good = manifest_path.read_text()
    try:
        manifest = json.loads(good)
        manifest["probes"] = {text: [-x for x in vector] for text, vector in manifest["probes"].items()}
        manifest_path.write_text(json.dumps(manifest))
        assert OnnxSentenceRuntime.from_manifest(folder, checked_export) is None
        manifest_path.write_text("{not json")
        assert OnnxSentenceRuntime.from_manifest(folder, checked_export) is None
    finally:
        manifest_path.write_text(good)
    assert OnnxSentenceRuntime.from_manifest(folder, tmp_path) is None, "no manifest there"


def test_a_changed_model_folder_has_another_key(tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(b"1234")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "config.json").write_text("{}")
    before = source_key(tmp_path)
    assert source_key(tmp_path) == before
    (tmp_path / "weights.bin").write_bytes(b"12345")
    assert source_key(tmp_path) != before


# The int8 variant (BOT_EMBEDDING_INT8) --------------------------------------


@pytest.fixture(scope="module")
def int8_export(tmp_path_factory: pytest.TempPathFactory, embedder: SentenceTransformerEmbedder) -> Path:
    """A cache folder as a first start with BOT_EMBEDDING_INT8 leaves it:
    the fp32 export, its int8 variant and the variant's manifest."""
    cache = tmp_path_factory.mktemp("int8")
    runtime = embedder._onnx_runtime(cache, 1, int8=True)
    assert runtime is not None and runtime.int8
    return cache


def _quantized_matmuls(path: Path) -> int:
    import onnx

    return sum(node.op_type in ("MatMulInteger", "DynamicQuantizeMatMul")
               for node in onnx.load(str(path)).graph.node)


def test_the_int8_variant_quantizes_the_feed_forward_layers_only(
    int8_export: Path, embedder: SentenceTransformerEmbedder
) -> None:
    [fp32] = [p for p in int8_export.glob("*.onnx") if INT8_SUFFIX not in p.name]
    [int8] = int8_export.glob(f"*{INT8_SUFFIX}.onnx")
    assert _quantized_matmuls(fp32) == 0
    assert _quantized_matmuls(int8) == 12  # two per encoder layer, six layers; attention stays fp32
    runtime = OnnxSentenceRuntime.from_manifest(Path(resolve_model(None)[0]), int8_export, int8=True)
    assert runtime is not None and runtime.int8
    closeness = np.sum(runtime.encode(TEXTS) * embedder.encode(TEXTS), axis=1)
    assert closeness.min() > INT8_AGREEMENT, "close to fp32"
    assert closeness.max() < 0.99999, "but other vectors: the name has to tell them apart"
    # A text's vector does not depend on the texts encoded with it (a stored
    # memory was embedded in a batch, the query alone).
    batch = runtime.encode(TEXTS)
    for i, text in enumerate(TEXTS):
        assert np.allclose(runtime.encode([text])[0], batch[i], atol=1e-6)


def test_a_later_start_runs_the_int8_variant_without_torch_and_names_it(
    int8_export: Path, tmp_path: Path, embedder: SentenceTransformerEmbedder
) -> None:
    said, vectors = _load_in_a_fresh_interpreter(int8_export, tmp_path, int8=True)
    assert said == ["OnnxEmbedder", embedder.name + INT8_SUFFIX, str(embedder.dim), "False", "False"]
    runtime = OnnxSentenceRuntime.from_manifest(Path(resolve_model(None)[0]), int8_export, int8=True)
    assert runtime is not None
    assert np.allclose(vectors, runtime.encode(TEXTS), atol=1e-5)


def test_the_int8_and_fp32_manifests_never_stand_in_for_each_other(int8_export: Path) -> None:
    folder = Path(resolve_model(None)[0])
    assert OnnxSentenceRuntime.from_manifest(folder, int8_export, int8=True) is not None
    assert OnnxSentenceRuntime.from_manifest(folder, int8_export, int8=False) is None, "only the int8 manifest is there"


def test_a_damaged_int8_file_is_made_again(
    int8_export: Path, tmp_path: Path, embedder: SentenceTransformerEmbedder
) -> None:
    for exported in int8_export.glob("*.onnx"):  # a copy of the cache: no export, no quantization
        shutil.copy(exported, tmp_path)
    fp32 = OnnxSentenceRuntime.from_model(embedder._model, tmp_path)
    reference = embedder._encode_torch([PROBE])[0]
    first = fp32.to_int8(reference)
    assert first is not None and first.export_path is not None
    first.export_path.write_bytes(b"not a model")
    again = fp32.to_int8(reference)
    assert again is not None and again.export_path == first.export_path
    assert np.allclose(again.encode(TEXTS), first.encode(TEXTS), atol=1e-5), "the same quantization again"
    assert float(again.encode([PROBE])[0] @ reference) > INT8_AGREEMENT


def test_an_int8_variant_that_strays_is_not_used(int8_export: Path, embedder: SentenceTransformerEmbedder) -> None:
    fp32 = OnnxSentenceRuntime.from_model(embedder._model, int8_export)  # the cached export and variant
    assert fp32.to_int8(-embedder._encode_torch([PROBE])[0]) is None
