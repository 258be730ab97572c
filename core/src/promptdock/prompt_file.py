"""Parse ``.prompt`` files: split off the frontmatter, read its YAML, lift its keys.

The format is the union of the LiteLLM and Dotprompt dialects (design notes §4). Parsing is pure
(no I/O) and not on the per-call path: sources cache the :class:`~promptdock.models.PromptFile`.

Frontmatter rules, in the order they apply:

* A UTF-8 byte order mark is dropped and CRLF and CR line endings become LF.
* Blank lines and lines starting with ``#`` may come before the opening ``---``; the opener is
  ``---`` at column 0 with optional trailing spaces. Without an opener the whole file is the body,
  kept as it is.
* The closer is the next line that is ``---`` at column 0 (trailing spaces allowed), so an
  indented ``---`` inside a YAML block scalar does not close. ``---`` right after the opener is an
  empty frontmatter. No closer is an error.
* **Body trimming** (with frontmatter only): blank lines between the closer and the first text line
  are dropped and trailing whitespace, final newline included, is removed; indentation of the
  first kept line stays. ``body_line`` is the file line of the first kept line, so template errors
  can point into the file.

Frontmatter keys:

* ``model``: a string, kept raw (it may be a template such as ``"{{preferred_model}}"``).
* The OpenAI request keys in :data:`KNOWN_PARAMS` at the top level (LiteLLM) and everything under
  ``config:`` (Dotprompt) become ``params``. Gemini names under ``config`` are mapped
  (``maxOutputTokens`` → ``max_tokens``, ...); ``topK`` has no OpenAI equivalent and is dropped
  with a warning. When a parameter is set both ways, the ``config`` value wins (with a warning).
* ``input.schema`` / ``output.schema`` are compiled with
  :func:`~promptdock.picoschema.picoschema_to_json_schema`; ``input.default`` becomes
  ``input_defaults``; ``output.format`` becomes ``output_format``.
* ``output.format: json`` asks for JSON output unless ``response_format`` is set explicitly: with
  an object-shaped ``output.schema`` it sets ``response_format`` to
  ``{"type": "json_schema", "json_schema": {"name": <id with unsafe characters replaced>,
  "schema": <the schema>}}`` (not ``strict``: optional Picoschema fields are not allowed in
  OpenAI's strict mode), otherwise to ``{"type": "json_object"}``.
* ``name`` and ``description`` are strings. ``version`` and ``variant`` are metadata (the file
  version comes from the file name). Keys with a dot (Dotprompt extensions) and the ``metadata:``
  mapping go to ``metadata`` quietly; any other key goes there with a warning. Metadata is never
  sent upstream. On a clash, the ``metadata:`` mapping wins over a top-level key.

YAML is read as YAML 1.2 with ruamel.yaml's safe loader. Duplicate keys, non-string keys, anchors
and aliases (a YAML bomb needs them), merge keys, non-standard tags and ``%YAML`` directives for
other versions are errors. Timestamps stay the strings written, so every value is plain JSON
data (``dict``, ``list``, ``str``, ``int``, ``float``, ``bool``, ``None``).

Limits, so a hostile file is refused quickly: a file of more than 2 MiB (characters, or bytes
before decoding), a frontmatter of more than 32 KiB, and YAML nested more than 64 levels deep
are errors.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from promptdock.errors import PromptSyntaxError
from promptdock.models import IncludeResolver, PromptFile, Provenance
from promptdock.picoschema import picoschema_to_json_schema

if TYPE_CHECKING:
    from ruamel.yaml import YAML

__all__ = [
    "CONFIG_ALIASES",
    "KNOWN_PARAMS",
    "FrontmatterSplit",
    "parse_prompt",
    "split_frontmatter",
]

KNOWN_PARAMS: frozenset[str] = frozenset(
    {
        "audio",
        "frequency_penalty",
        "function_call",
        "functions",
        "logit_bias",
        "logprobs",
        "max_completion_tokens",
        "max_tokens",
        "modalities",
        "n",
        "parallel_tool_calls",
        "prediction",
        "presence_penalty",
        "prompt_cache_key",
        "reasoning_effort",
        "response_format",
        "safety_identifier",
        "seed",
        "service_tier",
        "stop",
        "store",
        "temperature",
        "tool_choice",
        "tools",
        "top_logprobs",
        "top_p",
        "user",
        "verbosity",
        "web_search_options",
    }
)
"""Top-level frontmatter keys sent upstream as OpenAI chat-completion parameters."""

CONFIG_ALIASES: Mapping[str, str] = {
    "maxOutputTokens": "max_tokens",
    "topP": "top_p",
    "stopSequences": "stop",
    "frequencyPenalty": "frequency_penalty",
    "presencePenalty": "presence_penalty",
    "candidateCount": "n",
}
"""Dotprompt/Gemini ``config`` names and the OpenAI parameter each becomes."""

# Gemini-only sampling knobs: OpenAI rejects them, so they are dropped with a warning.
_CONFIG_DROPPED = frozenset({"topK"})
_METADATA_KEYS = frozenset({"version", "variant"})
_HANDLED_KEYS = frozenset({"model", "config", "input", "output", "name", "description", "metadata"})
_INPUT_KEYS = frozenset({"schema", "default"})
_OUTPUT_KEYS = frozenset({"schema", "format"})

# Private-use characters the renderer reserves for its own markers; a template may not forge them.
_SENTINELS = str.maketrans("", "", "\ue000\ue001\ue002\ue003")
_CLOSER = re.compile(r"^---[ \t]*$", re.MULTILINE)
_SCHEMA_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")

_TAG = "tag:yaml.org,2002:"
_STR, _NULL, _TIMESTAMP = _TAG + "str", _TAG + "null", _TAG + "timestamp"
_CONSTRUCTED = frozenset({_TAG + "bool", _TAG + "int", _TAG + "float"})
_YAML_MAX_DEPTH = 64
# Parsing is not free (pure-Python YAML reads about 100 KB/s): a file pushed to a prompt
# repository must not be able to stall the process that loads it.
_MAX_FILE_CHARS = 2 * 1024 * 1024
_MAX_FRONTMATTER_CHARS = 32 * 1024


@dataclass(frozen=True)
class FrontmatterSplit:
    """A ``.prompt`` text cut into its YAML frontmatter and its template body.

    :ivar yaml_text: the text between the ``---`` lines (``""`` when empty), ``None`` when the
        file has no frontmatter.
    :ivar body: the template text, trimmed when there is frontmatter (see the module notes).
    :ivar yaml_line: the 1-based file line where the YAML starts; ``0`` without frontmatter.
    :ivar body_line: the 1-based file line of the first character of ``body``.
    """

    yaml_text: str | None
    body: str
    yaml_line: int
    body_line: int


def _normalise(text: str) -> str:
    if text.startswith("\ufeff"):
        text = text[1:]
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def _prefix(location: str | None, line: int | None, column: int | None = None) -> str:
    if location is None:
        return ""
    if line is None:
        return f"{location}: "
    return f"{location}:{line}:{column}: " if column else f"{location}:{line}: "


def _find_opener(text: str) -> tuple[int, int] | None:
    """Return ``(line number, offset after the opener line)``, or ``None`` if there is none."""
    pos, line_no, size = 0, 1, len(text)
    while pos <= size:
        end = text.find("\n", pos)
        if end == -1:
            end = size
        line = text[pos:end]
        if line.rstrip(" \t") == "---":
            return line_no, end + 1
        if line.strip() and not line.startswith("#"):
            return None
        pos, line_no = end + 1, line_no + 1
    return None


def split_frontmatter(text: str, *, path: str | None = None) -> FrontmatterSplit:
    """Cut ``text`` into frontmatter and body by the rules in the module notes.

    :param text: the whole file, already decoded.
    :param path: how error messages name the file (they carry no location without it).
    :raises PromptSyntaxError: an opening ``---`` has no closing ``---`` line.
    """
    text = _normalise(text)
    opener = _find_opener(text)
    if opener is None:
        return FrontmatterSplit(None, text, 0, 1)
    open_line, yaml_start = opener
    closer = _CLOSER.search(text, yaml_start) if yaml_start <= len(text) else None
    if closer is None:
        raise PromptSyntaxError(
            f"{_prefix(path, open_line)}unterminated frontmatter: the '---' on line {open_line} "
            "has no closing '---' line; add a line '---' after the frontmatter (if the '---' "
            "belongs to the body, start the file with an empty frontmatter: two '---' lines)",
            path=path,
            line=open_line,
        )
    yaml_text = text[yaml_start : closer.start()]
    body_line = open_line + yaml_text.count("\n") + 2
    pos = closer.end() + 1
    # Drop blank lines before the body so body_line points at real text.
    while pos < len(text):
        end = text.find("\n", pos)
        if end == -1 or text[pos:end].strip():
            break
        pos, body_line = end + 1, body_line + 1
    return FrontmatterSplit(yaml_text, text[pos:].rstrip(), open_line + 1, body_line)


@dataclass(frozen=True)
class _Where:
    """Builds errors that name the file, line and column."""

    location: str
    yaml_line: int = 1

    def error(
        self, message: str, line: int | None = None, column: int | None = None
    ) -> PromptSyntaxError:
        return PromptSyntaxError(
            f"{_prefix(self.location, line, column)}{message}",
            path=self.location,
            line=line,
            column=column,
        )

    def at(self, mark: Any, message: str) -> PromptSyntaxError:
        """An error at a ruamel mark (0-based, relative to the YAML text)."""
        return self.error(message, self.yaml_line + mark.line, mark.column + 1)


def _new_yaml() -> YAML:
    # A YAML object holds parser state, so it is not shared between threads: one per parse.
    from ruamel.yaml import YAML

    yaml = YAML(typ="safe", pure=True)
    yaml.max_depth = _YAML_MAX_DEPTH
    # Anchors are rejected with a clear error below; the reuse warning would only add noise.
    yaml.composer.warn_double_anchors = False
    return yaml


def _load_yaml(yaml_text: str, where: _Where) -> tuple[dict[str, Any], dict[tuple[str, ...], int]]:
    """Read the frontmatter YAML into plain data plus the file line of each key (2 levels)."""
    from ruamel.yaml.error import MarkedYAMLError, YAMLError

    yaml = _new_yaml()
    try:
        root = yaml.compose(yaml_text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        # A problem found only at the end of the text ("could not find expected ':'") is
        # better shown where the construct that was left open starts.
        if exc.context_mark is not None and _at_end(mark, yaml_text):
            mark = exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        if exc.problem and exc.context:
            problem = f"{problem} ({exc.context})"
        problem = problem.replace("'<stream end>'", "the end of the frontmatter")
        message = (
            f"invalid YAML in frontmatter: {problem}; fix the YAML between the '---' lines "
            "(values containing ': ' or starting with a special character need quotes)"
        )
        if "maximum depth" in problem:  # ruamel's advice (raise max_depth) is not the user's
            message = (
                f"the frontmatter nests lists and mappings more than {_YAML_MAX_DEPTH} levels "
                "deep; flatten it"
            )
        raise (where.at(mark, message) if mark is not None else where.error(message)) from None
    except YAMLError as exc:
        raise _reader_error(exc, yaml_text, where) from None
    if yaml.resolver.processing_version != (1, 2):
        raise where.error(
            "frontmatter must be YAML 1.2; remove the '%YAML' directive", where.yaml_line, 1
        )
    if root is None:
        return {}, {}
    if root.id != "mapping":
        if root.id == "scalar" and root.tag == _NULL and root.anchor is None:
            return {}, {}
        kind = "a list" if root.id == "sequence" else "a single value"
        raise where.at(
            root.start_mark,
            f"frontmatter must be a mapping of keys (such as 'model: gpt-4o'), not {kind}",
        )
    lines: dict[tuple[str, ...], int] = {}
    data = _Builder(yaml, where, lines).build(root, ())
    return data, lines


def _at_end(mark: Any, yaml_text: str) -> bool:
    index = getattr(mark, "index", None)
    return isinstance(index, int) and index >= len(yaml_text.rstrip())


def _reader_error(exc: Exception, yaml_text: str, where: _Where) -> PromptSyntaxError:
    position = getattr(exc, "position", None)
    reason = getattr(exc, "reason", None) or str(exc)
    character = getattr(exc, "character", None)
    what = f" (character U+{character:04X})" if isinstance(character, int) else ""
    message = f"invalid YAML in frontmatter: {reason}{what}; remove the character"
    if not isinstance(position, int):
        return where.error(message, where.yaml_line)
    before = yaml_text[:position]
    line = where.yaml_line + before.count("\n")
    return where.error(message, line, position - (before.rfind("\n") + 1) + 1)


class _Builder:
    """Turns a composed YAML node tree into plain Python data, refusing unsafe constructs."""

    def __init__(self, yaml: YAML, where: _Where, lines: dict[tuple[str, ...], int]) -> None:
        self._constructor = yaml.constructor
        self._where = where
        self._lines = lines

    def build(self, node: Any, path: tuple[str, ...] | None) -> Any:
        if node.anchor is not None:
            raise self._where.at(
                node.start_mark,
                f"anchors and aliases ('&{node.anchor}', '*{node.anchor}') are not allowed in "
                "frontmatter; write the value out in full",
            )
        tag = node.tag
        if node.id == "mapping" and tag == _TAG + "map":
            return self._mapping(node, path)
        if node.id == "sequence" and tag == _TAG + "seq":
            return [self.build(item, None) for item in node.value]
        if node.id == "scalar":
            if tag in (_STR, _TIMESTAMP):
                return node.value
            if tag == _NULL:
                return None
            if tag in _CONSTRUCTED:
                return self._scalar(node)
        raise self._where.at(
            node.start_mark,
            f"the YAML tag '{tag}' is not allowed in frontmatter; use plain strings, numbers, "
            "booleans, lists and mappings",
        )

    def _scalar(self, node: Any) -> Any:
        from ruamel.yaml.error import YAMLError

        try:
            return self._constructor.construct_object(node)
        except (YAMLError, ValueError, TypeError, KeyError, ArithmeticError):
            kind = str(node.tag).rsplit(":", 1)[-1]
            raise self._where.at(
                node.start_mark, f"cannot read {node.value!r} as {kind}; quote it or fix the value"
            ) from None

    def _mapping(self, node: Any, path: tuple[str, ...] | None) -> dict[str, Any]:
        result: dict[str, Any] = {}
        first_line: dict[str, int] = {}
        for key_node, value_node in node.value:
            line = self._where.yaml_line + key_node.start_mark.line
            if key_node.id != "scalar" or key_node.tag != _STR or key_node.anchor is not None:
                raise self._where.at(key_node.start_mark, self._bad_key(key_node))
            key = key_node.value
            if key in result:
                raise self._where.at(
                    key_node.start_mark,
                    f"duplicate key {key!r} (first on line {first_line[key]}); remove one of them",
                )
            first_line[key] = line
            child: tuple[str, ...] | None = None
            if path is not None:
                self._lines[(*path, key)] = line
                child = (*path, key) if len(path) < 1 else None
            result[key] = self.build(value_node, child)
        return result

    @staticmethod
    def _bad_key(key_node: Any) -> str:
        if key_node.anchor is not None:
            return (
                f"anchors and aliases ('&{key_node.anchor}') are not allowed in frontmatter; "
                "write the key out in full"
            )
        if key_node.tag == _TAG + "merge":
            return "merge keys ('<<') are not allowed in frontmatter; write the keys out in full"
        if key_node.id != "scalar":
            return "mapping keys must be plain strings, not lists or mappings"
        return f"mapping keys must be strings; quote the key: '{key_node.value}': ..."


def _schema_name(prompt_id: str) -> str:
    # OpenAI accepts 1-64 characters of [A-Za-z0-9_-] as a json_schema name.
    return _SCHEMA_NAME_UNSAFE.sub("_", prompt_id).strip("_")[:64] or "output"


def _type_name(value: object) -> str:
    return f"{type(value).__name__} {value!r}"


class _Lifter:
    """Maps a frontmatter mapping onto :class:`PromptFile` fields, collecting warnings."""

    def __init__(
        self, frontmatter: dict[str, Any], lines: dict[tuple[str, ...], int], where: _Where
    ) -> None:
        self.fm = frontmatter
        self.lines = lines
        self.where = where
        self.params: dict[str, Any] = {}
        self.metadata: dict[str, Any] = {}
        self.warnings: list[str] = []
        self.fields: dict[str, Any] = {}

    def line(self, *path: str) -> int | None:
        return self.lines.get(path)

    def fail(self, message: str, *path: str) -> PromptSyntaxError:
        return self.where.error(message, self.line(*path))

    def _mapping(self, value: object, *path: str) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            dotted = ".".join(path)
            raise self.fail(f"'{dotted}' must be a mapping, got {_type_name(value)}", *path)
        return value

    def _string(self, key: str, example: str) -> str | None:
        value = self.fm.get(key)
        if value is not None and not isinstance(value, str):
            raise self.fail(
                f"'{key}' must be a string such as {example}, got {_type_name(value)}; quote it",
                key,
            )
        return value

    def lift(self, prompt_id: str) -> dict[str, Any]:
        explicit_metadata: dict[str, Any] = {}
        for key, value in self.fm.items():
            if key in KNOWN_PARAMS:
                self.params[key] = value
            elif key == "metadata":
                explicit_metadata = self._mapping(value, key)
            elif key in _HANDLED_KEYS:
                continue
            elif key in _METADATA_KEYS or "." in key:
                self.metadata[key] = value
            else:
                self.metadata[key] = value
                self.warnings.append(
                    f"unknown frontmatter key {key!r} (line {self.line(key)}) is kept as "
                    "metadata and not sent upstream"
                )
        self.metadata.update(explicit_metadata)
        model = self._string("model", "'gpt-4o' or '{{preferred_model}}'")
        self.fields["model"] = model.translate(_SENTINELS) if model is not None else None
        self.fields["name"] = self._string("name", "'support-triage'")
        self.fields["description"] = self._string("description", "'Sorts support tickets'")
        self._config()
        self._input()
        self._output(prompt_id)
        self._check_tools()
        self.fields.update(params=self.params, metadata=self.metadata)
        return self.fields

    def _config(self) -> None:
        for key, value in self._mapping(self.fm.get("config"), "config").items():
            where = f"config.{key} (line {self.line('config', key)})"
            if key in _CONFIG_DROPPED:
                self.warnings.append(f"{where} has no OpenAI equivalent and is dropped")
                continue
            target = CONFIG_ALIASES.get(key, key)
            if target in self.params:
                self.warnings.append(
                    f"{target!r} is set more than once; the value from {where} is used"
                )
            self.params[target] = value

    def _schema(self, section: str) -> dict[str, Any] | None:
        value = self.fm[section].get("schema")
        try:
            return picoschema_to_json_schema(value, root=f"{section}.schema")
        except PromptSyntaxError as exc:
            raise self.where.error(
                str(exc), self.line(section, "schema") or self.line(section)
            ) from None

    def _unknown_subkeys(self, section: str, allowed: frozenset[str]) -> None:
        for key in self.fm[section]:
            if key not in allowed:
                self.warnings.append(
                    f"unknown key '{section}.{key}' (line {self.line(section, key)}) is ignored; "
                    f"'{section}' takes {' and '.join(sorted(allowed))}"
                )

    def _input(self) -> None:
        section = self._mapping(self.fm.get("input"), "input")
        if not section:
            return
        self._unknown_subkeys("input", _INPUT_KEYS)
        self.fields["input_schema"] = self._schema("input")
        self.fields["input_defaults"] = self._mapping(section.get("default"), "input", "default")

    def _output(self, prompt_id: str) -> None:
        section = self._mapping(self.fm.get("output"), "output")
        if not section:
            return
        self._unknown_subkeys("output", _OUTPUT_KEYS)
        schema = self._schema("output")
        fmt = section.get("format")
        if fmt is not None and not isinstance(fmt, str):
            raise self.fail(
                f"'output.format' must be a string such as 'json' or 'text', got {_type_name(fmt)}",
                "output",
                "format",
            )
        self.fields.update(output_schema=schema, output_format=fmt)
        if fmt != "json" or "response_format" in self.params:
            return
        if schema is not None and schema.get("type") == "object":
            self.params["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": _schema_name(prompt_id), "schema": schema},
            }
            return
        if schema is not None:
            self.warnings.append(
                f"output.schema (line {self.line('output', 'schema')}) is not an object, which "
                "OpenAI structured outputs require; only JSON mode is requested"
            )
        self.params["response_format"] = {"type": "json_object"}

    def _check_tools(self) -> None:
        tools = self.params.get("tools")
        if isinstance(tools, list) and any(isinstance(t, str) for t in tools):
            self.warnings.append(
                f"'tools' (line {self.line('tools')}) lists tool names; they are sent upstream "
                "as written, but OpenAI expects tool objects ({'type': 'function', ...})"
            )


def _decode(data: bytes, location: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise PromptSyntaxError(
            f"{location}:{line}: the file is not valid UTF-8 (bad byte 0x{data[exc.start]:02x} "
            f"at byte offset {exc.start}); save it as UTF-8",
            path=location,
            line=line,
        ) from None


def parse_prompt(
    text: str | bytes,
    *,
    name: str | None = None,
    path: str | None = None,
    version: int | None = None,
    provenance: Provenance | None = None,
    include_resolver: IncludeResolver | None = None,
) -> PromptFile:
    """Parse the text of a ``.prompt`` file into a :class:`~promptdock.models.PromptFile`.

    Pure: no I/O, no plugin manager. The rules are in the module notes.

    :param text: the file's content; ``bytes`` are decoded as UTF-8.
    :param name: the prompt id (``"support/triage"``); ``"<string>"`` when not given.
    :param path: the file's path, used in error messages (falls back to ``name``).
    :param version: the ``name.vN.prompt`` version number, if any.
    :param provenance: where the text came from, stored on the result.
    :param include_resolver: how ``{% include %}`` finds other files of the same source.
    :raises PromptSyntaxError: the file is not UTF-8, the frontmatter is unterminated, its YAML is
        invalid or unsafe, a key has the wrong type, or a schema is malformed. The message names
        the file, line and column where known and says how to fix it.
    """
    prompt_id = name or "<string>"
    location = path or prompt_id
    if len(text) > _MAX_FILE_CHARS:
        unit = "bytes" if isinstance(text, bytes) else "characters"
        raise PromptSyntaxError(
            f"{location}: the file is {len(text)} {unit} long, more than the limit of "
            f"{_MAX_FILE_CHARS}; a prompt should not be this large: pass long content as a "
            "variable, or split the file with {% include %}",
            path=location,
        )
    if isinstance(text, bytes):
        text = _decode(text, location)
    split = split_frontmatter(text, path=location)
    frontmatter: dict[str, Any] = {}
    fields: dict[str, Any] = {}
    warnings: tuple[str, ...] = ()
    if split.yaml_text is not None:
        where = _Where(location, split.yaml_line)
        if len(split.yaml_text) > _MAX_FRONTMATTER_CHARS:
            raise where.error(
                f"the frontmatter is {len(split.yaml_text)} characters long, more than the "
                f"limit of {_MAX_FRONTMATTER_CHARS}; move large content out of it (a long "
                "schema or text belongs in an included file or a variable)",
                split.yaml_line - 1,
            )
        frontmatter, lines = _load_yaml(split.yaml_text, where)
        lifter = _Lifter(frontmatter, lines, where)
        fields = lifter.lift(prompt_id)
        warnings = tuple(lifter.warnings)
    return PromptFile(
        id=prompt_id,
        body=split.body.translate(_SENTINELS),
        frontmatter=frontmatter,
        version=version,
        path=path,
        body_line=split.body_line,
        warnings=warnings,
        provenance=provenance,
        include_resolver=include_resolver,
        **fields,
    )
