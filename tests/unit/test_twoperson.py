"""The two-person rule's language (``sluice.twoperson``) and its settings: bad rules stop
the process at start, naming the entry."""

from __future__ import annotations

from pathlib import Path

import pytest

from sluice.config import load_settings
from sluice.errors import ConfigError
from sluice.ops import requests
from sluice.twoperson import ACTS, parse_rules


def test_rules__act_scope_and_threshold() -> None:
    retry, resume, breakers, held = parse_rules(
        ["dlq.retry>1000", "resume:global", "breaker.*", "held.release:tenant>50"]
    )
    assert (retry.acts, retry.scope, retry.over) == ({"dlq.retry"}, None, 1000)
    assert retry.holds("dlq.retry", "tenant", 1001)
    assert not retry.holds("dlq.retry", "tenant", 1000)
    assert not retry.holds("dlq.cancel", "global", 5000)
    assert resume.holds("resume", "global", None) and not resume.holds("resume", "tenant", None)
    assert breakers.acts == {"breaker.force", "breaker.reset"}
    assert held.holds("held.release", "tenant", 51) and not held.holds("held.release", "global", 51)


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ("kill", "containment"),
        ("pause:global", "containment"),
        ("endpoint.disable", "endpoint.disable is containment"),
        ("suppression.add", "only lifting it (suppression.remove) may wait"),
        ("throttles.clear>5", "cannot count"),
        ("endpoint.enable>5", "cannot count"),
        ("dlq.retyr", "no act 'dlq.retyr'"),
        ("nothing.*", "no act"),
        ("resume:everywhere", "scope must be global or tenant"),
        ("resume>10", "cannot count"),
        ("dlq.retry>-1", "not a rule"),
        ("dlq.retry > 5", "not a rule"),
        ("dlq.retry>1e3", "not a rule"),
        ("dlq.retry>9999999999999", "at most 12 digits"),
        ("", "not a rule"),
        ("dlq.retry\ud800", "not a rule"),
    ],
)
def test_rules__a_bad_entry_is_named(entry: str, says: str) -> None:
    with pytest.raises(ConfigError, match=r"two_person\[1\]") as err:
        parse_rules(["dlq.cancel", entry])
    assert says in str(err.value)


def test_issue_14_acts__families_and_counts() -> None:
    endpoint, suppression, retry = parse_rules(
        ["endpoint.*", "suppression.*", "messages.retry_now:tenant>100"]
    )
    assert endpoint.acts == {"endpoint.enable"}  # disabling never waits
    assert suppression.acts == {"suppression.remove"}  # adding never waits
    assert retry.holds("messages.retry_now", "tenant", 101)
    assert not retry.holds("messages.retry_now", "global", 101)


def test_every_act_a_rule_may_name_is_implemented_once_in_ops() -> None:
    assert set(requests._ACTS) == set(ACTS)


def test_settings__from_the_ops_table_and_the_environment(tmp_path: Path) -> None:
    toml = tmp_path / "sluice.toml"
    toml.write_text(
        '[ops]\ntwo_person = ["dlq.retry>1000", "resume:global"]\ntwo_person_expiry = 3600\n'
    )
    got = load_settings(env={}, config_path=toml)
    assert (got.two_person, got.two_person_expiry) == (("dlq.retry>1000", "resume:global"), 3600)
    env = {"SLUICE_TWO_PERSON": "held.release>10,limit.*"}
    assert load_settings(env=env, config_path=toml).two_person == ("held.release>10", "limit.*")
    assert load_settings(env={}).two_person == ()  # off by default


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('[ops]\ntwo_person = ["kill"]\n', "kill is containment"),
        ("[ops]\ntwo_person_expiry = 0\n", "SLUICE_TWO_PERSON_EXPIRY must be greater than 0"),
        ("[ops]\ntwo_person_expiry = nan\n", "finite"),
        ("[ops]\ntwo_person = [1]\n", "not a list of strings"),
        ("[ops]\ntwo_persons = []\n", "unknown setting [ops].two_persons"),
    ],
)
def test_settings__bad_values_fail_at_start(tmp_path: Path, text: str, says: str) -> None:
    toml = tmp_path / "sluice.toml"
    toml.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_settings(env={}, config_path=toml)
    assert says in str(err.value)
