"""The ``.prompt`` parser: frontmatter splitting, YAML safety, key lifting (reference §C.1-C.4)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from promptdock.errors import PromptSyntaxError
from promptdock.models import PromptFile, Provenance
from promptdock.prompt_file import (
    CONFIG_ALIASES,
    KNOWN_PARAMS,
    FrontmatterSplit,
    parse_prompt,
    split_frontmatter,
)

LITELLM_SEED = """\
---
model: gpt-4
temperature: 0.7
max_tokens: 150
input:
  schema:
    user_message: string
    system_context?: string
---

{% if system_context %}System: {{system_context}}

{% endif %}User: {{user_message}}
"""


def syntax_error(text: str | bytes, **kwargs: Any) -> PromptSyntaxError:
    with pytest.raises(PromptSyntaxError) as info:
        parse_prompt(text, **kwargs)
    return info.value


def fm(yaml: str, body: str = "Hi") -> str:
    return f"---\n{yaml}---\n{body}"


# --- splitting ---------------------------------------------------------------------------------


def test_no_opener_keeps_the_whole_body_byte_for_byte() -> None:
    text = "\n  Hello, {{name}}!\n\n"
    assert split_frontmatter(text) == FrontmatterSplit(None, text, 0, 1)


def test_basic_split() -> None:
    assert split_frontmatter("---\nmodel: x\n---\nHi") == FrontmatterSplit("model: x\n", "Hi", 2, 4)


def test_bom_is_stripped() -> None:
    assert split_frontmatter("\ufeff---\nmodel: x\n---\nHi").yaml_text == "model: x\n"
    assert split_frontmatter("\ufeffHi").body == "Hi"


@pytest.mark.parametrize("newline", ["\r\n", "\r"])
def test_crlf_and_cr_are_normalised_first(newline: str) -> None:
    text = newline.join(["---", "model: x", "---", "Line 1", "Line 2", ""])
    assert split_frontmatter(text) == FrontmatterSplit("model: x\n", "Line 1\nLine 2", 2, 4)
    assert split_frontmatter(f"a{newline}b").body == "a\nb"


def test_blank_and_comment_lines_may_precede_the_opener() -> None:
    text = "# licence: MIT\n\n   \n# more\n---\nmodel: x\n---\nHi"
    assert split_frontmatter(text) == FrontmatterSplit("model: x\n", "Hi", 6, 8)


def test_trailing_spaces_on_opener_and_closer_are_fine() -> None:
    assert split_frontmatter("--- \t\nmodel: x\n---  \nHi") == FrontmatterSplit(
        "model: x\n", "Hi", 2, 4
    )


def test_indented_opener_is_not_an_opener() -> None:
    text = "  ---\nmodel: x\n---\nHi"
    assert split_frontmatter(text) == FrontmatterSplit(None, text, 0, 1)


def test_text_before_the_opener_means_no_frontmatter() -> None:
    text = "Intro\n---\nmodel: x\n---\n"
    assert split_frontmatter(text).yaml_text is None


def test_indented_dashes_in_a_block_scalar_do_not_close() -> None:
    text = "---\nnote: |\n  before\n  ---\n  after\n---\nBody"
    split = split_frontmatter(text)
    assert split.yaml_text == "note: |\n  before\n  ---\n  after\n"
    assert split.body == "Body"
    assert parse_prompt(text).metadata["note"] == "before\n---\nafter\n"


def test_dashes_mid_line_or_longer_do_not_close() -> None:
    text = "---\ntitle: a --- b\n--- x\n----\n---\nBody"
    assert split_frontmatter(text).yaml_text == "title: a --- b\n--- x\n----\n"


def test_closer_at_eof_without_final_newline() -> None:
    assert split_frontmatter("---\nmodel: x\n---") == FrontmatterSplit("model: x\n", "", 2, 4)


def test_empty_frontmatter() -> None:
    assert split_frontmatter("---\n---\nBody") == FrontmatterSplit("", "Body", 2, 3)
    prompt = parse_prompt("---\n---\nBody")
    assert prompt.frontmatter == {}
    assert prompt.body == "Body"


def test_body_trim_rule_with_frontmatter() -> None:
    # Leading blank lines and trailing whitespace go; indentation and inner blank lines stay.
    text = "---\nmodel: x\n---\n\n  \n    indented\n\n  last  \n\n"
    split = split_frontmatter(text)
    assert split.body == "    indented\n\n  last"
    assert split.body_line == 6


def test_whitespace_only_body_is_empty() -> None:
    assert split_frontmatter("---\nmodel: x\n---\n \n\n  ").body == ""


def test_unterminated_frontmatter_names_the_opener_line() -> None:
    with pytest.raises(PromptSyntaxError) as info:
        split_frontmatter("# header\n---\nmodel: x\nBody\n")
    assert info.value.line == 2
    assert str(info.value) == (
        "unterminated frontmatter: the '---' on line 2 has no closing '---' line; add a line "
        "'---' after the frontmatter (if the '---' belongs to the body, start the file with an "
        "empty frontmatter: two '---' lines)"
    )


@pytest.mark.parametrize("text", ["---", "---\n", "---\nmodel: x"])
def test_opener_without_any_closer(text: str) -> None:
    err = syntax_error(text, path="p/a.prompt")
    assert (err.path, err.line, err.column) == ("p/a.prompt", 1, None)
    assert str(err).startswith("p/a.prompt:1: unterminated frontmatter: the '---' on line 1 ")


# --- decoding and naming -----------------------------------------------------------------------


def test_bytes_are_decoded_as_utf8_and_bom_dropped() -> None:
    prompt = parse_prompt("\ufeff---\nname: café\n---\nHé".encode())
    assert (prompt.name, prompt.body) == ("café", "Hé")


def test_invalid_utf8_names_path_line_and_byte_offset() -> None:
    err = syntax_error(b"---\nmodel: x\n---\nbad \xff here", path="p/a.prompt")
    assert (err.path, err.line) == ("p/a.prompt", 4)
    assert str(err) == (
        "p/a.prompt:4: the file is not valid UTF-8 (bad byte 0xff at byte offset 21); "
        "save it as UTF-8"
    )


def test_id_defaults_to_string_and_errors_fall_back_to_the_name() -> None:
    assert parse_prompt("Hi").id == "<string>"
    assert syntax_error("---\n", name="support/triage").path == "support/triage"
    assert syntax_error("---\n").path == "<string>"


def test_arguments_are_passed_through() -> None:
    prov = Provenance(source="s", kind="filesystem", prompt_id="a", version=2)

    def resolver(name: str) -> tuple[str, str, Any]:
        return "", name, lambda: True

    prompt = parse_prompt(
        "---\nversion: '7'\n---\nHi",
        name="a",
        path="a.v2.prompt",
        version=2,
        provenance=prov,
        include_resolver=resolver,
    )
    assert (prompt.id, prompt.path, prompt.version, prompt.location) == (
        "a",
        "a.v2.prompt",
        2,
        "a.v2.prompt",
    )
    assert prompt.provenance is prov
    assert prompt.include_resolver is resolver
    # The frontmatter 'version' is metadata; the file version comes from the file name.
    assert prompt.metadata == {"version": "7"}
    assert prompt.warnings == ()


def test_sentinel_characters_are_stripped_from_body_and_model() -> None:
    prompt = parse_prompt('---\nmodel: "g\ue000pt"\n---\na\ue000b\ue001c\ue002d\ue003e\ue004')
    assert prompt.body == "abcde\ue004"
    assert prompt.model == "gpt"


# --- YAML errors -------------------------------------------------------------------------------


def test_yaml_syntax_error_has_the_file_line_and_column() -> None:
    err = syntax_error("# c\n---\nmodel: x\nbad\n---\n", path="a.prompt")
    assert (err.line, err.column) == (4, 1)
    assert str(err) == (
        "a.prompt:4:1: invalid YAML in frontmatter: could not find expected ':' (while scanning "
        "a simple key); fix the YAML between the '---' lines (values containing ': ' or starting "
        "with a special character need quotes)"
    )


def test_problem_at_the_end_points_where_the_open_construct_starts() -> None:
    err = syntax_error(fm("a: 1\nb: [x, y\n"), path="a.prompt")
    assert (err.line, err.column) == (3, 4)
    assert str(err).startswith(
        "a.prompt:3:4: invalid YAML in frontmatter: expected ',' or ']', but got the end of the "
        "frontmatter (while parsing a flow sequence); "
    )


def test_problem_mid_text_points_at_the_problem() -> None:
    err = syntax_error(fm("a: b: c\nd: 1\n"), path="a.prompt")
    assert (err.line, err.column) == (2, 5)
    assert "invalid YAML in frontmatter: mapping values are not allowed here;" in str(err)


@pytest.mark.parametrize(
    ("yaml", "line", "column", "key"),
    [("a: 1\na: 2\n", 3, 1, "a"), ("input:\n  schema: {}\n  schema: {}\n", 4, 3, "schema")],
)
def test_duplicate_keys_are_errors(yaml: str, line: int, column: int, key: str) -> None:
    err = syntax_error(fm(yaml), path="a.prompt")
    assert (err.line, err.column) == (line, column)
    assert str(err) == (
        f"a.prompt:{line}:{column}: duplicate key '{key}' (first on line {line - 1}); "
        "remove one of them"
    )


def test_anchors_and_aliases_are_rejected() -> None:
    err = syntax_error(fm("base: &b {t: 1}\nother: *b\n"), path="a.prompt")
    assert (err.line, err.column) == (2, 7)
    assert str(err) == (
        "a.prompt:2:7: anchors and aliases ('&b', '*b') are not allowed in frontmatter; write "
        "the value out in full"
    )


def test_yaml_bomb_is_rejected_before_expansion() -> None:
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    err = syntax_error(fm("\n".join(levels) + "\n"))
    assert "anchors and aliases ('&a0', '*a0') are not allowed" in str(err)


def test_anchored_key_is_rejected() -> None:
    assert "anchors and aliases ('&k')" in str(syntax_error(fm("&k a: 1\n")))


def test_merge_keys_are_rejected() -> None:
    err = syntax_error(fm("<<: {a: 1}\n"), path="a.prompt")
    assert str(err) == (
        "a.prompt:2:1: merge keys ('<<') are not allowed in frontmatter; write the keys out in full"
    )


def test_non_string_keys_are_rejected_with_a_fix() -> None:
    err = syntax_error(fm("logit_bias:\n  50256: -100\n"), path="a.prompt")
    assert (err.line, err.column) == (3, 3)
    assert str(err) == "a.prompt:3:3: mapping keys must be strings; quote the key: '50256': ..."
    assert "not lists or mappings" in str(syntax_error(fm("? [a, b]\n: c\n")))


def test_unsupported_tags_are_rejected_but_standard_ones_work() -> None:
    err = syntax_error(fm("data: !!binary aGk=\n"), path="a.prompt")
    assert str(err) == (
        "a.prompt:2:7: the YAML tag 'tag:yaml.org,2002:binary' is not allowed in frontmatter; use "
        "plain strings, numbers, booleans, lists and mappings"
    )
    assert "'!custom'" in str(syntax_error(fm("x: !custom v\n")))
    prompt = parse_prompt(fm("code: !!str 0012\ncount: !!int '5'\n"))
    assert prompt.metadata == {"code": "0012", "count": 5}


def test_bad_tagged_scalar_is_an_error() -> None:
    err = syntax_error(fm("n: !!int zz\n"), path="a.prompt")
    assert str(err) == "a.prompt:2:4: cannot read 'zz' as int; quote it or fix the value"


def test_control_characters_point_at_the_character() -> None:
    err = syntax_error(fm("a: 1\nb: x\x01y\n"), path="a.prompt")
    assert (err.line, err.column) == (3, 5)
    assert str(err) == (
        "a.prompt:3:5: invalid YAML in frontmatter: special characters are not allowed "
        "(character U+0001); remove the character"
    )


def test_other_yaml_versions_are_rejected() -> None:
    err = syntax_error(fm("%YAML 1.1\n--- {a: yes}\n"), path="a.prompt")
    assert str(err) == "a.prompt:2:1: frontmatter must be YAML 1.2; remove the '%YAML' directive"


def test_excessive_nesting_is_an_error() -> None:
    err = syntax_error(fm("a: " + "[" * 200 + "]" * 200 + "\n"), path="deep.prompt")
    assert str(err) == (
        "deep.prompt:2:67: the frontmatter nests lists and mappings more than 64 levels deep; "
        "flatten it"
    )


@pytest.mark.parametrize(
    ("yaml", "kind"), [("- a\n- b\n", "a list"), ("just text\n", "a single value")]
)
def test_frontmatter_must_be_a_mapping(yaml: str, kind: str) -> None:
    err = syntax_error(fm(yaml), path="a.prompt")
    assert str(err) == (
        f"a.prompt:2:1: frontmatter must be a mapping of keys (such as 'model: gpt-4o'), not {kind}"
    )


@pytest.mark.parametrize("yaml", ["", "# only a comment\n", "null\n", "~\n"])
def test_null_or_empty_frontmatter_is_an_empty_mapping(yaml: str) -> None:
    prompt = parse_prompt(fm(yaml))
    assert (prompt.frontmatter, prompt.params, prompt.metadata) == ({}, {}, {})


def test_yaml_12_semantics_and_plain_values() -> None:
    prompt = parse_prompt(
        fm("a: yes\nb: 012\nc: 0o17\nd: 2024-05-01\ne: [1, 2.5, true, null]\nf: {g: h}\n")
    )
    assert prompt.frontmatter == {
        "a": "yes",
        "b": 12,
        "c": 15,
        "d": "2024-05-01",
        "e": [1, 2.5, True, None],
        "f": {"g": "h"},
    }
    assert type(prompt.frontmatter) is dict
    assert type(prompt.frontmatter["e"]) is list
    assert type(prompt.frontmatter["f"]) is dict


# --- keys --------------------------------------------------------------------------------------


def test_litellm_seed_prompt() -> None:
    prompt = parse_prompt(LITELLM_SEED, name="chat_assistant")
    assert isinstance(prompt, PromptFile)
    assert prompt.model == "gpt-4"
    assert prompt.params == {"temperature": 0.7, "max_tokens": 150}
    assert prompt.input_schema == {
        "type": "object",
        "properties": {
            "user_message": {"type": "string"},
            "system_context": {"type": ["string", "null"]},
        },
        "required": ["user_message"],
        "additionalProperties": False,
    }
    assert prompt.body == (
        "{% if system_context %}System: {{system_context}}\n\n{% endif %}User: {{user_message}}"
    )
    assert prompt.body_line == 11
    assert prompt.warnings == ()
    assert prompt.metadata == {}
    assert prompt.frontmatter["input"] == {
        "schema": {"user_message": "string", "system_context?": "string"}
    }


def test_model_template_is_kept_raw() -> None:
    assert parse_prompt(fm('model: "{{preferred_model}}"\n')).model == "{{preferred_model}}"


def test_non_string_model_is_an_error() -> None:
    err = syntax_error(fm("temperature: 1\nmodel: 4\n"), path="a.prompt")
    assert err.line == 3
    assert str(err) == (
        "a.prompt:3: 'model' must be a string such as 'gpt-4o' or '{{preferred_model}}', got "
        "int 4; quote it"
    )


def test_known_params_cover_the_openai_request_keys() -> None:
    required = {
        "temperature", "top_p", "max_tokens", "max_completion_tokens", "n", "stop",
        "presence_penalty", "frequency_penalty", "logit_bias", "logprobs", "top_logprobs", "seed",
        "response_format", "tools", "tool_choice", "parallel_tool_calls", "user",
        "reasoning_effort", "service_tier",
    }  # fmt: skip
    assert required <= KNOWN_PARAMS
    assert not {"model", "messages", "stream", "metadata", "name"} & KNOWN_PARAMS


def test_every_top_level_known_param_goes_to_params() -> None:
    yaml = "".join(f"{key}: 1\n" for key in sorted(KNOWN_PARAMS))
    prompt = parse_prompt(fm(yaml))
    assert prompt.params == dict.fromkeys(sorted(KNOWN_PARAMS), 1)
    assert prompt.warnings == ()
    assert prompt.metadata == {}


def test_config_goes_to_params_with_gemini_names_mapped() -> None:
    yaml = (
        "config:\n  temperature: 0.2\n  maxOutputTokens: 100\n  topP: 0.9\n  stopSequences: [END]\n"
        "  frequencyPenalty: 0.1\n  presencePenalty: 0.3\n  candidateCount: 2\n  custom_x: 1\n"
    )
    prompt = parse_prompt(fm(yaml))
    assert prompt.params == {
        "temperature": 0.2,
        "max_tokens": 100,
        "top_p": 0.9,
        "stop": ["END"],
        "frequency_penalty": 0.1,
        "presence_penalty": 0.3,
        "n": 2,
        "custom_x": 1,
    }
    assert prompt.warnings == ()
    assert set(CONFIG_ALIASES.values()) <= KNOWN_PARAMS


def test_config_top_k_is_dropped_with_a_warning() -> None:
    prompt = parse_prompt(fm("config:\n  topK: 40\n  temperature: 1\n"))
    assert prompt.params == {"temperature": 1}
    assert prompt.warnings == ("config.topK (line 3) has no OpenAI equivalent and is dropped",)


def test_config_wins_over_a_top_level_param_with_a_warning() -> None:
    prompt = parse_prompt(fm("config:\n  maxOutputTokens: 9\nmax_tokens: 5\n"))
    assert prompt.params == {"max_tokens": 9}
    assert prompt.warnings == (
        "'max_tokens' is set more than once; the value from config.maxOutputTokens (line 3) is "
        "used",
    )


@pytest.mark.parametrize("key", ["config", "input", "metadata", "output"])
def test_sections_must_be_mappings(key: str) -> None:
    err = syntax_error(fm(f"model: x\n{key}: [1]\n"), path="a.prompt")
    assert str(err) == f"a.prompt:3: '{key}' must be a mapping, got list [1]"


def test_empty_sections_are_fine() -> None:
    prompt = parse_prompt(fm("config:\ninput:\noutput:\nmetadata:\n"))
    assert (prompt.params, prompt.input_schema, prompt.output_schema) == ({}, None, None)


def test_input_schema_default_and_unknown_subkey() -> None:
    yaml = "input:\n  schema:\n    name: string\n  default:\n    name: World\n  extra: 1\n"
    prompt = parse_prompt(fm(yaml))
    assert prompt.input_schema == {
        "type": "object",
        "properties": {"name": {"type": "string"}},
        "required": ["name"],
        "additionalProperties": False,
    }
    assert prompt.input_defaults == {"name": "World"}
    assert prompt.warnings == (
        "unknown key 'input.extra' (line 7) is ignored; 'input' takes default and schema",
    )


def test_input_default_must_be_a_mapping() -> None:
    err = syntax_error(fm("input:\n  default: World\n"), path="a.prompt")
    assert str(err) == "a.prompt:3: 'input.default' must be a mapping, got str 'World'"


def test_schema_errors_name_the_field_path_and_the_schema_line() -> None:
    yaml = "model: x\ninput:\n  schema:\n    user:\n      tags(list): string\n"
    err = syntax_error(fm(yaml), path="a.prompt")
    assert (err.path, err.line) == ("a.prompt", 4)
    assert str(err) == (
        "a.prompt:4: input.schema.user.tags: parenthetical type must be 'object', 'array' or "
        "'enum', got 'list'"
    )
    err = syntax_error(fm("output:\n  schema: Report\n"))
    assert str(err).startswith("<string>:3: output.schema: unknown type 'Report'")


def test_output_format_json_without_schema_asks_for_json_mode() -> None:
    prompt = parse_prompt(fm("output:\n  format: json\n"))
    assert prompt.output_format == "json"
    assert prompt.params == {"response_format": {"type": "json_object"}}


def test_output_format_json_with_object_schema_asks_for_that_schema() -> None:
    prompt = parse_prompt(
        fm("output:\n  format: json\n  schema:\n    answer: string\n"), name="support/triage v2"
    )
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string"}},
        "required": ["answer"],
        "additionalProperties": False,
    }
    assert prompt.output_schema == schema
    assert prompt.params == {
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "support_triage_v2", "schema": schema},
        }
    }


def test_json_schema_name_falls_back_for_unusable_ids() -> None:
    prompt = parse_prompt(fm("output:\n  format: json\n  schema: {a: string}\n"))
    assert prompt.params["response_format"]["json_schema"]["name"] == "string"
    prompt = parse_prompt(fm("output:\n  format: json\n  schema: {a: string}\n"), name="//")
    assert prompt.params["response_format"]["json_schema"]["name"] == "output"
    prompt = parse_prompt(fm("output:\n  format: json\n  schema: {a: string}\n"), name="x" * 90)
    assert prompt.params["response_format"]["json_schema"]["name"] == "x" * 64


def test_output_json_with_non_object_schema_uses_json_mode_and_warns() -> None:
    prompt = parse_prompt(fm("output:\n  format: json\n  schema: string\n"))
    assert prompt.output_schema == {"type": "string"}
    assert prompt.params == {"response_format": {"type": "json_object"}}
    assert prompt.warnings == (
        "output.schema (line 4) is not an object, which OpenAI structured outputs require; only "
        "JSON mode is requested",
    )


def test_explicit_response_format_wins_over_output_format() -> None:
    yaml = "response_format: {type: text}\noutput:\n  format: json\n  schema: {a: string}\n"
    assert parse_prompt(fm(yaml)).params == {"response_format": {"type": "text"}}
    yaml = "config:\n  response_format: {type: text}\noutput:\n  format: json\n"
    assert parse_prompt(fm(yaml)).params == {"response_format": {"type": "text"}}


def test_output_format_text_sets_no_param_and_schema_still_parses() -> None:
    prompt = parse_prompt(fm("output:\n  format: text\n  schema: {a?: integer}\n  mode: x\n"))
    assert prompt.output_format == "text"
    assert prompt.params == {}
    assert prompt.output_schema == {
        "type": "object",
        "properties": {"a": {"type": ["integer", "null"]}},
        "additionalProperties": False,
    }
    assert prompt.warnings == (
        "unknown key 'output.mode' (line 5) is ignored; 'output' takes format and schema",
    )


def test_output_format_must_be_a_string() -> None:
    err = syntax_error(fm("output:\n  format: [json]\n"), path="a.prompt")
    assert str(err) == (
        "a.prompt:3: 'output.format' must be a string such as 'json' or 'text', got list ['json']"
    )


def test_name_and_description() -> None:
    prompt = parse_prompt(fm("name: triage\ndescription: Sorts tickets\n"))
    assert (prompt.name, prompt.description) == ("triage", "Sorts tickets")
    assert prompt.metadata == {}


@pytest.mark.parametrize(
    ("key", "example"),
    [("name", "'support-triage'"), ("description", "'Sorts support tickets'")],
)
def test_name_and_description_must_be_strings(key: str, example: str) -> None:
    err = syntax_error(fm(f"{key}: 12\n"), path="a.prompt")
    assert (
        str(err) == f"a.prompt:2: '{key}' must be a string such as {example}, got int 12; quote it"
    )


def test_unknown_keys_are_metadata_with_a_warning_and_never_params() -> None:
    prompt = parse_prompt(fm("model: x\n\nfoo: 1\ntemperature: 0\nbar: [a]\n"))
    assert prompt.metadata == {"foo": 1, "bar": ["a"]}
    assert prompt.params == {"temperature": 0}
    assert prompt.warnings == (
        "unknown frontmatter key 'foo' (line 4) is kept as metadata and not sent upstream",
        "unknown frontmatter key 'bar' (line 6) is kept as metadata and not sent upstream",
    )


def test_dotted_keys_version_and_variant_are_metadata_without_warning() -> None:
    prompt = parse_prompt(fm("ext1.foo: bar\nversion: 3\nvariant: short\n"))
    assert prompt.metadata == {"ext1.foo": "bar", "version": 3, "variant": "short"}
    assert prompt.warnings == ()
    assert prompt.version is None


def test_metadata_mapping_is_merged_and_wins_over_top_level_keys() -> None:
    prompt = parse_prompt(fm("metadata:\n  owner: team-a\n  foo: 2\nfoo: 1\n"))
    assert prompt.metadata == {"foo": 2, "owner": "team-a"}


def test_frontmatter_is_the_whole_mapping() -> None:
    yaml = "model: x\nconfig:\n  topK: 1\nfoo: {a: [1]}\n"
    assert parse_prompt(fm(yaml)).frontmatter == {
        "model": "x",
        "config": {"topK": 1},
        "foo": {"a": [1]},
    }


def test_tool_names_are_sent_as_written_with_a_warning() -> None:
    prompt = parse_prompt(fm("tools: [lookup]\n"))
    assert prompt.params == {"tools": ["lookup"]}
    assert prompt.warnings == (
        "'tools' (line 2) lists tool names; they are sent upstream as written, but OpenAI "
        "expects tool objects ({'type': 'function', ...})",
    )


def test_no_frontmatter_gives_an_empty_prompt_around_the_body() -> None:
    prompt = parse_prompt("User: {{q}}\n", name="plain")
    assert (prompt.body, prompt.model, prompt.params, prompt.frontmatter) == (
        "User: {{q}}\n",
        None,
        {},
        {},
    )
    assert prompt.body_line == 1


# --- robustness --------------------------------------------------------------------------------


def test_parsing_in_parallel_threads_gives_identical_results() -> None:
    barrier = threading.Barrier(4)

    def work(_: int) -> list[Any]:
        barrier.wait()
        return [parse_prompt(LITELLM_SEED).input_schema for _ in range(10)]

    with ThreadPoolExecutor(4) as pool:
        results = [schema for batch in pool.map(work, range(4)) for schema in batch]
    assert all(r == results[0] for r in results)
    assert results[0] is not None


_YAMLISH = st.text(
    alphabet=st.sampled_from(list("abkmnt_019 :-?,()*[]{}&!|>'\"%@#.\n\t\\\ue000\x01é")),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.text(max_size=80),
        st.binary(max_size=40),
        st.builds(lambda y, b: f"---\n{y}\n---\n{b}", _YAMLISH, st.text(max_size=10)),
        st.builds(lambda y: f"---\ninput:\n  schema:\n    {y}\n---\n", _YAMLISH),
    )
)
def test_any_text_parses_or_raises_prompt_syntax_error(text: str | bytes) -> None:
    outcome: PromptFile | PromptSyntaxError
    try:
        outcome = parse_prompt(text)
    except PromptSyntaxError as exc:
        outcome = exc
    # Anything else (KeyError, ruamel's own errors, RecursionError...) fails the test.
    assert isinstance(outcome, PromptFile) or str(outcome)


# --- limits ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "x" * 2_097_153,
            "big.prompt: the file is 2097153 characters long, more than the limit of 2097152; "
            "a prompt should not be this large: pass long content as a variable, or split the "
            "file with {% include %}",
        ),
        (
            b"x" * 2_097_153,
            "big.prompt: the file is 2097153 bytes long, more than the limit of 2097152; a "
            "prompt should not be this large: pass long content as a variable, or split the file "
            "with {% include %}",
        ),
    ],
)
def test_a_file_over_2_mib_is_refused_before_parsing(text: str | bytes, message: str) -> None:
    err = syntax_error(text, path="big.prompt")
    assert str(err) == message
    assert err.path == "big.prompt"


def test_a_file_of_exactly_2_mib_is_read() -> None:
    assert len(parse_prompt("x" * 2_097_152).body) == 2_097_152


def test_a_frontmatter_over_32_kib_is_refused_naming_its_line() -> None:
    err = syntax_error(fm("a: '" + "x" * 33_000 + "'\n"), path="big.prompt")
    assert str(err) == (
        "big.prompt:1: the frontmatter is 33006 characters long, more than the limit of 32768; "
        "move large content out of it (a long schema or text belongs in an included file or a "
        "variable)"
    )
    assert err.line == 1
