"""The benchmark harness (``python -m bench``) runs end to end on tiny settings, without LiteLLM.

No timing is asserted: these tests prove that every section runs, that the outputs are
complete and honest about what was not measured, and that the helpers the figures rest on
compute what they claim.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from typing import Any

import pytest

import promptdock
from bench import harness, imports, litellm_env, report, scale, stats
from bench.litellm_env import LiteLLMSetup
from bench.probe import floor_call
from bench.prompts import PROMPTS, write_prompts
from bench.settings import PRESETS
from bench.workers import Interpreter, ProbeError, Worker

NOT_INSTALLED = "not installed for this test"


def _no_nan(text: str) -> Any:
    def refuse(constant: str) -> None:
        raise AssertionError(f"results.json holds {constant}, which is not JSON")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    """One tiny run of every section, and the folder its outputs were written to."""
    root = tmp_path_factory.mktemp("bench")
    work, out = root / "work", root / "out"
    work.mkdir()
    setup = LiteLLMSetup(None, error=NOT_INSTALLED)
    results = harness.run(PRESETS["tiny"], setup, work, preset="tiny", precompile=False)
    harness.write_outputs(results, out)
    return results, out


def test_every_section_runs_without_litellm(outputs: tuple[dict[str, Any], Path]) -> None:
    results, _ = outputs
    for section in harness.SECTIONS:
        assert "error" not in results[section], results[section]
    assert results["litellm"] == {
        "available": False,
        "error": NOT_INSTALLED,
        "note": None,
        "version": None,
    }
    hello = results["sdk"]["mock"]["hello"]
    assert set(hello["us"]) == {"floor", "promptdock"}
    assert hello["us"]["promptdock"]["n"] == PRESETS["tiny"].rounds * PRESETS["tiny"].sdk_calls
    assert set(results["proxy"]["targets"]) == {"upstream alone", "floor", "promptdock"}
    assert all(
        row["errors"] == 0
        for target in results["proxy"]["targets"].values()
        for row in target.values()
    )
    own_work = results["proxy"]["own_work_us"]
    assert own_work["promptdock_cpu_us"] > 0
    assert own_work["floor_cpu_us"] > 0
    assert results["imports"]["promptdock"]["answer"] == "Paris."
    assert results["bitbucket"]["warm"]["warm_http_requests"] == 0
    assert results["bitbucket"]["push"]["one file changed"]["sees_the_edit"] is True
    assert sorted(results["scale"]["sizes"], key=int) == ["10", "100"]


def test_outputs_are_complete_and_say_what_was_not_measured(
    outputs: tuple[dict[str, Any], Path],
) -> None:
    _, out = outputs
    saved = _no_nan((out / "results.json").read_text(encoding="utf-8"))
    verdicts = {row["target"]: row["met"] for row in saved["targets"]}
    assert (
        verdicts["proxy throughput at least 30x LiteLLM's at concurrency 16 (stretch: 45x)"] is None
    )
    assert verdicts["proxy holds concurrency 64: zero errors, p99 under 100 ms"] is None  # no 64
    assert verdicts["import at least 20x faster than import litellm"] is None
    own_work = "proxy's own work per request within ~200 µs of CPU (in-process, no sockets)"
    assert verdicts[own_work] in (True, False)  # measured without LiteLLM
    text = (out / "REPORT.md").read_text(encoding="utf-8")
    assert f"LiteLLM was not measured in this run:** {NOT_INSTALLED}" in text
    for heading in ("## Targets", "## 1. SDK", "## 2. Import", "## 4. Proxy", "## 5. Scale"):
        assert heading in text
    assert "| `hello` (two-line prompt" in text
    if importlib.util.find_spec("matplotlib") is None:
        assert "matplotlib is not installed, so there are no plots" in text
    else:
        for name in ("sdk_latency.png", "proxy_throughput.png", "scale.png"):
            assert (out / name).stat().st_size > 0
            assert f"]({name})" in text


def test_report_only_redraws_from_saved_results(
    outputs: tuple[dict[str, Any], Path], tmp_path: Path
) -> None:
    results, _ = outputs
    (tmp_path / "results.json").write_text(json.dumps(results), encoding="utf-8")
    assert harness.main(["--report-only", "--out", str(tmp_path)]) == 0
    assert "## 6. Bitbucket source" in (tmp_path / "REPORT.md").read_text(encoding="utf-8")


def test_the_floor_builds_the_messages_promptdock_builds(tmp_path: Path) -> None:
    dock = promptdock.PromptDock(prompt_directory=str(write_prompts(tmp_path)))
    for prompt in PROMPTS:
        floor = floor_call(prompt.body, prompt.variables)()
        assert floor == dock.render(prompt.prompt_id, prompt.variables).messages, prompt.prompt_id


def test_a_worker_reports_a_failed_request(tmp_path: Path) -> None:
    with Worker(Interpreter.promptdock(), tmp_path, tmp_path / "worker.log") as worker:
        with pytest.raises(ProbeError, match="promptdock worker: ValueError: unknown op 'nope'"):
            worker.request(30, op="nope")
        assert worker.request(30, op="rss")["rss_kib"] > 0


def test_without_uv_litellm_is_skipped_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(litellm_env, "_uv", lambda: None)
    setup = litellm_env.ensure_litellm(tmp_path / "venv")
    assert setup == LiteLLMSetup(None, "uv is not installed: cannot make LiteLLM's virtualenv")
    assert litellm_env.verify(setup) is setup


def test_import_time_is_read_from_the_top_level_line() -> None:
    output = (
        "import time: self [us] | cumulative | imported package\n"
        "import time:       120 |        300 |   promptdock.models\n"
        "import time:       500 |      12345 | promptdock\n"
        "import time:        50 |         50 | promptdock_filesystem\n"
    )
    assert imports.cumulative_import_us(output, "promptdock") == 12345
    assert math.isnan(imports.cumulative_import_us(output, "litellm"))


def test_quantiles_and_ratios() -> None:
    values = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert stats.quantile(values, 0.5) == 3.0
    assert stats.quantile(values, 0.95) == 5.0
    assert stats.quantile(values, 0.0) == 1.0
    assert math.isnan(stats.quantile([], 0.5))
    assert stats.summarize(values, scale=2.0)["median"] == 6.0
    assert math.isnan(stats.ratio(1.0, 0.0))


def test_growth_slope_tells_linear_from_flat() -> None:
    sizes = [10, 100, 1000, 10_000]
    assert scale.slope(sizes, [1.0, 10.0, 100.0, 1000.0]) == pytest.approx(1.0)
    assert scale.slope(sizes, [5.0, 5.0, 5.0, 5.0]) == pytest.approx(0.0)
    assert math.isnan(scale.slope([10], [1.0]))


def _sdk_results(promptdock_over_floor: float, litellm_over_promptdock: float) -> dict[str, Any]:
    ratios = {
        "promptdock/floor": promptdock_over_floor,
        "litellm/promptdock": litellm_over_promptdock,
    }
    return {"sdk": {"mock": {"hello": {"ratios": ratios}}}}


def test_targets_are_met_missed_or_not_measured() -> None:
    met = {row["target"]: row for row in report.targets(_sdk_results(2.5, 80.0))}
    overhead = met["SDK per-call overhead at most 3x the floor (median, mock_response)"]
    assert (overhead["met"], overhead["figure"]) == (True, "hello 2.50x")
    versus = met["SDK per call at least 50x lower than LiteLLM's (median, mock_response)"]
    assert (versus["met"], versus["figure"]) == (True, "hello 80x")
    missed = {row["target"]: row["met"] for row in report.targets(_sdk_results(3.5, 40.0))}
    assert missed["SDK per-call overhead at most 3x the floor (median, mock_response)"] is False
    assert missed["SDK per call at least 50x lower than LiteLLM's (median, mock_response)"] is False
    assert missed["proxy start-up under 1 s (spawn to /health/liveliness)"] is None


def _scale_results(slope_one: float, slope_cycling: float) -> dict[str, Any]:
    def size(median: float) -> dict[str, Any]:
        return {"warm_render_us": {"median": median}, "warm_render_cycling_us": {"median": median}}

    return {
        "scale": {
            "sizes": {"10": size(40.0), "10000": size(46.0)},
            "slopes": {"warm_render": slope_one, "warm_render_cycling": slope_cycling},
        }
    }


def test_warm_renders_are_flat_by_their_log_log_slope() -> None:
    name = "warm renders flat from 10 to 10,000 prompts"
    flat = {row["target"]: row for row in report.targets(_scale_results(0.02, -0.03))}
    assert flat[name]["met"] is True
    assert flat[name]["figure"].startswith("log-log slope 0.02 for one prompt, -0.03 cycling")
    growing = {row["target"]: row["met"] for row in report.targets(_scale_results(0.02, 0.3))}
    assert growing[name] is False
