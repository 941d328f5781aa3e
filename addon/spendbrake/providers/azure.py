"""Azure OpenAI (``*.openai.azure.com``): OpenAI's APIs behind the operator's deployments.

A deployment route names no model: ``/openai/deployments/{deployment}/chat/completions``. The
deployment name stands for the model, and the operator says what it is priced as in the
configuration (``[prices."my-deployment"] price_as = "gpt-4o"``, or its own rates). The newer
``/openai/v1/...`` routes carry the deployment name in the body's ``model``.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any
from urllib.parse import unquote

from spendbrake.providers.base import Api, CallRequest, MeteredUsage, Rewrite, StreamMeter

PROVIDER_ID = "azure"
HOST_SUFFIXES = (".openai.azure.com", ".cognitiveservices.azure.com", ".services.ai.azure.com")

DEPLOYMENT_ROUTE = re.compile(r"^/openai/deployments/(?P<deployment>[^/]+)(?P<rest>/.+)$")
V1_PREFIX = "/openai/v1"


class Deployment:
    """An OpenAI API reached through a deployment: the deployment name is the model."""

    def __init__(self, inner: Api) -> None:
        self.inner = inner
        self.endpoint = inner.endpoint

    def parse(self, body: bytes, path: str = "") -> CallRequest:
        match = DEPLOYMENT_ROUTE.match(unquote(path.split("?", 1)[0]))
        request = self.inner.parse(_with_model(body), path)
        if match is None:
            return request
        # What is billed is the deployment, whatever the body says.
        return replace(request, model=match["deployment"])

    def with_usage_requested(self, body: bytes) -> bytes:
        return self.inner.with_usage_requested(body)

    def usage_from_json(self, obj: Any) -> MeteredUsage | None:
        usage = self.inner.usage_from_json(obj)
        # The body's model is the snapshot behind the deployment: the deployment's price wins.
        return replace(usage, model=None) if usage is not None else None

    def rewritten(self, body: bytes, path: str, change: Rewrite) -> tuple[bytes, str]:
        """A deployment route names the deployment in the URL: another model is another
        deployment there; the newer v1 routes carry it in the body."""
        route, sep, query = path.partition("?")
        match = DEPLOYMENT_ROUTE.match(unquote(route))
        if match is None or change.model is None:
            return self.inner.rewritten(body, path, change)
        body, _ = self.inner.rewritten(body, path, replace(change, model=None))
        return body, f"/openai/deployments/{change.model}{match['rest']}{sep}{query}"

    def stream_meter(self, *, strip_injected_usage: bool) -> StreamMeter:
        return DeploymentStreamMeter(
            self.inner.stream_meter(strip_injected_usage=strip_injected_usage)
        )


class DeploymentStreamMeter:
    """The inner API's meter, whose usage is priced as the deployment, like a plain response's:
    a call costs the same streamed or not."""

    def __init__(self, inner: StreamMeter) -> None:
        self.inner = inner

    def __call__(self, chunk: bytes) -> bytes | list[bytes]:
        return self.inner(chunk)

    @property
    def usage(self) -> MeteredUsage | None:
        usage = self.inner.usage
        return replace(usage, model=None) if usage is not None else None

    @property
    def usage_is_final(self) -> bool:
        return self.inner.usage_is_final

    @property
    def relayed_text_bytes(self) -> int:
        return self.inner.relayed_text_bytes

    @property
    def usage_counts_reasoning(self) -> bool:
        return self.inner.usage_counts_reasoning


def _with_model(body: bytes) -> bytes:
    """Deployment bodies carry no model, which the OpenAI parsers require: lend them one. It
    goes first, so a model the body names itself wins (the last of a repeated key does); no
    search for "model" in the body, whose text may well say it (a tool's parameter)."""
    stripped = body.lstrip()
    if not stripped.startswith(b"{"):
        return body  # not an object: the parser says so
    rest = stripped[1:].lstrip()
    return b'{"model": "deployment"' + (b"" if rest.startswith(b"}") else b", ") + rest
