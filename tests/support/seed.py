"""The seed's examples, verbatim, shared by the tests that check promptdock runs them unchanged."""

from __future__ import annotations

__all__ = ["SEED_CONFIG"]

SEED_CONFIG = """\
model_list:
  - model_name: my-dotprompt-model
    litellm_params:
      model: dotprompt/gpt-4
      prompt_id: "hello"
      api_key: os.environ/OPENAI_API_KEY

litellm_settings:
  global_prompt_directory: "./prompts"
  global_bitbucket_config:
    workspace: "your-workspace"
    repository: "your-repo"
    access_token: "your-access-token"
    branch: "main"

general_settings:
  master_key: sk-1234
"""
"""LiteLLM's proxy ``config.yaml`` (placeholder Bitbucket credentials included)."""
