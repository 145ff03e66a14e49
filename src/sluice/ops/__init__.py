"""Operator actions, one implementation shared by the CLI, the Python API, the HTTP API
and the console.

Of the three packages that share controls, limits and breakers (ARCHITECTURE.md, "One
concern, three packages"), ``sluice.flow`` decides, ``sluice.worker`` applies the
decisions while sending, and ops is what an *operator* does about them: set, clear,
force, release, each audited. Ops imports ground, flow and the store; never the worker
(what both need lives below them), the API or the CLI, which call it.

- ``actions``: status, messages, the dead-letter queue;
- ``controls``: kill, pause, shadow, approval, resume (acknowledged by every live
  worker) and held messages (list, approve, release, cancel);
- ``limits``: rate limits, quotas and caps at run time;
- ``breakers``: circuit breakers (list, force open or closed, reset);
- ``connections``: tenant credentials;
- ``waiting``: retry-now of waiting retries; throttles (list, clear);
- ``watch``: the figures ``sluice status --watch`` redraws for on-call;
- ``requests``: the two-person rule — ``perform`` is the one door of every act a rule
  may hold back (the CLI and the API call it), and a held act's approval or denial.
- ``verify``: post-send verification — a person confirms or fails messages in
  ``needs_confirm`` (issue 15);
- ``listings``: what on-call reads a page at a time (messages, attempts, the inbox),
  counts per tenant, provider or action (``status --by``) and ``top``.
- ``canary``: golden-path canaries (issue 15) — ``[canary]`` targets, a run on demand
  (``sluice canary run``), the leading worker's schedule, their incidents.
- ``explain``: why a message has not gone out, in plain words, and what would release
  it (the console's tenant view; issue 16).
"""

from __future__ import annotations

from sluice.ops.actions import DlqAction, dlq_cancel, dlq_list, dlq_retry, message_show, status
from sluice.ops.breakers import breaker_force, breaker_reset, breakers_list
from sluice.ops.controls import (
    AckReport,
    ControlChange,
    control_clear,
    control_list,
    control_set,
    held_approve,
    held_cancel,
    held_list,
    held_release,
)
from sluice.ops.limits import limit_clear, limit_list, limit_set
from sluice.ops.waiting import ThrottleClear, retry_now, throttle_clear, throttles_list

__all__ = [
    "AckReport",
    "ControlChange",
    "DlqAction",
    "ThrottleClear",
    "breaker_force",
    "breaker_reset",
    "breakers_list",
    "control_clear",
    "control_list",
    "control_set",
    "dlq_cancel",
    "dlq_list",
    "dlq_retry",
    "held_approve",
    "held_cancel",
    "held_list",
    "held_release",
    "limit_clear",
    "limit_list",
    "limit_set",
    "message_show",
    "retry_now",
    "status",
    "throttle_clear",
    "throttles_list",
]
