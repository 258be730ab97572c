"""The prompt files every benchmark uses, for promptdock and LiteLLM alike.

Three shapes cover what per-call cost depends on: the seed's two-line prompt, a ~2 KB prompt
with a loop, and a prompt with 24 variables (each one validated against the input schema).
The files are written to a scratch folder at run time, so both tools read the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["PROMPTS", "BenchPrompt", "generated_prompt", "write_prompts"]


@dataclass(frozen=True)
class BenchPrompt:
    """One benchmark prompt: its id, file text, the variables of a call and a label."""

    prompt_id: str
    text: str
    variables: dict[str, Any] = field(hash=False)
    label: str

    @property
    def body(self) -> str:
        """The template after the frontmatter, as a hand-written app would keep it."""
        return self.text.split("---\n", 2)[2]


HELLO = BenchPrompt(
    prompt_id="hello",
    label="two-line prompt (the seed's hello)",
    text="""---
model: gpt-4
temperature: 0.7
max_tokens: 150
input:
  schema:
    user_message: string
---

System: You are a helpful assistant.

User: {{user_message}}
""",
    variables={"user_message": "What is the capital of France?"},
)

_GUIDELINES = "\n".join(
    f"- Rule {i}: answer in plain language, cite the policy section you rely on, keep a calm "
    f"tone, and never promise what the product cannot do."
    for i in range(1, 16)
)

LONG = BenchPrompt(
    prompt_id="long",
    label="2 KB prompt with a loop",
    text=f"""---
model: gpt-4
temperature: 0.2
max_tokens: 400
input:
  schema:
    customer: string
    product: string
    history(array): string
    question: string
---

System: You are the support assistant for {{{{product}}}}. Follow every guideline below.

{_GUIDELINES}

Earlier messages from {{{{customer}}}}:
{{% for line in history %}}- {{{{line}}}}
{{% endfor %}}
User: {{{{question}}}}
""",
    variables={
        "customer": "Ada",
        "product": "Widget Pro",
        "history": ["It stopped syncing.", "I restarted it.", "Still broken."],
        "question": "What should I try next?",
    },
)

_FIELDS = [f"field_{i:02d}" for i in range(24)]

MANY = BenchPrompt(
    prompt_id="many",
    label="24 variables",
    text="---\nmodel: gpt-4\ninput:\n  schema:\n"
    + "".join(f"    {name}: string\n" for name in _FIELDS)
    + "---\n\nSystem: Fill in the form from these values.\n\nUser: "
    + ", ".join(f"{name}={{{{{name}}}}}" for name in _FIELDS)
    + "\n",
    variables={name: f"value {i}" for i, name in enumerate(_FIELDS)},
)

PROMPTS = (HELLO, LONG, MANY)
"""Every SDK benchmark prompt, in report order."""


def write_prompts(folder: Path, prompts: tuple[BenchPrompt, ...] = PROMPTS) -> Path:
    """Write ``prompts`` under ``folder`` (subfolders as their ids say); returns ``folder``."""
    for prompt in prompts:
        path = folder / f"{prompt.prompt_id}.prompt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(prompt.text, encoding="utf-8")
    return folder


def generated_prompt(index: int) -> str:
    """The text of the ``index``-th generated prompt for the scale benchmark (all distinct)."""
    return HELLO.text.replace("helpful assistant", f"helpful assistant (number {index})")
