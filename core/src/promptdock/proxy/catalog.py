"""``GET /v1/models``, ``GET /v1/prompts`` and ``GET /v1/prompts/{prompt_id}``.

Each lists only what the caller's key may use: a team key sees its own models, and the
prompts of their sources that match its prompt globs. Prompt metadata (description, model,
parameters, input schema...) is shown; configuration secrets never are, and frontmatter values
under secret-looking keys (``api_key``, ``token``...) are masked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs

from promptdock._dock import PromptDock
from promptdock.errors import PromptdockError, PromptNotFoundError
from promptdock.models import PromptFile, PromptInfo, is_secret_key
from promptdock.proxy.asgi import dumps
from promptdock.proxy.auth import Principal
from promptdock.proxy.errors import ApiError, Redactor, api_error
from promptdock.proxy.routing import RouteTable

__all__ = ["PROMPTS_PREFIX", "Catalog"]

PROMPTS_PREFIX = "/v1/prompts/"
"""The path prefix of one prompt's metadata: the rest of the path is its id."""

_OWNER = "promptdock"


class Catalog:
    """What a key may see: models and prompts.

    :param dock: the prompt sources.
    :param routes: the deployments.
    :param redact: scrubs secrets from error messages.
    :param created: the ``created`` timestamp reported for every model (start-up time).
    """

    def __init__(
        self, dock: PromptDock, routes: RouteTable, redact: Redactor, created: int
    ) -> None:
        self.dock = dock
        self.routes = routes
        self.redact = redact
        self.created = created
        self._models: dict[Principal, bytes] = {}

    # -- models --------------------------------------------------------------------------

    def models(self, principal: Principal) -> bytes:
        """The OpenAI ``list`` of the models ``principal`` may call, as JSON bytes."""
        cached = self._models.get(principal)
        if cached is None:
            data = [
                {"id": name, "object": "model", "created": self.created, "owned_by": _OWNER}
                for name in self.routes.routes
                if principal.may_use_model(name)
            ]
            cached = self._models[principal] = dumps({"object": "list", "data": data})
        return cached

    # -- prompts -------------------------------------------------------------------------

    def _sources(self, principal: Principal) -> dict[str, list[str]]:
        """Source name → the model names (visible to ``principal``) that render its prompts."""
        found: dict[str, list[str]] = {}
        for name, route in self.routes.routes.items():
            if not principal.may_use_model(name):
                continue
            for target in route.targets:
                if target.source is not None:
                    models = found.setdefault(target.source, [])
                    if name not in models:
                        models.append(name)
        return found

    async def prompts(self, principal: Principal) -> dict[str, Any]:
        """Every prompt ``principal`` may use, with the models that serve it.

        A source that cannot be listed is reported under ``errors``; when every source fails,
        the first failure is the answer.

        :raises ApiError: when no source could be listed.
        """
        sources = self._sources(principal)
        data: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        first: ApiError | None = None
        for source, models in sources.items():
            try:
                infos = await asyncio.to_thread(self.dock.list_prompts, source)
            except PromptdockError as exc:
                error = api_error(exc, self.redact)
                first = first or error
                errors.append({"source": source, **error.as_dict()["error"]})
                continue
            data.extend(_info(info, models) for info in infos if principal.may_use_prompt(info.id))
        if first is not None and len(errors) == len(sources):
            raise first
        listing: dict[str, Any] = {"object": "list", "data": data}
        if errors:
            listing["errors"] = errors
        return listing

    async def prompt(self, principal: Principal, prompt_id: str, query: bytes) -> dict[str, Any]:
        """The metadata and input schema of one prompt.

        Query parameters: ``source`` (default: the first source of the caller's models that
        has it) and ``version``.

        :raises ApiError: 403 for a prompt the key may not use, 404 when no source has it,
            400 for a bad query.
        """
        if not principal.may_use_prompt(prompt_id):
            raise ApiError(
                403,
                f"{principal.label} may not use prompt {prompt_id!r}",
                param="prompt_id",
                code="prompt_not_allowed",
            )
        args = parse_qs(query.decode("latin-1"))
        version = _version(args.get("version", [None])[0])
        sources = self._sources(principal)
        wanted = args.get("source", [None])[0]
        if wanted is not None:
            if wanted not in sources:
                raise ApiError(
                    404,
                    f"no source {wanted!r} among the sources of your models "
                    f"({', '.join(sources) or 'none'})",
                    param="source",
                    code="source_not_found",
                )
            sources = {wanted: sources[wanted]}
        missing: PromptNotFoundError | None = None
        for source, models in sources.items():
            try:
                prompt = await asyncio.to_thread(
                    self.dock.get_prompt, prompt_id, source=source, version=version
                )
            except PromptNotFoundError as exc:
                missing = missing or exc
                continue
            except PromptdockError as exc:
                raise api_error(exc, self.redact) from None
            return _details(prompt, source, models)
        if missing is not None:
            raise api_error(missing, self.redact)
        raise ApiError(
            404,
            f"prompt {prompt_id!r} not found: none of your models renders prompts",
            param="prompt_id",
            code="prompt_not_found",
        )


def _version(text: str | None) -> int | None:
    if text is None:
        return None
    if not text.isdigit():
        raise ApiError(
            400,
            "'version' must be a version number N (for <prompt_id>.vN.prompt)",
            param="version",
        )
    return int(text)


def _info(info: PromptInfo, models: list[str]) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "id": info.id,
        "object": "prompt",
        "source": info.source,
        "versions": list(info.versions),
        "has_unversioned": info.has_unversioned,
        "description": info.description,
        "models": models,
    }
    if info.error is not None:
        entry["error"] = info.error
    return entry


def _masked(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: ("***" if is_secret_key(k) and v else v) for k, v in values.items()}


def _details(prompt: PromptFile, source: str, models: list[str]) -> dict[str, Any]:
    provenance = prompt.provenance
    return {
        "id": prompt.id,
        "object": "prompt",
        "source": source,
        "models": models,
        "version": prompt.version,
        "name": prompt.name,
        "description": prompt.description,
        "model": prompt.model,
        "params": _masked(prompt.params),
        "input_schema": prompt.input_schema,
        "input_defaults": dict(prompt.input_defaults),
        "output_schema": prompt.output_schema,
        "output_format": prompt.output_format,
        "metadata": _masked(prompt.metadata),
        "provenance": provenance.as_dict() if provenance is not None else None,
    }
