"""The proxy under load, with a push in the middle: the short version of ``nox -s load``.

``bench/load_proxy.py`` runs the proxy, an upstream and the Bitbucket emulator on loopback and
checks every answer: it succeeded, its commit SHA is the one that was live, and its text is
that commit's. Here it runs a few hundred requests; the session runs 50,000.
"""

from __future__ import annotations

from bench import load_proxy as load
from tests.security.figures import count


def test_every_answer_under_load_comes_whole_from_the_live_commit() -> None:
    figures = load.run_load(requests=600, concurrency=16, deadline=120.0)
    assert figures["failures"] == 0, figures["failure_examples"]
    assert figures["mismatches"] == 0, figures["mismatch_examples"]
    assert figures["webhook_status"] == 200
    assert figures["served_by_commit"]["A"] > 0
    assert figures["served_by_commit"]["B"] > 0
    count("load: requests (short run)", figures["requests"])


def test_the_checks_catch_a_wrong_commit_or_a_torn_answer() -> None:
    run = load.Run(push_sent=10.0, push_answered=11.0)
    ok_a = load.Record("greet", 1.0, 2.0, 200, "sha-a", "echo: hello rev=A")
    ok_b = load.Record("greet", 12.0, 13.0, 200, "sha-b", "echo: hello rev=B")
    torn = load.Record("triage", 12.0, 13.0, 200, "sha-b", "echo: triage rev=A")
    early = load.Record("greet", 1.0, 2.0, 200, "sha-b", "echo: hello rev=B")
    late = load.Record("greet", 12.0, 13.0, 200, "sha-a", "echo: hello rev=A")
    unknown = load.Record("greet", 1.0, 2.0, 200, "sha-c", "echo: hello rev=A")
    failed = load.Record("stream", 1.0, 2.0, 200, "sha-a", "", "the stream did not end")
    run.records = [ok_a, ok_b, torn, early, late, unknown, failed]
    figures = load._check(run, {"sha-a": "A", "sha-b": "B"})
    assert figures["failures"] == 1
    assert figures["mismatches"] == 4
    assert figures["served_by_commit"] == {"A": 2, "B": 3}
