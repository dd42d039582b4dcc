from __future__ import annotations

import json

import pytest

from hub.api.body import parse_payload, with_model
from hub.errors import BadRequest, InvalidJSON, MissingField


def test_valid_chat_payload() -> None:
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "x"}],
                       "stream": True, "tools": [], "n": 2}).encode()
    payload = parse_payload("/chat/completions", body)
    assert payload["model"] == "m" and payload["n"] == 2


@pytest.mark.parametrize("body", [b"", b"{", b"null", b"[]", b'"s"', b"\xff", b"[" * 100000])
def test_not_an_object(body: bytes) -> None:
    with pytest.raises(InvalidJSON):
        parse_payload("/chat/completions", body)


def test_missing_and_wrong_types() -> None:
    with pytest.raises(MissingField):
        parse_payload("/embeddings", b'{"model": "m"}')
    with pytest.raises(BadRequest):
        parse_payload("/completions", b'{"model": "m", "prompt": 3}')
    with pytest.raises(BadRequest):
        parse_payload("/chat/completions", b'{"model": "", "messages": [1]}')


def test_with_model_rewrites_only_model() -> None:
    payload = {"model": "alias", "messages": [{"role": "user", "content": "é"}], "stop": ["x"]}
    out = json.loads(with_model(payload, "real"))
    assert out == {**payload, "model": "real"}
    assert payload["model"] == "alias"
