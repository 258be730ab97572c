"""The documentation stays true: links resolve and the examples marked runnable run.

Conventions in ``README.md`` and ``docs/*.md`` (an HTML comment on the line right before a fence):

``<!-- run -->``
    In ``docs/sdk.md``, ``docs/prompt-format.md``, ``docs/writing-plugins.md`` and
    ``docs/errors.md``, before a ```` ```python ```` fence: the block runs. A page's blocks run
    in order in one interpreter and share their globals, like cells of a notebook. In
    ``docs/cli.md``, before a ```` ```bash ```` fence: every ``promptdock ...`` command in it
    must exit 0. Other pages may not mark blocks runnable.
``<!-- run: exit N -->``
    In ``docs/cli.md``: every command in the block must exit ``N`` (a failing ``check``).
``<!-- file: PATH -->``
    Before any fence: the block's text is written to ``PATH`` before the blocks after it run.
``<!-- from: PATH -->``
    Before any fence: the block quotes the repository file ``PATH`` and must appear in it
    verbatim, so quoted code cannot drift from the code it shows.
``<!-- output -->``
    Before the fence right after a runnable block: what that block prints to stdout, exactly
    (trailing newlines aside). This is how an example shows an error message: it prints it,
    and prints nothing if no error was raised.

Each page runs in a fresh temporary folder holding ``examples/prompts`` as ``./prompts``. Python
pages run in a subprocess with warnings as errors, against a local OpenAI-compatible server
(``OPENAI_BASE_URL``), so nothing reaches the internet. ``docs/writing-plugins.md`` runs with the
example zip plugin importable and registered under its entry point, as ``pip install`` would
leave it. CLI commands run in-process through the ``promptdock`` console script's function.

Two more checks keep reference lists complete: every command and option of the ``promptdock``
command appears in ``docs/cli.md``, and every frontmatter parameter in ``docs/prompt-format.md``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from promptdock.cli import main as cli_main
from promptdock.prompt_file import CONFIG_ALIASES, KNOWN_PARAMS
from tests.support.openai_server import OpenAIServer

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
EXAMPLE_PROMPTS = ROOT / "examples" / "prompts"
EXAMPLE_PLUGIN = ROOT / "examples" / "third-party-plugin"
PYTHON_PAGES = ("sdk.md", "prompt-format.md", "writing-plugins.md", "errors.md")
CLI_PAGE = "cli.md"

_FENCE = re.compile(r"^(`{3,})\s*([\w+-]*)\s*$")
_DIRECTIVE = re.compile(r"^<!--\s*(run|file|from|output)\s*(?::\s*(.*?))?\s*-->\s*$")
_RUN_EXIT = re.compile(r"^exit\s+(\d+)$")
_LINK = re.compile(r"!?\[(?:[^\]]*)\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_CODE_SPAN = re.compile(r"`+[^`]*`+")
_ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a Markdown page.

    :ivar line: the 1-based page line of the block's first line of code.
    :ivar lang: the fence's info string (``"python"``, ``"bash"``, ``""``).
    :ivar text: the code, ending with a newline.
    :ivar run: ``None`` when not marked runnable, else the exit status its commands must have.
    :ivar file: the path the block is written to, from a ``<!-- file: PATH -->`` comment.
    :ivar quote: the repository file the block quotes, from ``<!-- from: PATH -->``.
    :ivar output: the block is the expected output of the runnable block before it.
    """

    line: int
    lang: str
    text: str
    run: int | None = None
    file: str | None = None
    quote: str | None = None
    output: bool = False


def _block(line: int, lang: str, text: str, directive: str) -> Block:
    """A block, with the meaning of the comment line before its fence (if it is a directive)."""
    found = _DIRECTIVE.match(directive)
    if found is None:
        return Block(line, lang, text)
    name, argument = found.group(1), found.group(2) or ""
    if name == "run":
        status = _RUN_EXIT.match(argument)
        assert status is not None or not argument, f"line {line}: write <!-- run: exit N -->"
        return Block(line, lang, text, run=int(status.group(1)) if status else 0)
    if name == "output":
        return Block(line, lang, text, output=True)
    assert argument, f"line {line}: <!-- {name}: PATH --> needs a path"
    if name == "file":
        return Block(line, lang, text, file=argument)
    return Block(line, lang, text, quote=argument)


def parse_blocks(markdown: str) -> list[Block]:
    """Every fenced block of ``markdown``, with the directive on the line before its fence."""
    lines = markdown.splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        opener = _FENCE.match(lines[index])
        if opener is None:
            index += 1
            continue
        fence, lang = opener.groups()
        end = index + 1
        while end < len(lines) and lines[end].strip() != fence:
            end += 1
        text = "".join(line + "\n" for line in lines[index + 1 : end])
        blocks.append(_block(index + 2, lang, text, lines[index - 1] if index else ""))
        index = end + 1
    return blocks


def prose_lines(markdown: str, *, keep_code_spans: bool = False) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of the lines outside fenced blocks, code spans removed unless
    ``keep_code_spans`` (a heading's anchor is made from its code spans' text too)."""
    fence: str | None = None
    for number, line in enumerate(markdown.splitlines(), start=1):
        opener = _FENCE.match(line)
        if fence is None and opener is not None:
            fence = opener.group(1)
        elif fence is not None and line.strip() == fence:
            fence = None
        elif fence is None:
            yield number, line if keep_code_spans else _CODE_SPAN.sub("", line)


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    """The anchors of every heading of a page (``-1``, ``-2``... for repeated headings)."""
    found: set[str] = set()
    counts: dict[str, int] = {}
    for _, line in prose_lines(markdown, keep_code_spans=True):
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading is None:
            continue
        slug = github_slug(heading.group(1))
        count = counts.get(slug, 0)
        counts[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    """``"page:line: target (why)"`` for each relative link of ``page`` that leads nowhere.

    :param root: what the page's path in each message is relative to.
    """
    markdown = page.read_text(encoding="utf-8")
    problems: list[str] = []
    for number, line in prose_lines(markdown):
        for target in _LINK.findall(line):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):
                continue  # http:, https:, mailto: — not checked offline
            path_part, _, fragment = target.partition("#")
            destination = (page.parent / path_part).resolve() if path_part else page
            where = f"{page.relative_to(root)}:{number}: {target}"
            if not destination.exists():
                problems.append(f"{where} (no such file)")
            elif (
                fragment
                and destination.suffix == ".md"
                and fragment not in anchors(destination.read_text(encoding="utf-8"))
            ):
                problems.append(f"{where} (no heading with anchor #{fragment})")
    return problems


def misquoted(page: Path, root: Path = ROOT) -> list[str]:
    """``"page:line: PATH"`` for each ``<!-- from: PATH -->`` block not found verbatim in PATH."""
    problems = []
    for block in parse_blocks(page.read_text(encoding="utf-8")):
        if block.quote is None:
            continue
        quoted = root / block.quote
        text = quoted.read_text(encoding="utf-8") if quoted.is_file() else ""
        if block.text not in text:
            problems.append(f"{page.relative_to(root)}:{block.line}: {block.quote}")
    return problems


# ---------------------------------------------------------------------------------------------
# The helpers themselves: a checker that finds nothing must be able to find something.


def test_parse_blocks_reads_directives_and_lines() -> None:
    page = (
        "text\n<!-- run -->\n```python\nx = 1\n```\n<!-- file: a/b.yaml -->\n```yaml\nk: v\n```\n"
    )
    page += "<!-- run: exit 1 -->\n```bash\npromptdock check\n```\n```\nplain\n```\n"
    page += "<!-- output -->\n```text\nok\n```\n<!-- from: src/x.py -->\n```python\ny\n```\n"
    assert parse_blocks(page) == [
        Block(4, "python", "x = 1\n", run=0),
        Block(8, "yaml", "k: v\n", file="a/b.yaml"),
        Block(12, "bash", "promptdock check\n", run=1),
        Block(15, "", "plain\n"),
        Block(19, "text", "ok\n", output=True),
        Block(23, "python", "y\n", quote="src/x.py"),
    ]


def test_github_slug_matches_github() -> None:
    assert github_slug("`completion()` parameters") == "completion-parameters"
    assert github_slug("load_prompt(source, prompt_id, version)") == (
        "load_promptsource-prompt_id-version"
    )
    assert anchors("# A\n## A\n```\n# not a heading\n```\n") == {"a", "a-1"}


def test_broken_links_are_found(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Here it is\n", encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](other.md) [ok](other.md#here-it-is) [web](https://example.invalid/x)\n"
        "[gone](missing.md) [bad anchor](other.md#nowhere) `[in code](nope.md)`\n"
        "```\n[in a block](nope.md)\n```\n",
        encoding="utf-8",
    )
    assert broken_links(page, tmp_path) == [
        "page.md:2: missing.md (no such file)",
        "page.md:2: other.md#nowhere (no heading with anchor #nowhere)",
    ]


def test_misquoted_code_is_found(tmp_path: Path) -> None:
    (tmp_path / "code.py").write_text("def f():\n    return 1\n", encoding="utf-8")
    page = tmp_path / "page.md"
    quote = "<!-- from: code.py -->\n```python\n"
    page.write_text(
        f"{quote}def f():\n    return 1\n```\n{quote}def f():\n    return 2\n```\n"
        "<!-- from: gone.py -->\n```python\nx\n```\n",
        encoding="utf-8",
    )
    assert misquoted(page, tmp_path) == ["page.md:8: code.py", "page.md:13: gone.py"]


# ---------------------------------------------------------------------------------------------
# (1) Links, and code quoted from the repository


LINKED_PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


@pytest.mark.parametrize("page", LINKED_PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    assert broken_links(page) == []


@pytest.mark.parametrize("page", LINKED_PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_quoted_code_matches_its_file(page: Path) -> None:
    assert misquoted(page) == []


@pytest.mark.parametrize("page", LINKED_PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_only_tested_pages_mark_examples_runnable(page: Path) -> None:
    # A marker on any other page would be silently ignored; make it loud instead.
    if page.parent == DOCS and page.name in (*PYTHON_PAGES, CLI_PAGE):
        return
    blocks = parse_blocks(page.read_text(encoding="utf-8"))
    assert [b.line for b in blocks if b.run is not None or b.output] == []


# ---------------------------------------------------------------------------------------------
# (2) Python examples


_DRIVER = """
import contextlib, io, json, os, sys
namespace = {"__name__": "__main__"}
printed = []
with open(sys.argv[1], encoding="utf-8") as handle:
    steps = json.load(handle)
for step in steps:
    if step["kind"] == "file":
        os.makedirs(os.path.dirname(step["path"]) or ".", exist_ok=True)
        with open(step["path"], "w", encoding="utf-8") as handle:
            handle.write(step["text"])
        continue
    # Blank lines in front, so tracebacks give the line in the Markdown page.
    code = compile("\\n" * (step["line"] - 1) + step["text"], step["page"], "exec")
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            exec(code, namespace)
    except BaseException:
        sys.stderr.write(buffer.getvalue())
        raise
    printed.append(buffer.getvalue())
with open(sys.argv[2], "w", encoding="utf-8") as handle:
    json.dump(printed, handle)
"""


@dataclass(frozen=True)
class Step:
    """What the driver does for one block: write a file, or run code."""

    kind: str
    line: int
    text: str
    path: str = ""


def _plan(page: Path, blocks: list[Block]) -> tuple[list[Step], dict[int, Block]]:
    """The steps of a page, and each output block by the index of the run step it follows."""
    steps: list[Step] = []
    outputs: dict[int, Block] = {}
    previous: Block | None = None
    for block in blocks:
        where = f"{page.name}:{block.line}"
        if block.output:
            assert previous is not None, f"{where}: an output block must follow a runnable block"
            assert previous.run is not None, f"{where}: an output block must follow a runnable one"
            outputs[sum(step.kind == "run" for step in steps) - 1] = block
        elif block.file is not None:
            steps.append(Step("file", block.line, block.text, block.file))
        elif block.run is not None:
            assert block.lang == "python", f"{where}: only python blocks run on this page"
            assert block.run == 0, f"{where}: a python example has no exit status to expect"
            steps.append(Step("run", block.line, block.text))
        previous = block
    return steps, outputs


def _workdir(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    shutil.copytree(EXAMPLE_PROMPTS, work / "prompts")
    return work


def _install_example_plugin(site: Path) -> list[str]:
    """Make the example plugin importable and findable by its entry point, without pip.

    A ``.dist-info`` folder with ``METADATA`` and ``entry_points.txt`` on ``sys.path`` is what
    ``importlib.metadata`` reads from an installed distribution. Both are built from the
    example's own ``pyproject.toml``, so the test follows any change to it.
    """
    project = tomllib.loads((EXAMPLE_PLUGIN / "pyproject.toml").read_text())["project"]
    name, version = project["name"], project["version"]
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    points = project["entry-points"]["promptdock"]
    lines = "".join(f"{key} = {value}\n" for key, value in points.items())
    (info / "entry_points.txt").write_text(f"[promptdock]\n{lines}")
    return [str(site), str(EXAMPLE_PLUGIN / "src")]


def _python_env(openai_server: OpenAIServer, paths: list[str]) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("OPENAI_", "PROMPTDOCK_"))
    }
    env["OPENAI_BASE_URL"] = openai_server.base_url
    env["OPENAI_API_KEY"] = "sk-docs-test-key"
    if paths:
        env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


@pytest.mark.parametrize("name", PYTHON_PAGES)
def test_python_examples_run(name: str, tmp_path: Path, openai_server: OpenAIServer) -> None:
    page = DOCS / name
    steps, outputs = _plan(page, parse_blocks(page.read_text(encoding="utf-8")))
    runs = [step for step in steps if step.kind == "run"]
    assert runs, f"docs/{name} marks no example runnable"
    work = _workdir(tmp_path)
    plan = tmp_path / "steps.json"
    shown = str(page.relative_to(ROOT))
    plan.write_text(
        json.dumps([{**asdict(step), "page": shown} for step in steps]), encoding="utf-8"
    )
    printed_file = tmp_path / "printed.json"
    paths = _install_example_plugin(tmp_path / "site") if name == "writing-plugins.md" else []
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", _DRIVER, str(plan), str(printed_file)],
        cwd=work,
        env=_python_env(openai_server, paths),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"an example of {shown} failed:\n{done.stderr}"
    printed: list[str] = json.loads(printed_file.read_text(encoding="utf-8"))
    for index, expected in outputs.items():
        assert printed[index].rstrip("\n") == expected.text.rstrip("\n"), (
            f"{shown}:{runs[index].line}: the example printed something else than the output "
            f"block at line {expected.line}"
        )


# ---------------------------------------------------------------------------------------------
# (3) CLI examples


def _commands(block: Block) -> Iterator[tuple[dict[str, str], list[str]]]:
    """``(environment, arguments)`` of each command of a block; continuation lines joined."""
    text = block.text.replace("\\\n", " ")
    for offset, line in enumerate(text.splitlines()):
        words = shlex.split(line.removeprefix("$ "), comments=True)
        if not words:
            continue
        env: dict[str, str] = {}
        while words and _ENV_ASSIGNMENT.match(words[0]):
            key, _, value = words.pop(0).partition("=")
            env[key] = value
        where = f"docs/{CLI_PAGE}:{block.line + offset}"
        assert words[:1] == ["promptdock"], f"{where}: a runnable block may only run promptdock"
        yield env, words[1:]


def test_cli_examples_exit_as_documented(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (script,) = metadata.entry_points(group="console_scripts", name="promptdock")
    main = script.load()
    for key in list(os.environ):
        if key.startswith(("OPENAI_", "PROMPTDOCK_")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")  # never the internet
    monkeypatch.chdir(_workdir(tmp_path))
    ran = 0
    printed: str | None = None  # stdout of the last runnable block
    for block in parse_blocks((DOCS / CLI_PAGE).read_text(encoding="utf-8")):
        if block.output:
            assert printed is not None, f"docs/{CLI_PAGE}:{block.line}: output of nothing"
            assert printed.rstrip("\n") == block.text.rstrip("\n"), (
                f"docs/{CLI_PAGE}:{block.line}: the commands printed something else:\n{printed}"
            )
        printed = None
        if block.file is not None:
            Path(block.file).parent.mkdir(parents=True, exist_ok=True)
            Path(block.file).write_text(block.text, encoding="utf-8")
        if block.run is None:
            continue
        printed = ""
        for env, args in _commands(block):
            result = CliRunner().invoke(main, args, env=env, catch_exceptions=False)
            shown = " ".join(["promptdock", *args])
            assert result.exit_code == block.run, (
                f"docs/{CLI_PAGE}:{block.line}: `{shown}` exited {result.exit_code}, "
                f"expected {block.run}:\n{result.output}"
            )
            printed += result.stdout
            ran += 1
    assert ran >= 5, f"docs/{CLI_PAGE} marks only {ran} commands runnable"


# ---------------------------------------------------------------------------------------------
# (4) Reference lists that must not fall behind the code


def test_every_cli_command_and_option_is_documented() -> None:
    page = (DOCS / CLI_PAGE).read_text(encoding="utf-8")
    headings = set(re.findall(r"^## (\S+)\s*$", page, re.MULTILINE))
    missing = []
    assert isinstance(cli_main, click.Group)
    commands: list[tuple[str, click.Command]] = [("", cli_main), *cli_main.commands.items()]
    for name, command in commands:
        if name and name not in headings:
            missing.append(f"## {name}")
        for param in command.params:
            for option in getattr(param, "opts", ()):
                if option.startswith("-") and f"`{option}" not in page and f" {option}" not in page:
                    missing.append(f"{name or 'promptdock'} {option}")
    assert missing == []


def test_every_frontmatter_parameter_is_documented() -> None:
    page = (DOCS / "prompt-format.md").read_text(encoding="utf-8")
    names = [*KNOWN_PARAMS, *CONFIG_ALIASES, *CONFIG_ALIASES.values()]
    assert sorted(name for name in names if f"`{name}`" not in page) == []
