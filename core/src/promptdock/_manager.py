"""Build plugin managers: built-in plugins first, then entry points, loaded lazily.

Built-in behaviour (the Jinja2 renderer, the mock and HTTP dispatchers) is registered through
the same ``register`` call as third-party plugins. Entry points in the ``promptdock`` group are
imported on first use; a plugin that fails to import is recorded as a
:class:`~promptdock.errors.PluginLoadError` and the others still load.

Environment variables:

``PROMPTDOCK_LOAD_PLUGINS``
    Comma-separated allow-list of plugins (entry-point or distribution names) to load from
    entry points. Set but empty: load none.
``PROMPTDOCK_BLOCK_PLUGINS``
    Comma-separated plugins never to load, built-ins included (``mock``, ``openai``, ``jinja2``).
``PROMPTDOCK_TRACE_PLUGINS``
    Set to ``1`` to print every hook call, its arguments and results to stderr (pluggy's
    tracing; hooks then always go through pluggy, so expect them to be slower).
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any, cast

import pluggy

from promptdock import hookspecs
from promptdock.errors import ConfigError, PluginLoadError
from promptdock.models import SourceKind

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

__all__ = [
    "DEFAULT_PLUGINS",
    "ENTRY_POINT_GROUP",
    "FirstResultCaller",
    "PluginHost",
    "PluginRecord",
]

ENTRY_POINT_GROUP = "promptdock"

DEFAULT_PLUGINS: tuple[tuple[str, str], ...] = (
    ("jinja2", "promptdock.rendering"),
    ("mock", "promptdock.dispatch.mock"),
    ("openai", "promptdock.dispatch.openai_http"),
    ("openai-async", "promptdock.dispatch.openai_async"),
)
"""``(name, module)`` of the built-in plugins, registered like any other."""

KNOWN_DISTRIBUTIONS: dict[str, str] = {
    "filesystem": "promptdock-filesystem",
    "dotprompt": "promptdock-filesystem",
    "bitbucket": "promptdock-bitbucket",
}
"""First-party source kinds, so a missing one can be named with its install command."""


def _env_list(name: str) -> set[str] | None:
    raw = os.environ.get(name)
    if raw is None:
        return None
    return {part.strip() for part in raw.split(",") if part.strip()}


# One direct call per implementation, in pluggy's order: the function, the names of the
# arguments it takes, and their positions among the spec's arguments (None: all, in order).
_Direct = tuple[tuple[Any, tuple[str, ...], tuple[int, ...] | None], ...]


class FirstResultCaller:
    """Calls a ``firstresult`` hook's implementations directly, skipping pluggy's general loop.

    Completions call three such hooks; pluggy's machinery (wrappers, historic calls, result
    objects) costs more than the built-in implementations themselves. When no wrapper is
    registered, the implementations are called in pluggy's order until one returns something
    other than ``None``, exactly as pluggy would. The implementation list is re-read on every
    call (a cheap copy and compare), so plugins registered later are always honoured; with a
    wrapper present, or with ``PROMPTDOCK_TRACE_PLUGINS=1``, the call goes through pluggy.

    Call it with keyword arguments, as pluggy's hooks are called, or (cheaper, for the
    per-call path) with :meth:`call` and the arguments in the order of the hook's spec.
    """

    __slots__ = ("_hook", "_host", "_name", "_plan")

    def __init__(self, host: PluginHost, hook_name: str) -> None:
        # The hook caller is looked up on first call, so plugins load only when needed.
        self._host = host
        self._name = hook_name
        self._hook: pluggy.HookCaller | None = None
        # (the implementations it was made for, the direct calls or None): one tuple, replaced
        # whole, so a thread never pairs a new list with an old plan.
        self._plan: tuple[list[pluggy.HookImpl], _Direct | None] = ([], None)

    def _make_plan(self, hook: pluggy.HookCaller, impls: list[pluggy.HookImpl]) -> _Direct | None:
        if self._host.tracing or any(impl.wrapper or impl.hookwrapper for impl in impls):
            return None
        spec = tuple(hook.spec.argnames) if hook.spec is not None else ()
        direct = []
        # pluggy calls the last-registered (tryfirst-sorted) implementation first
        for impl in reversed(impls):
            names = tuple(impl.argnames)
            if not set(names) <= set(spec):
                return None  # pluggy refuses such an implementation at registration anyway
            order = None if names == spec else tuple(spec.index(name) for name in names)
            direct.append((impl.function, names, order))
        return tuple(direct)

    def _current(self) -> tuple[pluggy.HookCaller, _Direct | None]:
        hook = self._hook
        if hook is None:
            hook = self._hook = getattr(self._host.pm.hook, self._name)
        impls = hook.get_hookimpls()
        plan = self._plan
        if impls != plan[0]:
            plan = self._plan = (impls, self._make_plan(hook, impls))
        return hook, plan[1]

    def __call__(self, **kwargs: Any) -> Any:
        hook, direct = self._current()
        if direct is None:
            return hook(**kwargs)
        for function, argnames, _ in direct:
            result = function(*map(kwargs.__getitem__, argnames))
            if result is not None:
                return result
        return None

    def call(self, *args: Any) -> Any:
        """Call the hook with its arguments by position, in the order its spec declares them
        (``call(source, prompt_id, version)`` for ``load_prompt``)."""
        hook = self._hook
        plan = self._plan
        if hook is not None and hook.get_hookimpls() == plan[0]:  # _current(), inlined
            direct = plan[1]
        else:
            hook, direct = self._current()
        if direct is None:
            spec = hook.spec.argnames if hook.spec is not None else ()
            return hook(**dict(zip(spec, args, strict=True)))
        for function, _, order in direct:
            if order is None:
                result = function(*args)
            else:
                result = function(*[args[index] for index in order])
            if result is not None:
                return result
        return None


@dataclass(frozen=True)
class PluginRecord:
    """One plugin as ``promptdock plugins`` reports it.

    :ivar name: the registration name (entry-point name for third-party plugins).
    :ivar distribution: the providing distribution's name, ``None`` for built-ins.
    :ivar version: that distribution's version.
    :ivar hooks: the hooks it implements, sorted.
    :ivar builtin: whether it ships with the core.
    :ivar error: the load error, for a plugin that failed to load.
    """

    name: str
    distribution: str | None
    version: str | None
    hooks: tuple[str, ...]
    builtin: bool
    error: str | None = None


class PluginHost:
    """A pluggy manager with promptdock's hookspecs, built-ins and lazily loaded entry points.

    :param load_entrypoints: load third-party plugins from the ``promptdock`` entry-point group
        (tests pass ``False`` for an isolated manager).
    :param plugins: extra plugin objects to register, as ``(name, plugin)`` pairs.
    """

    def __init__(
        self,
        *,
        load_entrypoints: bool = True,
        plugins: Iterable[tuple[str, object]] = (),
    ) -> None:
        self._pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
        self._pm.add_hookspecs(hookspecs)
        self._load_entrypoints = load_entrypoints
        self._extra = list(plugins)
        self._loaded = False
        self._lock = threading.Lock()
        self._errors: dict[str, PluginLoadError] = {}
        self._dists: dict[str, tuple[str, str]] = {}
        self._kinds: dict[str, SourceKind] | None = None
        self.tracing = os.environ.get("PROMPTDOCK_TRACE_PLUGINS", "") not in ("", "0")
        self._dispatch_hooks: tuple[pluggy.HookCaller, pluggy.HookCaller] | None = None
        self._dispatch_cache: tuple[list[Any], list[Any], tuple[bool, bool]] | None = None

    @property
    def pm(self) -> pluggy.PluginManager:
        """The underlying manager, with every plugin loaded."""
        if not self._loaded:
            self._load()
        return self._pm

    @property
    def hook(self) -> Any:
        """``pm.hook``: call hooks with keyword arguments."""
        return self.pm.hook

    @property
    def load_errors(self) -> dict[str, PluginLoadError]:
        """Plugins that failed to load, by name."""
        self.pm  # noqa: B018 - loading is the point
        return dict(self._errors)

    def sync_only_dispatch(self) -> bool:
        """Whether a non-built-in plugin implements (or wraps) ``dispatch`` but not ``adispatch``.

        Async calls then go through the sync ``dispatch`` hook in a worker thread, so such a
        plugin keeps its place in front of the built-in dispatchers on every path.
        """
        return self._dispatch_facts()[0]

    def dispatch_wrapped(self) -> bool:
        """Whether a wrapper (``wrapper=True`` or ``hookwrapper=True``) is registered on
        ``dispatch`` or ``adispatch``: one may change the results the implementations return."""
        return self._dispatch_facts()[1]

    def _dispatch_facts(self) -> tuple[bool, bool]:
        # (sync_only_dispatch, dispatch_wrapped): both are asked on every async call, so they
        # are worked out again only when the hooks' implementations change.
        hooks = self._dispatch_hooks
        if hooks is None:
            relay = self.pm.hook  # loads the plugins; the hook callers never change after
            hooks = self._dispatch_hooks = (relay.dispatch, relay.adispatch)
        sync = hooks[0].get_hookimpls()
        asynchronous = hooks[1].get_hookimpls()
        cached = self._dispatch_cache
        if cached is not None and cached[0] == sync and cached[1] == asynchronous:
            return cached[2]
        builtin = {name for name, _ in DEFAULT_PLUGINS}
        has_async = {impl.plugin_name for impl in asynchronous}
        sync_only = any(
            impl.plugin_name not in builtin and impl.plugin_name not in has_async for impl in sync
        )
        wrapped = any(impl.wrapper or impl.hookwrapper for impl in (*sync, *asynchronous))
        self._dispatch_cache = (sync, asynchronous, (sync_only, wrapped))
        return sync_only, wrapped

    def first_result(self, hook_name: str) -> FirstResultCaller:
        """A fast caller for a ``firstresult`` hook (same semantics as ``hook.<name>(...)``)."""
        return FirstResultCaller(self, hook_name)

    def register(self, plugin: object, name: str | None = None) -> None:
        """Register ``plugin`` (a module or object with ``@hookimpl`` functions)."""
        self.pm.register(plugin, name=name)
        self._kinds = None

    def unregister(self, name: str) -> None:
        """Remove the plugin registered as ``name``."""
        self.pm.unregister(name=name)
        self._kinds = None

    # -- loading -------------------------------------------------------------------------

    def _load(self) -> None:
        with self._lock:
            if self._loaded:
                return
            blocked = _env_list("PROMPTDOCK_BLOCK_PLUGINS") or set()
            for name in blocked:
                self._pm.set_blocked(name)
            for name, module in DEFAULT_PLUGINS:
                if name not in blocked:
                    self._pm.register(importlib.import_module(module), name=name)
            if self._load_entrypoints:
                self._load_entry_points(blocked)
            if self.tracing:
                self._pm.trace.root.setwriter(sys.stderr.write)
                self._pm.enable_tracing()
            clashes = []
            for name, plugin in self._extra:
                if self._pm.has_plugin(name) or self._pm.is_registered(plugin):
                    clashes.append(name)
                else:
                    self._pm.register(plugin, name=name)
            self._loaded = True
        if clashes:
            raise ConfigError(
                f"cannot register plugin(s) {', '.join(map(repr, clashes))}: the name (or the "
                f"object) is already registered; built-in names are "
                f"{', '.join(name for name, _ in DEFAULT_PLUGINS)}. Pick another name.",
                key="plugins",
            )
        # Warn only once loading is complete: under ``-W error`` the warning raises, and the
        # host must not be left half-loaded.
        for error in self._errors.values():
            warnings.warn(str(error), RuntimeWarning, stacklevel=3)

    def _load_entry_points(self, blocked: set[str]) -> None:
        from importlib import metadata  # ~50 ms: only when plugins are actually loaded

        allowed = _env_list("PROMPTDOCK_LOAD_PLUGINS")
        # Only distributions that declare our group have their metadata parsed.
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = ep.dist
            dist_name = (dist.metadata["Name"] if dist is not None else None) or "?"
            version = dist.version if dist is not None else "?"
            if ep.name in blocked or dist_name in blocked:
                continue
            if allowed is not None and ep.name not in allowed and dist_name not in allowed:
                continue
            if self._pm.has_plugin(ep.name) or ep.name in self._errors:
                continue
            self._load_one(ep, dist_name, version)

    def _load_one(self, ep: EntryPoint, dist_name: str, dist_version: str) -> None:
        try:
            plugin = ep.load()
            self._pm.register(plugin, name=ep.name)
        except Exception as exc:  # any import-time failure of third-party code
            error = PluginLoadError(
                f"plugin {ep.name!r} from {dist_name} {dist_version} failed to load: "
                f"{type(exc).__name__}: {exc}. Reinstall or upgrade {dist_name}, or skip it with "
                f"PROMPTDOCK_BLOCK_PLUGINS={ep.name}.",
                plugin=ep.name,
                distribution=f"{dist_name} {dist_version}",
            )
            self._errors[ep.name] = error
            return
        self._dists[ep.name] = (dist_name, dist_version)

    # -- introspection -------------------------------------------------------------------

    def plugins(self) -> list[PluginRecord]:
        """Every registered plugin plus every plugin that failed to load."""
        pm = self.pm
        records: list[PluginRecord] = []
        for name, plugin in pm.list_name_plugin():
            if plugin is None:  # a blocked name
                continue
            hooks = tuple(sorted(h.name for h in pm.get_hookcallers(plugin) or ()))
            dist = self._dists.get(name)
            builtin = isinstance(plugin, ModuleType) and plugin.__name__.startswith("promptdock.")
            records.append(
                PluginRecord(
                    name=name,
                    distribution=dist[0] if dist else None,
                    version=dist[1] if dist else None,
                    hooks=hooks,
                    builtin=builtin,
                )
            )
        for name, error in self._errors.items():
            dist_name, _, version = (error.distribution or "").partition(" ")
            records.append(
                PluginRecord(
                    name=name,
                    distribution=dist_name or None,
                    version=version or None,
                    hooks=(),
                    builtin=False,
                    error=str(error),
                )
            )
        return sorted(records, key=lambda r: (not r.builtin, r.name))

    def source_kinds(self) -> dict[str, SourceKind]:
        """Every kind and alias served by a registered plugin, mapped to its kind."""
        kinds = self._kinds
        if kinds is not None:
            return kinds
        pm = self.pm
        found: dict[str, SourceKind] = {}
        owner: dict[str, str] = {}
        for impl in pm.hook.source_kinds.get_hookimpls():
            plugin_name = impl.plugin_name
            declared = cast("list[SourceKind] | None", impl.function())
            for kind in declared or ():
                for label in (kind.name, *kind.aliases):
                    if label in found and found[label] is not kind:
                        raise ConfigError(
                            f"source kind {label!r} is declared by two plugins: {owner[label]!r} "
                            f"and {plugin_name!r}. Uninstall one, or block it with "
                            f"PROMPTDOCK_BLOCK_PLUGINS."
                        )
                    found[label] = kind
                    owner[label] = plugin_name
        self._kinds = found
        return found

    def resolve_kind(self, kind: str) -> SourceKind:
        """The :class:`SourceKind` serving ``kind`` (an alias resolves to its kind).

        :raises PluginLoadError: the plugin for that kind is installed but failed to load.
        :raises ConfigError: no installed plugin serves it; says which distribution to install.
        """
        kinds = self.source_kinds()
        if kind in kinds:
            return kinds[kind]
        dist = KNOWN_DISTRIBUTIONS.get(kind)
        for name, error in self.load_errors.items():
            if name == kind or (
                dist and error.distribution and error.distribution.startswith(dist)
            ):
                raise error
        available = ", ".join(sorted(kinds)) or "none"
        hint = (
            f"install it with: pip install {dist}"
            if dist
            else "install the plugin that provides it"
        )
        raise ConfigError(
            f"no plugin serves the source kind {kind!r}: {hint} (kinds available: {available})",
            key="kind",
        )
