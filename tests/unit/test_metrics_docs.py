"""docs/metrics.md and sluice/metrics.py name the same metrics, with the same types and
labels: the table is the reader's index, the module the single definition."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sluice import metrics

DOCS = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"
ROW = re.compile(r"^\| `(sluice_\w+)` \| (\w+) \| ([^|]*) \|", re.MULTILINE)


def documented() -> dict[str, tuple[str, tuple[str, ...]]]:
    rows = ROW.findall(DOCS.read_text())
    assert rows, "docs/metrics.md has no metric rows"
    out = {}
    for name, kind, labels in rows:
        assert name not in out, f"{name} is listed twice in docs/metrics.md"
        names = tuple(x.strip() for x in labels.split(",") if x.strip() not in ("", "—"))
        out[name] = (kind, names)
    return out


def defined() -> dict[str, tuple[str, tuple[str, ...]]]:
    out = {}
    for metric in metrics.EVENT_METRICS:
        kind = type(metric).__name__.lower()
        name = metric._name + ("_total" if kind == "counter" else "")  # type: ignore[attr-defined]
        out[name] = (kind, tuple(metric._labelnames))  # type: ignore[attr-defined]
    for state in metrics.STATE:
        out[state.name] = (state.kind, state.labels)
    return out


def test_every_metric_is_documented_and_nothing_else() -> None:
    docs, code = documented(), defined()
    assert sorted(set(code) - set(docs)) == [], "defined but not in docs/metrics.md"
    assert sorted(set(docs) - set(code)) == [], "in docs/metrics.md but not defined"


@pytest.mark.parametrize("name", sorted(defined()))
def test_type_and_labels_match(name: str) -> None:
    assert documented()[name] == defined()[name]


def test_every_row_names_a_seed() -> None:
    for line in DOCS.read_text().splitlines():
        if line.startswith("| `sluice_"):
            assert re.search(r"\b00[0-4]\b", line), f"no seed named in: {line}"


def test_a_tally_adds_up_to_what_direct_counting_gives() -> None:
    """``Tally`` (what a worker counts between write-backs) lands exactly as the same
    increments and observations made one by one."""
    from prometheus_client import CollectorRegistry, Counter, Histogram

    reg = CollectorRegistry()
    c1 = Counter("t1", "x", ["a"], registry=reg)
    c2 = Counter("t2", "x", ["a"], registry=reg)
    h1 = Histogram("h1", "x", ["a"], buckets=(0.1, 1, 10), registry=reg)
    h2 = Histogram("h2", "x", ["a"], buckets=(0.1, 1, 10), registry=reg)
    values = [0.0, 0.1, 0.5, 1.0, 3.0, 10.0, 11.0, 0.05]
    tally = metrics.Tally()
    for v in values:
        c1.labels("x").inc()
        tally.inc(c2, "x")
        h1.labels("x").observe(v)
        tally.observe(h2, v, "x")
    tally.flush()
    tally.flush()  # a second flush adds nothing
    assert reg.get_sample_value("t1_total", {"a": "x"}) == reg.get_sample_value(
        "t2_total", {"a": "x"}
    )
    for le in ("0.1", "1.0", "10.0", "+Inf"):
        assert reg.get_sample_value("h1_bucket", {"a": "x", "le": le}) == reg.get_sample_value(
            "h2_bucket", {"a": "x", "le": le}
        ), le
    assert reg.get_sample_value("h1_sum", {"a": "x"}) == reg.get_sample_value("h2_sum", {"a": "x"})
