"""Prompt ids and file names, shared by every source plugin.

Every source calls :func:`check_prompt_id` before touching storage, so an id can never name a
file outside the source, whatever the storage is (a folder, a Git tree, an HTTP API).
:func:`group_prompt_paths` turns a flat list of file paths into the listing every source
returns, so all sources agree on what is a prompt, a version, or a hidden partial.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from difflib import get_close_matches

from promptdock.errors import UnsafePromptIdError
from promptdock.models import PromptInfo

__all__ = [
    "MAX_ID_LENGTH",
    "PROMPT_SUFFIX",
    "check_prompt_id",
    "closest_ids",
    "group_prompt_paths",
    "parse_prompt_path",
    "split_version",
    "version_file_stem",
]

MAX_ID_LENGTH = 512
PROMPT_SUFFIX = ".prompt"

# The overwhelmingly common shape; anything else goes through the careful checks below.
_PLAIN_ID = re.compile(
    r"[A-Za-z0-9_][A-Za-z0-9_\-]*(?:\.v[0-9]+)?(?:/[A-Za-z0-9_][A-Za-z0-9_\-]*(?:\.v[0-9]+)?)*"
)
# No leading zeros: "x.v01" is an id of its own, so every version has exactly one file name.
_VERSION_SUFFIX = re.compile(r"^(?P<base>.+)\.v(?P<version>0|[1-9][0-9]{0,8})$")
_FORBIDDEN_CHARS = frozenset('\\:*?"<>|%')
# Unicode categories no file name needs: controls (C1 too, such as U+0085), format characters
# (zero-width, bidi overrides: two ids that look the same must be the same id), lone
# surrogates (not text: a file system would store their raw bytes), and line separators.
_HIDDEN = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def _refuse(prompt_id: str, why: str, source: str | None) -> UnsafePromptIdError:
    where = f" in source {source!r}" if source else ""
    return UnsafePromptIdError(
        f"refused prompt id {prompt_id!r}{where}: {why}. Prompt ids are relative paths without "
        f"the '.prompt' extension, such as 'hello' or 'support/triage'.",
        prompt_id=prompt_id,
        source=source,
    )


def check_prompt_id(prompt_id: object, *, source: str | None = None) -> str:
    """Return ``prompt_id`` if it is a safe relative id, else raise.

    Refused: empty ids, absolute paths, drive letters, backslashes, ``%`` (ids are never
    URL-encoded, so ``%2e%2e`` is refused rather than decoded), NUL and other control
    characters (C1 too), invisible format characters (zero-width, bidi overrides), lone
    surrogates, line and paragraph separators, ``.``/``..`` and hidden (``.x``) segments,
    segments that NFKC folds to dots (full-width ``..``), empty segments (``a//b``, a
    trailing ``/``), ids that change under Unicode NFC normalisation, and ids over 512
    characters.

    :raises UnsafePromptIdError: with the reason and the expected shape.
    """
    if not isinstance(prompt_id, str):
        raise UnsafePromptIdError(
            f"prompt id must be a string, got {type(prompt_id).__name__}",
            prompt_id=repr(prompt_id),
            source=source,
        )
    if _PLAIN_ID.fullmatch(prompt_id) and len(prompt_id) <= MAX_ID_LENGTH:
        return prompt_id
    if not prompt_id:
        raise _refuse(prompt_id, "it is empty", source)
    if len(prompt_id) > MAX_ID_LENGTH:
        raise _refuse(
            prompt_id[:40] + "...", f"it is longer than {MAX_ID_LENGTH} characters", source
        )
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in prompt_id):
        raise _refuse(prompt_id, "it contains a control character (NUL, newline, ...)", source)
    hidden = next((ch for ch in prompt_id if unicodedata.category(ch) in _HIDDEN), None)
    if hidden is not None:
        raise _refuse(
            prompt_id,
            f"it contains U+{ord(hidden):04X}, a control, invisible, line-separator or "
            "surrogate character",
            source,
        )
    bad = sorted(set(prompt_id) & _FORBIDDEN_CHARS)
    if bad:
        raise _refuse(prompt_id, f"it contains {' '.join(bad)}", source)
    if prompt_id.startswith("/"):
        raise _refuse(prompt_id, "it is an absolute path", source)
    if unicodedata.normalize("NFC", prompt_id) != prompt_id:
        raise _refuse(prompt_id, "it is not in Unicode NFC form", source)
    for segment in prompt_id.split("/"):
        if not segment:
            raise _refuse(prompt_id, "it has an empty path segment", source)
        if segment.startswith(".") or unicodedata.normalize("NFKC", segment).strip(".") == "":
            raise _refuse(prompt_id, f"segment {segment!r} is a dot segment or hidden", source)
        if segment != segment.strip():
            raise _refuse(prompt_id, f"segment {segment!r} has leading or trailing spaces", source)
    return prompt_id


def split_version(prompt_id: str) -> tuple[str, int | None]:
    """Split ``"hello.v2"`` into ``("hello", 2)``; ids without a suffix give ``(id, None)``."""
    if ".v" not in prompt_id:
        return prompt_id, None
    match = _VERSION_SUFFIX.match(prompt_id)
    if match is None:
        return prompt_id, None
    return match["base"], int(match["version"])


def version_file_stem(base_id: str, version: int | None) -> str:
    """The file stem of a version: ``("hello", 2)`` → ``"hello.v2"``; ``None`` → ``"hello"``."""
    return base_id if version is None else f"{base_id}.v{version}"


def closest_ids(prompt_id: str, known: Iterable[str], limit: int = 3) -> tuple[str, ...]:
    """The known ids most similar to ``prompt_id``, best first, for "did you mean" hints."""
    return tuple(get_close_matches(prompt_id, list(known), n=limit, cutoff=0.5))


def parse_prompt_path(path: str) -> tuple[str, int | None] | None:
    """``"support/triage.v2.prompt"`` → ``("support/triage", 2)``.

    ``None`` for paths that are not listed prompts: other extensions, and anything under a
    segment starting with ``.`` (hidden) or ``_`` (partials for ``{% include %}``).
    """
    if not path.endswith(PROMPT_SUFFIX):
        return None
    segments = path.split("/")
    if any(not seg or seg.startswith((".", "_")) for seg in segments):
        return None
    stem = path[: -len(PROMPT_SUFFIX)]
    if stem.endswith("/") or not stem:
        return None
    return split_version(stem)


def group_prompt_paths(paths: Iterable[str], *, source: str) -> list[PromptInfo]:
    """Fold file paths (relative, ``/``-separated) into one :class:`PromptInfo` per id, sorted.

    ``x.prompt``, ``x.v1.prompt`` and ``x.v2.prompt`` become one entry ``x`` with versions
    ``(1, 2)``; its ``path`` is the unversioned file, else the highest version. A file whose
    id :func:`check_prompt_id` refuses (``50% off.prompt``) is listed with ``error`` set.
    """
    found: dict[str, tuple[set[int], bool]] = {}
    for path in paths:
        parsed = parse_prompt_path(path)
        if parsed is None:
            continue
        prompt_id, version = parsed
        versions, plain = found.get(prompt_id, (set(), False))
        if version is None:
            plain = True
        else:
            versions.add(version)
        found[prompt_id] = (versions, plain)
    infos = []
    for prompt_id in sorted(found):
        versions, plain = found[prompt_id]
        ordered = tuple(sorted(versions))
        stem = prompt_id if plain else version_file_stem(prompt_id, ordered[-1])
        try:
            check_prompt_id(prompt_id, source=source)
            error = None
        except UnsafePromptIdError as exc:  # listed, never skipped: the error says why
            error = str(exc)
        infos.append(
            PromptInfo(
                id=prompt_id,
                source=source,
                versions=ordered,
                has_unversioned=plain,
                path=stem + PROMPT_SUFFIX,
                error=error,
            )
        )
    return infos
