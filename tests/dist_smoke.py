"""Smoke test run by ``nox -s dist`` against installed wheels, outside the source tree.

``python dist_smoke.py core-only``: the core wheel alone imports, parses, renders and names the
plugin to install. ``python dist_smoke.py with-plugins``: the filesystem plugin is found through
its entry point and a completion runs offline.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import promptdock

PROMPT = "---\nmodel: gpt-4\n---\nSystem: Be brief.\nUser: {{ question }}\n"


def core_only() -> None:
    assert "site-packages" in promptdock.__file__, promptdock.__file__
    rendered = promptdock.parse_prompt(PROMPT, name="q").render({"question": "Why?"})
    assert rendered.messages[1] == {"role": "user", "content": "Why?"}, rendered.messages
    names = {record.name for record in promptdock.PromptDock().plugin_host.plugins()}
    assert names == {"jinja2", "mock", "openai", "openai-async"}, names
    dock = promptdock.PromptDock(prompt_directory=".")
    try:
        dock.get_prompt("q")
    except promptdock.ConfigError as exc:
        message = str(exc)
    else:
        raise AssertionError("a filesystem source without its plugin must fail")
    assert "pip install promptdock-filesystem" in message, message


def with_plugins() -> None:
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "q.prompt").write_text(PROMPT)
        dock = promptdock.PromptDock(prompt_directory=folder)
        reply = dock.completion(
            model="dotprompt/mock/echo", prompt_id="q", prompt_variables={"question": "Why?"}
        )
        assert isinstance(reply, promptdock.ModelResponse)
        assert "user: Why?" in reply.choices[0].message.content, reply
        records = {r.name: r for r in dock.plugin_host.plugins()}
        assert records["filesystem"].distribution == "promptdock-filesystem", records
        assert records["bitbucket"].distribution == "promptdock-bitbucket", records
        assert dock.plugin_host.resolve_kind("bitbucket").name == "bitbucket"


if __name__ == "__main__":
    {"core-only": core_only, "with-plugins": with_plugins}[sys.argv[1]]()
    print(f"dist smoke test {sys.argv[1]}: ok")
