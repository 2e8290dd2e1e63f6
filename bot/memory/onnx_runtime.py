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
which writes a new manifest.

int8 feed-forward layers (``int8=True``): each encoder layer's two
feed-forward MatMuls, two thirds of its arithmetic, quantized to int8 with
per-channel weight scales (ONNX Runtime's dynamic quantization), made once
from the checked fp32 export. A 42-token question encodes in 7.6 ms against
11.3 ms here; the vectors stay within cosine 0.98 of fp32 (median 0.993),
and recall on bench/recall_set.py is the same as fp32's. Quantizing the
attention projections as well was faster still but lost recall, so they stay
fp32 (BENCHMARKS.md, "P1: an int8 query encoder and the
embedder's GIL"). These are other vectors than fp32's, so the embedder's name
says so and stored memories are re-embedded."""

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
# Appended to the model's name for the int8 variant: the name is stored with
# each vector, so switching variants re-embeds instead of mixing.
INT8_SUFFIX = "+int8-ffn"
# The int8 variant's vector for PROBE must be at least this close to torch's
# fp32 one (measured: 0.983 at worst over the recall set's texts).
INT8_AGREEMENT = 0.97


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
        max_length: int | None = None, int8: bool = False,
    ) -> None:
        """``export_path`` and ``max_length``: known when built from the model, for its manifest.
        ``int8``: the session runs the int8 variant."""
        self.export_path = export_path
        self.max_length = max_length
        self.int8 = int8
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
        backend = getattr(tokenizer, "backend_tokenizer", None)  # a fast (Rust) tokenizer's own object
        if backend is not None and tokenizer.pad_token_id is not None:
            from tokenizers import Tokenizer

            own = _configured(Tokenizer.from_str(backend.to_str()), max_length, tokenizer.pad_token_id, tokenizer.pad_token)
            tokenize = _fast_tokenize(own)
        else:

            def tokenize(texts: list[str]) -> dict[str, np.ndarray]:
                return dict(tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="np"))

        path, session = _cached_session(lambda: _exported_model(model, cache_dir), threads)
        dimension = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return cls(session, tokenize, int(dimension()), export_path=path, max_length=max_length)

    def named(self, model_name: str) -> str:
        """The name stored with this runtime's vectors: the int8 variant's are another model's."""
        return model_name + INT8_SUFFIX if self.int8 else model_name

    def to_int8(self, reference: np.ndarray, *, threads: int = 1) -> OnnxSentenceRuntime | None:
        """This fp32 export's int8 variant, or None when the graph has no
        feed-forward MatMuls we recognize or the variant strays from
        ``reference`` (torch's vector for PROBE)."""
        export = self.export_path
        if export is None:
            return None
        try:
            path, session = _cached_session(lambda: _int8_export(export), threads)
        except UnsupportedModel:
            return None
        runtime = OnnxSentenceRuntime(session, self._tokenize, self.dim, export_path=path,
                                      max_length=self.max_length, int8=True)
        closeness = float(runtime.encode([PROBE])[0] @ reference)
        if closeness < INT8_AGREEMENT:
            log.warning("the int8 embedding model strays from fp32 (cosine %.3f); keeping fp32", closeness)
            return None
        return runtime

    @classmethod
    def from_manifest(
        cls, folder: Path, cache_dir: Path, *, threads: int = 1, int8: bool = False
    ) -> OnnxSentenceRuntime | None:
        """The runtime an earlier start checked for this model folder (its
        int8 variant with ``int8``), or None (no manifest, the folder changed,
        or the vectors differ)."""
        manifest_path = _manifest_path(folder, cache_dir, int8)
        try:
            manifest = json.loads(manifest_path.read_text())
            from tokenizers import Tokenizer

            tokenizer = _configured(Tokenizer.from_file(str(folder / manifest["tokenizer"])), int(manifest["max_length"]),
                                    int(manifest["pad_id"]), str(manifest["pad_token"]))
            session = _session(cache_dir / manifest["onnx"], threads)
            runtime = cls(session, _fast_tokenize(tokenizer), int(manifest["dim"]), int8=int8)
            references = {text: np.asarray(vector, dtype=np.float32) for text, vector in manifest["probes"].items()}
        except FileNotFoundError:
            return None
        except Exception as exc:  # noqa: BLE001 - a broken manifest only costs the slow start
            log.info("ONNX manifest %s not usable (%s: %s); loading through torch", manifest_path,
                     exc.__class__.__name__, exc)
            return None
        vectors = runtime.encode(list(references))
        if not all(float(v @ references[t]) >= AGREEMENT for t, v in zip(references, vectors, strict=True)):
            log.warning("the ONNX fast start gives other vectors than the checked ones for %s; loading through torch", folder)
            return None
        return runtime

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Texts sorted by length and run in chunks, so little time goes to padding.
        The int8 variant runs one text at a time: its activations are
        quantized with one scale per run, taken from every text (and padding)
        in it, so a text's vector would depend on its batch. One by one, a
        text always gets the same vector, as stored and query vectors must."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        size = 1 if self.int8 else CHUNK
        for start in range(0, len(order), size):
            chunk = order[start : start + size]
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


def _cached_session(make: Callable[[], Path], threads: int) -> tuple[Path, Any]:
    """A session on the file ``make`` returns (made once, then cached); a
    cached file that does not load (damaged) is made once more."""
    path = make()
    try:
        return path, _session(path, threads)
    except Exception:  # noqa: BLE001 - a damaged cache file
        log.warning("the cached model %s does not load; making it again", path)
        path.unlink(missing_ok=True)
        path = make()
        return path, _session(path, threads)


def _session(path: Path, threads: int) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # warnings about unused initializers are noise here
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _configured(tokenizer: Any, max_length: int, pad_id: int, pad_token: str) -> Any:
    """A ``tokenizers.Tokenizer`` set up as sentence-transformers calls it:
    truncated at the model's limit, padded to the longest text of a batch."""
    tokenizer.enable_truncation(max_length=max_length)
    tokenizer.enable_padding(pad_id=pad_id, pad_token=pad_token)
    return tokenizer


def _fast_tokenize(tokenizer: Any) -> Tokenize:
    def tokenize(texts: list[str]) -> dict[str, np.ndarray]:
        # One text (a query): ``encode`` keeps the GIL for its ~50 us.
        # ``encode_batch`` lets the GIL go, and taking it back while the event
        # loop runs Python waits up to the interpreter's switch interval
        # (5 ms): measured 1.2 ms of a P1 turn's query embedding.
        encodings = [tokenizer.encode(texts[0])] if len(texts) == 1 else tokenizer.encode_batch(texts)
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


def _manifest_path(folder: Path, cache_dir: Path, int8: bool) -> Path:
    return cache_dir / f"{source_key(folder)}{INT8_SUFFIX if int8 else ''}.json"


def write_manifest(
    runtime: OnnxSentenceRuntime, model: Any, folder: Path, cache_dir: Path, encode_checked: Callable[[list[str]], np.ndarray]
) -> None:
    """Record what a start without torch needs, once the export agreed with
    torch. Only for a model folder with a fast tokenizer file.
    ``encode_checked`` gives the probes' reference vectors: torch's for the
    fp32 export, the checked int8 runtime's own for its variant."""
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
        "probes": {text: vector.tolist() for text, vector in zip(probes, encode_checked(probes), strict=True)},
    }
    path = _manifest_path(folder, cache_dir, runtime.int8)
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


def feed_forward_matmuls(graph: Any) -> list[str]:
    """The names of the encoder layers' feed-forward MatMuls with constant
    weights: BERT-style exports name them ``.../intermediate/dense/MatMul``
    and ``.../output/dense/MatMul`` (the attention block's output is
    ``.../attention/output/dense``, left out)."""
    weights = {initializer.name for initializer in graph.initializer}
    return [
        node.name
        for node in graph.node
        if node.op_type == "MatMul" and node.input[1] in weights
        and ("/intermediate/dense/" in node.name or ("/output/dense/" in node.name and "/attention/" not in node.name))
    ]


class _QuantizerChatter(logging.Filter):
    """ONNX Runtime's quantizer logs through the root logger: advice to
    pre-process the model (it is for static quantization) and a line for each
    tensor it leaves in fp32, which is every one we did not name. Arium logs
    through named loggers, so root records are dropped while it runs."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name != "root"


def _int8_export(path: Path) -> Path:
    """The int8 variant of an fp32 export, made once beside it. Raises
    UnsupportedModel when the graph has no feed-forward MatMuls to quantize."""
    target = path.with_name(f"{path.stem}{INT8_SUFFIX}.onnx")
    if target.exists():
        return target
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    nodes = feed_forward_matmuls(onnx.load(str(path), load_external_data=False).graph)
    if not nodes:
        raise UnsupportedModel("no feed-forward MatMuls to quantize")
    temporary = target.with_suffix(f".{os.getpid()}.tmp")
    chatter = _QuantizerChatter()
    logging.getLogger().addFilter(chatter)
    try:
        quantize_dynamic(
            str(path), str(temporary), weight_type=QuantType.QInt8, per_channel=True, nodes_to_quantize=nodes,
            # The exporter leaves some tensors' types to inference; they are all float.
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    finally:
        logging.getLogger().removeFilter(chatter)
    temporary.replace(target)  # atomic, as for the export
    log.info("made the int8 variant of the embedding model: %s", target)
    return target
