"""The ``sluice`` command: the top layer of Sluice.

It may import anything below it — ``api``, ``ops``, ``worker``, ``ingress``, ``store``,
``flow``, ``providers``, ``model``, ``config`` — and nothing in Sluice imports it. It holds
no logic of its own: each command parses its options, calls one function of the layers
below (most often in :mod:`sluice.ops`, which the HTTP API calls too) and prints what came
back, as text or, with ``--json``, as the JSON the API returns.

Every flag has an environment variable, shown in ``--help``. Exit codes: 0 done; 1 the
system failed (database down, …); 2 bad input or configuration (the message names what is
wrong, and nothing was changed); 3 the act was filed for a second operator (``requests``).

Where each command lives:

- ``processes``: migrate, worker, simulator, run, serve;
- ``messages``: send, messages list, show; ``attempts``: attempts list; ``status``:
  status, top (``watch`` draws its ``--watch`` screen);
- ``audit``: audit list, verify;
- ``dlq``: dlq list, retry, cancel;
- ``controls``: kill, pause, resume, controls set, clear, list;
- ``held``: held list, approve, release, cancel;
- ``limits``: limits list, set, clear; ``breakers``: breakers list, open, close, reset;
- ``connections``: connections add, list, show, rotate, revoke, check; keys generate, rotate;
- ``apikeys``: apikeys create, list, revoke; ``inbox``: inbox list, retry;
- ``endpoints``: endpoints list, disable, enable; ``tenants``: tenants events-url set,
  clear, list.
- ``requests``: requests list, show, approve, deny (the two-person rule; exit 3: filed).
- ``waiting``: messages retry-now; throttles list, clear.
- ``verify``: messages confirm, fail (post-send verification, issue 15).
- ``retention``: purge.
- ``canary``: canary run, list (issue 15).

What every command shares: ``options`` (the options more than one group takes, defined
once) and ``runtime`` (settings, the store, the event loop, exit codes, printing through
:mod:`sluice.ops.render`). A new command goes in the module of its group and is added to
``app`` below.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from sluice.cli import (
    apikeys,
    attempts,
    audit,
    breakers,
    canary,  # canaries (issue 15)
    connections,
    controls,
    dlq,
    endpoints,
    evidence,
    held,
    inbox,
    incidents,
    limits,
    messages,
    processes,
    requests,
    retention,
    runbooks,
    status,
    suppressions,
    tenants,
    verify,
    waiting,
)
from sluice.cli.processes import run_worker

__all__ = ["app", "main", "run_worker"]

app = typer.Typer(
    name="sluice",
    help="Sluice delivers outbound side effects durably, under the operator's hand.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# In the order ``sluice --help`` lists them: the commands, then the groups.
app.command("migrate")(processes.migrate)
app.command("worker")(processes.worker)
app.command("send")(messages.send)
app.command("status")(status.status)
app.command("top")(status.top)  # issue 14: the high-volume senders
app.command("simulator")(processes.simulator)
app.command("run")(processes.run)
app.command("serve")(processes.serve)
app.command("kill")(controls.kill)
app.command("pause")(controls.pause)
app.command("resume")(controls.resume)
app.command("approve")(held.approve)
app.command("release")(held.release)
app.command("cancel")(held.cancel)
app.command("purge")(retention.purge)  # retention (issue 14)
app.add_typer(dlq.dlq_app, name="dlq")
app.add_typer(messages.messages_app, name="messages")
app.add_typer(attempts.attempts_app, name="attempts")  # issue 14
app.add_typer(connections.connections_app, name="connections")
app.add_typer(connections.keys_app, name="keys")
app.add_typer(apikeys.apikeys_app, name="apikeys")
app.add_typer(inbox.inbox_app, name="inbox")
app.add_typer(controls.controls_app, name="controls")
app.add_typer(held.held_app, name="held")
app.add_typer(limits.limits_app, name="limits")
app.add_typer(breakers.breakers_app, name="breakers")
app.add_typer(incidents.incidents_app, name="incidents")
app.add_typer(audit.audit_app, name="audit")
app.add_typer(suppressions.suppressions_app, name="suppressions")  # recipient hygiene (issue 14)

# Acting on what waits (issue 14).
messages.messages_app.command("retry-now")(waiting.retry_now)
app.add_typer(waiting.throttles_app, name="throttles")

# issue 14: endpoint health, tenants' events URL
app.add_typer(endpoints.endpoints_app, name="endpoints")
app.add_typer(tenants.tenants_app, name="tenants")
app.add_typer(requests.requests_app, name="requests")  # the two-person rule (issue 14)
app.add_typer(canary.canary_app, name="canary")  # canaries (issue 15)

# -- evidence and markers (issue 15) ----------------------------------------------------
app.command("annotate")(evidence.annotate)
app.add_typer(evidence.annotations_app, name="annotations")
incidents.incidents_app.command("evidence")(evidence.incidents_evidence)
# issue 15: runbooks as data, diagnosing live state
app.add_typer(runbooks.runbook_app, name="runbook")

# -- post-send verification (issue 15): a person decides about needs_confirm messages --
messages.messages_app.command("confirm")(verify.confirm)
messages.messages_app.command("fail")(verify.fail)


# -- sluice --version (issue 14) ---------------------------------------------------------
def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"sluice {version('sluice')}")
        raise typer.Exit()


@app.callback()
def _root(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Sluice delivers outbound side effects durably, under the operator's hand."""


def main() -> None:
    """Entry point of the ``sluice`` script."""
    from sluice.logs import quiet_pool_warnings

    quiet_pool_warnings()  # commands that set up no logging would print them bare
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
