"""Prompt token estimates that work offline and never undercount by design.

tiktoken downloads its BPE files on first use. On a machine with no internet that download
fails, so the files are taken from the installed ``bpe-openai`` wheel (a registry package,
installed with spendbrake) and placed in a private tiktoken cache under the names tiktoken
looks for. If that is impossible the estimate falls back to UTF-8 bytes, a hard upper bound
for byte-level BPE (every token is at least one byte), and says so once.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import logging
import os
import re
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)

_BLOB = "https://openaipublic.blob.core.windows.net/encodings/{}.tiktoken"


@dataclass(frozen=True)
class _BpeFile:
    name: str
    sha256: str


_FILES = {
    "o200k_base": _BpeFile(
        "o200k_base", "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"
    ),
    "cl100k_base": _BpeFile(
        "cl100k_base", "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
    ),
}

# tiktoken.encoding_name_for_model, for the families spendbrake meters (reference §2.4).
_CL100K_PREFIXES = ("gpt-4-", "gpt-3.5", "text-embedding-3", "text-embedding-ada")


class Encoder(Protocol):
    def encode_ordinary(self, text: str) -> list[int]: ...


# A giant text is counted in pieces of about this many characters. Each piece is converted to
# UTF-8 and its token ids are stored while holding the GIL (tiktoken releases it only while it
# encodes), so no piece stalls the event loop's thread for more than a few milliseconds.
PIECE_CHARS = 1 << 20
# Where a piece may end: after a line break, before optional spaces or tabs and then a letter
# or digit. No pre-token of o200k's or cl100k's pattern runs across such a point (only
# whitespace, "\r", "\n" and "/" ever follow a "\n" inside one), and a piece's end there is
# read as its pattern reads the letter or digit that follows, so the pieces' counts add up to
# exactly the whole text's count (tests/test_tokens.py checks it on many texts).
_PIECE_END = re.compile(r"\n(?=[ \t]*[A-Za-z0-9])")
# Past a piece's nominal end, such a point is searched for this many characters at a time (a
# long line makes a longer piece, never a wrong count).
_PIECE_END_SEARCH_CHARS = 1 << 16


def pieces(text: str, size: int = PIECE_CHARS) -> list[tuple[int, int]]:
    """Where to cut ``text`` into pieces of about ``size`` characters, each ending after a line
    break at which no pre-token is split (see ``_PIECE_END``)."""
    cuts: list[tuple[int, int]] = []
    start = 0
    while len(text) - start > size:
        found = None
        # Searched a window at a time: one search over a giant line would hold the GIL.
        for window in range(start + size, len(text), _PIECE_END_SEARCH_CHARS):
            if found := _PIECE_END.search(text, window, window + _PIECE_END_SEARCH_CHARS):
                break
        if found is None:
            break
        cuts.append((start, found.end()))
        start = found.end()
    cuts.append((start, len(text)))
    return cuts


def _count_piece(encoder: Encoder, text: str) -> int:
    # tiktoken's Rust core: encode_to_tiktoken_buffer (behind Encoding.encode_to_numpy) gives
    # the token ids as a buffer of uint32, where encode_ordinary makes a Python int of each
    # (~36 bytes each, all made with the GIL held).
    core: Any = getattr(encoder, "_core_bpe", None)
    if not hasattr(core, "encode_to_tiktoken_buffer"):
        return len(encoder.encode_ordinary(text))  # another tiktoken: exact, with a list
    try:
        # No special token is allowed, so "<|endoftext|>" counts as text, as encode_ordinary.
        ids = core.encode_to_tiktoken_buffer(text, set())
    except UnicodeEncodeError:
        # A lone surrogate: counted as tiktoken's encode_ordinary counts it.
        return len(encoder.encode_ordinary(text))
    return memoryview(ids).nbytes // 4  # uint32 ids


def encoding_for_model(model: str) -> str:
    if model == "gpt-4" or (model.startswith(_CL100K_PREFIXES) and not model.startswith("gpt-4o")):
        return "cl100k_base"
    return "o200k_base"


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "spendbrake" / "tiktoken"


def _bpe_openai_data_dir() -> Path:
    """Where the bpe-openai wheel keeps its files, found without importing (and so running)
    that package: only its data is wanted."""
    spec = importlib.util.find_spec("bpe_openai")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the bpe-openai package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def install_offline_bpe(cache_dir: Path | None = None) -> Path:
    """Copy the BPE files from the bpe-openai wheel into a tiktoken cache; return its path.

    Idempotent and checked: a file is (re)written only when missing or its sha256 is wrong.
    """
    directory = cache_dir or _cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    for bpe in _FILES.values():
        target = directory / hashlib.sha1(_BLOB.format(bpe.name).encode()).hexdigest()
        if target.exists() and hashlib.sha256(target.read_bytes()).hexdigest() == bpe.sha256:
            continue
        data = gzip.decompress((_bpe_openai_data_dir() / f"{bpe.name}.tiktoken.gz").read_bytes())
        if hashlib.sha256(data).hexdigest() != bpe.sha256:
            raise RuntimeError(f"bpe-openai's {bpe.name} does not match tiktoken's expected file")
        with tempfile.NamedTemporaryFile(dir=directory, delete=False) as tmp:
            tmp.write(data)
        os.replace(tmp.name, target)  # atomic: a concurrent reader never sees half a file
    return directory


class TokenEstimator:
    """Counts prompt tokens with tiktoken when its files are at hand, else bounds them by bytes."""

    def __init__(self, cache_dir: Path | None = None) -> None:
        self._cache_dir = cache_dir
        self._encoders: dict[str, Encoder | None] = {}
        self._lock = threading.Lock()
        self.fallback_reason: str | None = None

    def _encoder(self, name: str) -> Encoder | None:
        with self._lock:
            if name not in self._encoders:
                self._encoders[name] = self._load(name)
            return self._encoders[name]

    def _load(self, name: str) -> Encoder | None:
        try:
            directory = install_offline_bpe(self._cache_dir)
            # tiktoken reads this variable on every load, so setting it here is enough; it also
            # keeps tiktoken from ever trying the network for these files.
            os.environ["TIKTOKEN_CACHE_DIR"] = str(directory)
            import tiktoken

            return tiktoken.get_encoding(name)
        except Exception as e:  # any failure: fall back to the byte bound, loudly, once
            self.fallback_reason = f"{type(e).__name__}: {e}"
            log.warning(
                "spendbrake: tokenizer %s unavailable (%s); prompt estimates use UTF-8 bytes, "
                "a safe but loose upper bound",
                name,
                self.fallback_reason,
            )
            return None

    def is_loaded(self, model: str) -> bool:
        """Whether counting for ``model`` is ready now, without loading (which takes ~1 s)."""
        return encoding_for_model(model) in self._encoders

    def count(self, text: str, model: str) -> int:
        encoder = self._encoder(encoding_for_model(model))
        if encoder is None:
            # surrogatepass: a lone surrogate from JSON's "\\ud83d" counts its 3 bytes, not fails.
            return len(text.encode("utf-8", "surrogatepass"))
        if len(text) <= PIECE_CHARS:
            # encode_ordinary: prompts may contain "<|endoftext|>", which encode() would reject.
            # For a text this short its list is quicker than the buffer, and soon made.
            return len(encoder.encode_ordinary(text))
        # A giant text, piece by piece: between pieces the GIL goes back to other threads.
        cuts = pieces(text, PIECE_CHARS)
        return sum(_count_piece(encoder, text[start:end]) for start, end in cuts)

    def warm_up(self, model: str = "gpt-4o") -> None:
        self._encoder(encoding_for_model(model))
