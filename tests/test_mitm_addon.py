"""The one addon mitmproxy loads: every hook of every part reaches that part."""

import inspect

import mitmproxy.addonmanager
import mitmproxy.proxy.layers
import mitmproxy.proxy.server_hooks
from mitmproxy import hooks
from mitmproxy.test import tflow

from spendbrake.mitm import spendbrake_addons
from spendbrake.mitm.addon import Spendbrake
from spendbrake.mitm.enforcement import Enforcement
from spendbrake.mitm.identification import Identification
from spendbrake.mitm.interception import Interception
from spendbrake.mitm.local_api import LocalApi
from spendbrake.mitm.status_server import StatusServer

PARTS = (Interception, Identification, LocalApi, Enforcement, StatusServer)


# Hooks register themselves as their modules are imported: these define all of them.
_HOOK_MODULES = (mitmproxy.addonmanager, mitmproxy.proxy.layers, mitmproxy.proxy.server_hooks)
assert {"requestheaders", "tls_clienthello", "http_connect"} <= set(hooks.all_hooks)


def hooks_of(cls: type) -> set[str]:
    return {name for name in hooks.all_hooks if callable(getattr(cls, name, None))}


def test_mitmproxy_loads_a_single_addon() -> None:
    [addon] = spendbrake_addons()
    assert isinstance(addon, Spendbrake)


def test_the_addon_offers_every_hook_its_parts_implement() -> None:
    wanted = set().union(*(hooks_of(part) for part in PARTS))
    assert wanted <= hooks_of(Spendbrake)
    assert hooks_of(Spendbrake) <= wanted  # and nothing a part would not handle


class Recorder:
    """Stands in for a part: records each hook it is handed, sync or async like the part."""

    def __init__(self, part: type, calls: list[tuple[str, str, object]]) -> None:
        for name in hooks_of(part):
            setattr(self, name, self._recording(part, name, calls))

    @staticmethod
    def _recording(part: type, name: str, calls: list[tuple[str, str, object]]) -> object:
        def record(*arguments: object) -> None:
            calls.append((part.__name__, name, arguments))

        async def record_async(*arguments: object) -> None:
            record(*arguments)

        return record_async if inspect.iscoroutinefunction(getattr(part, name)) else record


async def test_each_hook_reaches_every_part_that_has_it_in_order() -> None:
    for name in hooks_of(Spendbrake):
        calls: list[tuple[str, str, object]] = []
        addon = Spendbrake()
        addon.interception = Recorder(Interception, calls)  # type: ignore[assignment]
        addon.identification = Recorder(Identification, calls)  # type: ignore[assignment]
        addon.local_api = Recorder(LocalApi, calls)  # type: ignore[assignment]
        addon.enforcement = Recorder(Enforcement, calls)  # type: ignore[assignment]
        addon.status_server = Recorder(StatusServer, calls)  # type: ignore[assignment]
        addon.share_what_enforcement_loaded = lambda: None  # type: ignore[method-assign]
        hook = getattr(addon, name)
        # A real flow where a hook takes one: the addon reads it to time metered calls.
        parameters = inspect.signature(hook).parameters
        arguments = tuple(tflow.tflow() if p == "flow" else object() for p in parameters)
        result = hook(*arguments)
        if inspect.isawaitable(result):
            await result
        expected = [(part.__name__, name, arguments) for part in PARTS if name in hooks_of(part)]
        assert calls == expected, name


def test_async_hooks_stay_async() -> None:
    for part in PARTS:
        for name in hooks_of(part):
            if inspect.iscoroutinefunction(getattr(part, name)):
                assert inspect.iscoroutinefunction(getattr(Spendbrake, name)), name
