"""The cloud link's interface (floe_edge.cloud.link) and the one step-request check both sides use
(floe_edge.cloud.step_request), without a network."""
from __future__ import annotations

import dataclasses
import itertools
import subprocess
import sys

import pytest

import floe_edge.cloud as cloud
from floe_edge.cloud import CloudBackend, CloudStep, FloeCloudBackend, OpenAICompletionsBackend
from floe_edge.cloud.step_request import CLIENT_LIMITS, RequestError, StepLimits, StepRequest


class Vocab:
    """The smallest TokenVocab: one byte per token."""

    n_vocab = 256

    def token_bytes(self, id: int) -> bytes:
        return bytes([id])

    def is_control(self, id: int) -> bool:
        return False

    def is_eog(self, id: int) -> bool:
        return False

    def tokenize(self, text, add_bos=True, special=True) -> list[int]:
        return list(text.encode() if isinstance(text, str) else text)


def test_both_backends_are_cloud_backends() -> None:
    floe = FloeCloudBackend("http://127.0.0.1:9", Vocab(), same_vocab=True)
    openai = OpenAICompletionsBackend("http://127.0.0.1:9/v1", Vocab())
    for link, can_score in ((floe, True), (openai, False)):
        assert isinstance(link, CloudBackend)
        assert link.can_score is can_score and link.available and link.stats.requests == 0
        assert link.breaker is link.transport.breaker
    assert not isinstance(object(), CloudBackend)
    assert "server_ms" in {f.name for f in dataclasses.fields(CloudStep)}


def test_the_package_exports_the_link_without_the_server() -> None:
    for name in cloud.__all__:
        assert getattr(cloud, name).__name__ == name
    with pytest.raises(AttributeError):
        cloud.Nothing  # noqa: B018
    code = ("import sys, floe_edge.cloud.protocol; assert 'httpx' not in sys.modules; "
            "from floe_edge.cloud import *; assert 'fastapi' not in sys.modules and 'floe_edge.cloud.server' "
            "not in sys.modules; print(FloeCloudBackend.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "FloeCloudBackend", out.stderr


SERVER = StepLimits(max_k=20, max_draft=16, max_score=16, n_vocab=1000, max_append=2048)


def _requests() -> list[StepRequest]:
    out = []
    for k, n_draft, n_score, want in itertools.product(
            (0, 1, 20, 21, 255, 256), (0, 1, 16, 17), (0, 1, 16, 17), (None, [0], [0, 2], [2, 0], [1, 1], [17])):
        out.append(StepRequest(k=k, n_draft=n_draft, score=list(range(n_score)), want=want))
    return out


@pytest.mark.parametrize("limits", [CLIENT_LIMITS, SERVER])
def test_the_device_and_the_server_agree_on_every_step(limits: StepLimits) -> None:
    """What the device would send validates on the server under the same limits, and what it refuses to send the
    server refuses too: one routine decides."""
    n_ok = 0
    for req in _requests():
        try:
            req.validate(limits)
            ok = True
        except RequestError:
            ok = False
        body = req.to_json()
        try:
            parsed = StepRequest.from_json(body, text_session=False, limits=limits)
            assert ok and parsed.to_json() == body
        except RequestError:
            assert not ok, body
        n_ok += ok
    assert 0 < n_ok < len(_requests())


def test_text_session_requests_round_trip() -> None:
    req = StepRequest(k=5, append_text=b"caf\xc3", base=12, score_text=b"\xa9 au lait", want=[0, 4])
    body = req.to_json()
    assert set(body) == {"k", "fmt", "append_b64", "base", "score_b64", "want"}
    assert StepRequest.from_json(body, text_session=True, limits=SERVER) == req
    for wrong in ({"append": [1]}, {"score": [1]}):
        with pytest.raises(RequestError, match="text session does not take"):
            StepRequest.from_json(wrong, text_session=True, limits=SERVER)
    with pytest.raises(RequestError, match="token-id session does not take append_b64"):
        StepRequest.from_json(body, text_session=False, limits=SERVER)
    by_bytes = StepRequest(k=5, score_text=b" au lait", want_bytes=[0, 3, 8])
    assert StepRequest.from_json(by_bytes.to_json(), text_session=True, limits=SERVER) == by_bytes


@pytest.mark.parametrize("body, code, words", [
    ({"k": True}, "invalid_request", "k must be"),
    ({"n_draft": 2.0}, "invalid_request", "n_draft must be"),
    ({"fmt": "f32"}, "invalid_request", "fmt"),
    ({"append": [1000]}, "bad_token", "append must hold"),
    ({"append": [0] * 2049}, "too_long", "append has 2049"),
    ({"score": list(range(17))}, "too_long", "score has 17"),
    ({"score": [1], "n_draft": 1}, "invalid_request", "exclude each other"),
    ({"base": -1}, "invalid_request", "base must be"),
    ({"want": [0, 0]}, "invalid_request", "want must be"),
    ({"want": ["0"]}, "invalid_request", "want must be"),
    ({"score": [1, 2], "want": [3]}, "invalid_request", "want must be"),
    ({"append_b64": "aGk"}, "invalid_base64", "append_b64"),
    ({"append_b64": "aGk=", "want_bytes": [0]}, "invalid_request", "want_bytes goes with score_b64"),
    ({"score_b64": "aGk=", "want_bytes": [0], "want": [0]}, "invalid_request", "not with want"),
    ({"score_b64": "aGk=", "want_bytes": [3]}, "invalid_request", "byte offsets in 0..2"),
    ({"score_b64": "aGk=", "want_bytes": [1, 1]}, "invalid_request", "distinct byte offsets"),
    ({"score_b64": "aGk=", "want_bytes": [True]}, "invalid_request", "want_bytes must be"),
    ({"score_b64": "aGk=", "want_bytes": [[0]]}, "invalid_request", "want_bytes must be"),
    ({"score_b64": "aGk=", "want_bytes": list(range(3)) * 6}, "invalid_request", "at most 17"),
    ({"bogus": 1}, "invalid_request", "unknown field"),
])
def test_bad_requests_name_their_problem(body: dict, code: str, words: str) -> None:
    text = "append_b64" in body or "score_b64" in body
    with pytest.raises(RequestError, match=words) as e:
        StepRequest.from_json(body, text_session=text, limits=SERVER)
    assert e.value.code == code and e.value.status == 400 and isinstance(e.value, ValueError)


def test_scored_text_is_checked_once_tokenized() -> None:
    req = StepRequest.from_json({"score_b64": "aGVsbG8=", "want": [5]}, text_session=True, limits=SERVER)
    req.check_scored(5, SERVER)  # 6 positions: 5 is the last
    with pytest.raises(RequestError, match="beyond the 5"):
        req.check_scored(4, SERVER)
    with pytest.raises(RequestError, match="score is 17 tokens") as e:
        req.check_scored(17, SERVER)
    assert e.value.code == "too_long"
