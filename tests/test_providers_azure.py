"""Azure OpenAI: the deployment in the URL stands for the model, priced as the operator says."""

import json

import pytest

from spendbrake.providers import AZURE, RouteKind, classify_route, provider_for_host
from spendbrake.providers.base import UnreadableRequest

DEPLOYMENT = "/openai/deployments/my-gpt4o/chat/completions?api-version=2024-10-21"


def test_every_customer_host_of_azure_openai_is_recognised() -> None:
    assert provider_for_host("acme.openai.azure.com") is AZURE
    assert provider_for_host("acme-eastus.cognitiveservices.azure.com") is AZURE
    assert provider_for_host("openai.azure.com.evil.example") is None


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        (DEPLOYMENT, RouteKind.METERED),
        ("/openai/deployments/emb/embeddings?api-version=2024-10-21", RouteKind.METERED),
        ("/openai/v1/chat/completions", RouteKind.METERED),
        ("/openai/v1/responses", RouteKind.METERED),
        ("/openai/deployments/img/images/generations", RouteKind.UNKNOWN),
        ("/openai/v1/files", RouteKind.UNKNOWN),
    ],
)
def test_deployment_and_v1_routes_are_metered(path: str, kind: RouteKind) -> None:
    assert classify_route(AZURE, "POST", path).kind is kind


def test_the_deployment_is_the_model_whatever_the_body_says() -> None:
    api = classify_route(AZURE, "POST", DEPLOYMENT).api
    assert api is not None
    without = api.parse(b'{"messages": [{"role": "user", "content": "hi"}]}', DEPLOYMENT)
    assert without.model == "my-gpt4o"
    with_model = api.parse(
        b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}', DEPLOYMENT
    )
    assert with_model.model == "my-gpt4o"
    with pytest.raises(UnreadableRequest, match="no messages"):
        api.parse(b"{}", DEPLOYMENT)


def test_the_v1_routes_take_the_deployment_from_the_body() -> None:
    api = classify_route(AZURE, "POST", "/openai/v1/chat/completions").api
    assert api is not None
    body = json.dumps({"model": "my-gpt4o", "messages": [{"role": "user", "content": "hi"}]})
    assert api.parse(body.encode(), "/openai/v1/chat/completions").model == "my-gpt4o"


def test_usage_is_priced_as_the_deployment_not_the_snapshot_behind_it() -> None:
    api = classify_route(AZURE, "POST", DEPLOYMENT).api
    assert api is not None
    usage = api.usage_from_json(
        {"model": "gpt-4o-2024-11-20", "usage": {"prompt_tokens": 5, "completion_tokens": 1}}
    )
    assert usage is not None
    assert usage.model is None  # the requested deployment decides the price
    assert usage.tokens.input_tokens == 5


def test_a_stream_is_priced_as_the_deployment_too_and_passes_unchanged() -> None:
    api = classify_route(AZURE, "POST", DEPLOYMENT).api
    assert api is not None
    meter = api.stream_meter(strip_injected_usage=False)
    chunk = {"model": "gpt-4o-2024-11-20", "choices": [{"index": 0, "delta": {"content": "Hi"}}]}
    usage = {
        "model": "gpt-4o-2024-11-20",
        "choices": [],
        "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
    }
    stream = (
        b"".join(b"data: " + json.dumps(event).encode() + b"\n\n" for event in (chunk, usage))
        + b"data: [DONE]\n\n"
    )
    passed = meter(stream)
    meter(b"")
    assert (passed if isinstance(passed, bytes) else b"".join(passed)) == stream
    assert meter.usage is not None
    assert meter.usage.model is None  # as for a plain response: the deployment decides
    assert (meter.usage.tokens.input_tokens, meter.usage_is_final) == (5, True)
    assert meter.relayed_text_bytes >= 2
