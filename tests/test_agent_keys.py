"""Secrets, admin tokens and API-key fingerprints: made, hashed, compared, never kept."""

from spendbrake.agent_keys import (
    api_key_hash,
    api_key_hint,
    api_key_of_request,
    new_secret,
    secret_hash,
    secret_matches,
    split_password,
)


def test_made_secrets_are_long_random_and_never_contain_the_session_separator() -> None:
    made = {new_secret() for _ in range(200)}
    assert len(made) == 200
    assert all(len(s) >= 43 and "." not in s and ":" not in s for s in made)


def test_a_secret_matches_only_its_own_hash() -> None:
    secret = new_secret()
    assert secret_matches(secret, [secret_hash("other"), secret_hash(secret)])
    assert not secret_matches(secret + "x", [secret_hash(secret)])
    assert not secret_matches("", [secret_hash("")])  # an empty secret is no secret
    assert not secret_matches(secret, [])


def test_a_strict_proxy_password_is_the_secret_then_an_optional_session() -> None:
    assert split_password("abc") == ("abc", "")
    assert split_password("abc.run-7") == ("abc", "run-7")
    assert split_password("abc.run.7") == ("abc", "run.7")


def test_api_keys_are_found_wherever_each_sdk_puts_them() -> None:
    url = "https://api.openai.com/v1/chat/completions"
    assert api_key_of_request({"authorization": "Bearer sk-1"}, url) == "sk-1"
    assert api_key_of_request({"x-api-key": "sk-ant-2"}, url) == "sk-ant-2"
    assert api_key_of_request({"x-goog-api-key": "AIza3"}, url) == "AIza3"
    assert api_key_of_request({"api-key": "azure4"}, url) == "azure4"
    gemini = "https://generativelanguage.googleapis.com/v1beta/models/x:generateContent?key=AIza5"
    assert api_key_of_request({}, gemini) == "AIza5"
    assert api_key_of_request({"authorization": "Basic dXNlcjpwdw=="}, url) is None
    assert api_key_of_request({}, url) is None


def test_an_api_key_is_known_by_a_keyed_hash_and_its_last_four_characters() -> None:
    key = "sk-proj-abcdefghijklmnopqrstuvwxyz-a1f3"
    first, second = api_key_hash(b"k" * 32, key), api_key_hash(b"j" * 32, key)
    assert first != second  # the ledger's own key makes the fingerprint
    assert key not in first
    assert len(first) == 64
    assert api_key_hint(key) == "…a1f3"
