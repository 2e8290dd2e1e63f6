"""Runs a loaded sentence-transformers model through ONNX Runtime.

The same weights, exported once with ``torch.onnx.export`` and cached, give
the same vectors (checked at load) about three times faster for one short
query on this CPU than torch's eager forward: a query embedding is most of a
memory recall's cost, and a recall happens on every turn.

Only the common shape is accelerated: a transformer encoder, mean pooling,
and (optionally) normalization. Anything else (another pooling, extra dense
layers) keeps the torch path, which is always the fallback.

Starting without torch: importing torch and sentence-transformers and loading
the weights takes about 5 s of CPU here, on every start, while the ONNX
session and the fast tokenizer load in about 0.3 s. So once an export has
been checked against torch, a manifest beside it records what a start needs
(the tokenizer file, the token limit, the dimension) and the vectors torch
gave for two probe texts. The next start of the same model folder (same files,
sizes and times) loads only ONNX Runtime and ``tokenizers`` and is trusted
only if it reproduces those vectors; anything else takes the torch path,
which writes a new manifest."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

# Vectors from both paths must agree this closely (cosine) on a probe text,
# or the ONNX path is not used: stored vectors must stay comparable.
AGREEMENT = 0.9999
PROBE = "Checking that both runtimes embed this sentence the same way — и по-русски тоже."
# Past any model's token limit: the fast path must truncate as torch's does.
LONG_PROBE = " ".join(["A long text checks truncation; длинный текст проверяет обрезку."] * 60)
MANIFEST_VERSION = 1
OPSET = 17
CHUNK = 64  # texts per run


class UnsupportedModel(Exception):
    """The model's modules are not the shape this runtime reproduces."""


def supported_shape(model: Any) -> bool:
    names = [type(module).__name__ for module in model]
    if names not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
        return False
    config = model[1].get_config_dict()
    return config.get("pooling_mode") == "mean" or config.get("pooling_mode_mean_tokens") is True


Tokenize = Callable[[list[str]], dict[str, np.ndarray]]


class OnnxSentenceRuntime:
    """``encode`` equivalent to ``SentenceTransformer.encode(..., normalize_embeddings=True)``
    for a mean-pooled encoder. Built from a loaded model (``from_model``) or,
    without torch, from a manifest an earlier start wrote (``from_manifest``)."""

    def __init__(
        self, session: Any, tokenize: Tokenize, dim: int, *, export_path: Path | None = None,
        max_length: int | None = None,
    ) -> None:
        """``export_path`` and ``max_length``: known when built from the model, for its manifest."""
        self.export_path = export_path
        self.max_length = max_length
        self._session = session
        self._tokenize = tokenize
        self._inputs = [i.name for i in session.get_inputs()]
        self.dim = dim

    @classmethod
    def from_model(cls, model: Any, cache_dir: Path | None, *, threads: int = 1) -> OnnxSentenceRuntime:
        if not supported_shape(model):
            raise UnsupportedModel("only transformer + mean pooling models run on ONNX Runtime")
        tokenizer = model.tokenizer
        max_length = int(model.max_seq_length or 512)

        def tokenize(texts: list[str]) -> dict[str, np.ndarray]:
            return dict(tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="np"))

        path = _exported_model(model, cache_dir)
        try:
            session = _session(path, threads)
        except Exception:  # noqa: BLE001 - a damaged cache file: export once more
            log.warning("the cached ONNX export %s does not load; exporting again", path)
            path.unlink(missing_ok=True)
            path = _exported_model(model, cache_dir)
            session = _session(path, threads)
        dimension = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return cls(session, tokenize, int(dimension()), export_path=path, max_length=max_length)

    @classmethod
    def from_manifest(cls, folder: Path, cache_dir: Path, *, threads: int = 1) -> OnnxSentenceRuntime | None:
        """The runtime an earlier start checked for this model folder, or
        None (no manifest, the folder changed, or the vectors differ)."""
        manifest_path = cache_dir / f"{source_key(folder)}.json"
        try:
            manifest = json.loads(manifest_path.read_text())
            from tokenizers import Tokenizer

            tokenizer = Tokenizer.from_file(str(folder / manifest["tokenizer"]))
            tokenizer.enable_truncation(max_length=int(manifest["max_length"]))
            tokenizer.enable_padding(pad_id=int(manifest["pad_id"]), pad_token=str(manifest["pad_token"]))
            session = _session(cache_dir / manifest["onnx"], threads)
            runtime = cls(session, _fast_tokenize(tokenizer), int(manifest["dim"]))
            references = {text: np.asarray(vector, dtype=np.float32) for text, vector in manifest["probes"].items()}
        except FileNotFoundError:
            return None
        except Exception as exc:  # noqa: BLE001 - a broken manifest only costs the slow start
            log.info("ONNX manifest %s not usable (%s: %s); loading through torch", manifest_path,
                     exc.__class__.__name__, exc)
            return None
        vectors = runtime.encode(list(references))
        if not all(float(v @ references[t]) >= AGREEMENT for t, v in zip(references, vectors, strict=True)):
            log.warning("the ONNX fast start gives other vectors than torch did for %s; loading through torch", folder)
            return None
        return runtime

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Texts sorted by length and run in chunks, so little time goes to padding."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(order), CHUNK):
            chunk = order[start : start + CHUNK]
            out[chunk] = self._encode_chunk([texts[i] for i in chunk])
        return out

    def _encode_chunk(self, texts: list[str]) -> np.ndarray:
        batch = self._tokenize(texts)
        feed = {name: np.asarray(batch[name], dtype=np.int64) for name in self._inputs}
        (tokens,) = self._session.run(["last_hidden_state"], feed)
        mask = feed["attention_mask"][..., None].astype(np.float32)
        pooled = (tokens * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return np.ascontiguousarray(pooled / np.clip(norms, 1e-12, None), dtype=np.float32)


def _session(path: Path, threads: int) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # warnings about unused initializers are noise here
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _fast_tokenize(tokenizer: Any) -> Tokenize:
    def tokenize(texts: list[str]) -> dict[str, np.ndarray]:
        encodings = tokenizer.encode_batch(texts)
        return {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        }

    return tokenize


def source_key(folder: Path) -> str:
    """A model folder's identity without loading it: its place and every
    file's name, size and modification time."""
    root = folder.resolve()
    digest = hashlib.sha256(f"{MANIFEST_VERSION}|{OPSET}|{root}".encode())
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.relative_to(root)}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:24]


def write_manifest(
    runtime: OnnxSentenceRuntime, model: Any, folder: Path, cache_dir: Path, encode_torch: Callable[[list[str]], np.ndarray]
) -> None:
    """Record what a start without torch needs, once the export agreed with
    torch. Only for a model folder with a fast tokenizer file."""
    if runtime.export_path is None or not (folder / "tokenizer.json").is_file():
        return
    tokenizer = model.tokenizer
    probes = [PROBE, LONG_PROBE]
    manifest = {
        "version": MANIFEST_VERSION,
        "onnx": runtime.export_path.name,
        "tokenizer": "tokenizer.json",
        "max_length": runtime.max_length,
        "pad_token": tokenizer.pad_token,
        "pad_id": tokenizer.pad_token_id,
        "dim": runtime.dim,
        "probes": {text: vector.tolist() for text, vector in zip(probes, encode_torch(probes), strict=True)},
    }
    path = cache_dir / f"{source_key(folder)}.json"
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_text(json.dumps(manifest))
    temporary.replace(path)


def agrees(runtime: OnnxSentenceRuntime, reference: np.ndarray) -> bool:
    """``reference``: the torch path's normalized vector for PROBE."""
    return float(runtime.encode([PROBE])[0] @ reference) >= AGREEMENT


def _exported_model(model: Any, cache_dir: Path | None) -> Path:
    """The ONNX file for this model, exported on first use. Cached by the
    weights' identity so a changed model is exported again."""
    folder = cache_dir or Path(tempfile.gettempdir()) / "arium-onnx"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{_fingerprint(model)}.onnx"
    if not path.exists():
        _export(model, path)
    return path


def _fingerprint(model: Any) -> str:
    import torch

    digest = hashlib.sha256(f"{torch.__version__}|{OPSET}".encode())
    for name, tensor in model[0].auto_model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().flatten()[:64].numpy().tobytes())
        digest.update(str(tuple(tensor.shape)).encode())
    return digest.hexdigest()[:24]


def _export(model: Any, path: Path) -> None:
    import torch

    encoder = model[0].auto_model.eval()
    names = list(model.tokenizer.model_input_names)

    class Encoder(torch.nn.Module):
        """Keyword arguments by name: transformers' positional order varies by version."""

        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
            return self.encoder(**dict(zip(names, tensors))).last_hidden_state

    sample = model.tokenizer(["a sample sentence"], return_tensors="pt")
    axes = {name: {0: "batch", 1: "tokens"} for name in names}
    axes["last_hidden_state"] = {0: "batch", 1: "tokens"}
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracer notes
        torch.onnx.export(
            Encoder(),
            tuple(sample[name] for name in names),
            str(temporary),
            input_names=names,
            output_names=["last_hidden_state"],
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )
    temporary.replace(path)  # atomic: a concurrent loader never sees half a file
    log.info("exported the embedding model to ONNX: %s", path)
