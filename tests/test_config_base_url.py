"""``base_url`` of openai models: no query string, no credentials, http(s)
only, checked at load and never echoing the secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmark.config import load_config, parse_config
from benchmark.core import BenchError


def user_config(tmp_path: Path, base_url: str, extra: str = "") -> Path:
    path = tmp_path / "my.toml"
    path.write_text(f'[models.local]\nprovider = "openai"\nmodel = "m"\nbase_url = "{base_url}"\n{extra}')
    return path


@pytest.mark.parametrize(
    ("url", "shown", "secrets"),
    [
        ("https://host/v1?api-key=SECRET", "https://host/v1?***", ["SECRET", "api-key"]),
        ("https://user:hunter2@host/v1", "https://***@host/v1", ["hunter2", "user"]),
        ("https://tok@host:8443/v1?x=1#part9", "https://***@host:8443/v1?***#***", ["tok", "x=1", "part9"]),
    ],
)
def test_query_string_or_credentials_in_base_url_are_rejected_without_echoing_them(tmp_path, url, shown, secrets):
    with pytest.raises(BenchError) as info:
        load_config(user_config(tmp_path, url))
    msg = str(info.value)
    assert msg.startswith("models.local: expected 'base_url' without")
    assert f"found {shown!r}" in msg
    assert "set the key via the environment variable named by api_key_env ('OPENAI_API_KEY')" in msg
    for secret in secrets:
        assert secret not in msg


def test_message_names_the_models_own_key_variable(tmp_path):
    with pytest.raises(BenchError, match=r"api_key_env \('VLLM_KEY'\)"):
        load_config(user_config(tmp_path, "http://h/v1?key=abc", 'api_key_env = "VLLM_KEY"\n'))


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("ftp://host/v1", "ftp://host/v1"),
        ("localhost:8000/v1", "localhost:8000/v1"),
        ("https:///v1", "https:///v1"),
        ("http://host:port/v1", "http://host:port/v1"),
        ("user:pw@host/v1", "***@host/v1"),
    ],
)
def test_base_url_must_be_http_or_https(tmp_path, url, shown):
    with pytest.raises(BenchError) as info:
        load_config(user_config(tmp_path, url))
    msg = str(info.value)
    assert "expected 'base_url' as an http:// or https:// URL" in msg
    assert f"found {shown!r}" in msg
    assert "pw" not in msg


def test_base_url_must_be_a_string():
    raw = {"models": {"m": {"model": "m", "base_url": 8000}}}
    with pytest.raises(BenchError, match=r"models\.m: expected 'base_url' as an http:// or https:// URL, found 8000"):
        parse_config(raw)


@pytest.mark.parametrize("url", ["https://host/v1", "http://127.0.0.1:8000/v1", "HTTPS://api.example.com/openai/v1/"])
def test_plain_http_and_https_base_urls_are_accepted(tmp_path, url):
    assert load_config(user_config(tmp_path, url)).models["local"].settings["base_url"] == url


def test_other_providers_have_no_base_url_and_never_echo_one():
    raw = {"models": {"m": {"provider": "transformers", "model": "x", "base_url": "https://h/v1?key=SECRET"}}}
    with pytest.raises(BenchError, match=r"models\.m: unknown keys \['base_url'\] for provider 'transformers'") as info:
        parse_config(raw)
    assert "SECRET" not in str(info.value)
