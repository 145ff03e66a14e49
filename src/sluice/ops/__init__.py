"""Operator actions, one implementation shared by the CLI and the HTTP API."""

from __future__ import annotations

from sluice.ops.actions import DlqAction, dlq_cancel, dlq_list, dlq_retry, message_show, status

__all__ = ["DlqAction", "dlq_cancel", "dlq_list", "dlq_retry", "message_show", "status"]
