"""The LiteLLM quick start, with ``litellm`` replaced by ``promptdock``, running offline.

Run from the repository root: ``python examples/quickstart.py``. The ``mock/echo`` model
answers with the messages it received, so you can see exactly what the prompt rendered to.
Drop ``mock/echo`` (use ``model="dotprompt/gpt-4"``) and set ``OPENAI_API_KEY`` to call OpenAI.
"""

from __future__ import annotations

from pathlib import Path

import promptdock

promptdock.global_prompt_directory = str(Path(__file__).parent / "prompts")

print("Prompts in", promptdock.global_prompt_directory)
for info in promptdock.default_dock().list_prompts():
    versions = f" (versions {', '.join(map(str, info.versions))})" if info.versions else ""
    print(f"  {info.id}{versions}  {info.description or ''}")

response = promptdock.completion(
    model="dotprompt/mock/echo",
    prompt_id="hello",
    prompt_variables={"user_message": "What is the capital of France?"},
)
assert isinstance(response, promptdock.ModelResponse)
print("\nhello →", response.choices[0].message.content.replace("\n", "\n        "))
print("prompt:", response.prompt)

triage = promptdock.completion(
    model="dotprompt/mock/echo",
    prompt_id="support/triage",
    prompt_variables={"ticket": "My order #123 never arrived.", "history": ["Any update?"]},
)
assert isinstance(triage, promptdock.ModelResponse)
print("\nsupport/triage →", triage.choices[0].message.content.replace("\n", "\n        "))

stream = promptdock.completion(
    model="dotprompt/mock/echo",
    prompt_id="summarize",
    prompt_version=2,
    prompt_variables={"text": "promptdock keeps prompts in Git.", "words": 12},
    stream=True,
)
print("\nsummarize v2 (streamed) →", end=" ")
for chunk in stream:
    print(chunk.choices[0].delta.get("content") or "", end="", flush=True)
print()
