"""Every runbook of the seeds in which Sluice has a part, as data (``sluice runbook``).

Written for Sluice in its own terms: the checks are the probes of ``sluice.ops.runbooks``,
the commands are ``sluice`` commands (a test runs each against the command tree), and a
dry run comes before every act that has one. ``NOT_COVERED`` names the seed sections left
out and why.
"""

from __future__ import annotations

from sluice.runbooks.model import Check, Command, Runbook

__all__ = ["NOT_COVERED", "RUNBOOKS"]


def act(line: str, why: str, reason: str) -> Command:
    return Command(f'{line} --reason "{reason}"', why)


def dry(line: str, why: str) -> Command:
    return Command(f"{line} --dry-run", why, dry_run=True)


def look(line: str, why: str) -> Command:
    return Command(line, why)


C = Check

# Checks used by many runbooks, each in one place.
FAILURES = C("failures", "providers whose attempts fail, their failure rate and top codes")
BREAKERS = C("breakers", "circuit breakers open or half-open, and since when")
FAILOVER = C("failover", "whether [routes] has another provider for the channel and it carries")
TENANTS = C("tenants", "which tenants' messages failed in the window")
DEAD = C("dead_letters", "dead letters by channel and error code")
QUEUE = C("queue", "messages by status and the age of the oldest ready one")
WORKERS = C("workers", "live workers and stale heartbeats")
RETRYING = C("retrying", "queued messages that have already failed three times or more")
THROTTLES = C("throttles", "throttles in force (a provider said slow down) and 429s")
CONNECTIONS = C("connections", "tenant connections not active (revoked, awaiting re-auth)")
AUTH = C("auth", "attempts refused for credentials: revoked tokens, missing scopes")
HELD = C("held", "held messages by reason, and for how long")
LATENCY = C("latency", "creation-to-sent latency (p95, p99) per channel and provider")
QUOTA = C("quota", "quota limits, thresholds crossed and QUOTA_EXCEEDED answers")
TOP = C("top_senders", "the tenants sending most in the window")
INBOX = C("inbox", "provider events waiting for the projector, dead or rejected")
CAPS = C("caps", "recipient caps tripped (the same recipient messaged again and again)")
TENANCY = C("tenancy", "sends or receipts refused for belonging to another tenant")
CONTROLS = C("controls", "controls in force (kill, pause, approval, shadow)")
ENDPOINTS = C("endpoints", "tenants' webhook and http endpoints failing or disabled")
AUDIT = C("audit_chain", "whether the audit log reads and its hash chain holds")
PARTIAL = C("partial", "actions of one correlation with some steps sent and others not")
SAMPLE = C("sample", "what the provider said in its latest failed answers")
INCIDENTS = C("incidents", "other incidents open now in the same scope")
SUPPRESSIONS = C("suppressions", "recipients suppressed (bounces, complaints, opt-outs)")

STATUS = look("sluice status", "counts by status, oldest ready message, workers")
RUNBOOKS: tuple[Runbook, ...] = (
    # -- seed 002: the outbound messaging runbook, scenarios 1 to 6 ------------------------
    Runbook(
        id="queue-depth",
        title="Queue depth high",
        source="002#1",
        summary="Ready messages pile up faster than workers send them: a slow or failing "
        "provider, a throttle, a pause, or too few workers.",
        diagnosis=(QUEUE, WORKERS, CONTROLS, THROTTLES, FAILURES, BREAKERS, INCIDENTS),
        containment=(
            look("sluice top --since {since}", "who is filling the queue"),
            act(
                "sluice pause --tenant {tenant}",
                "hold back a tenant flooding the queue",
                "queue depth: pausing the largest sender",
            ),
        ),
        recovery=(
            look("sluice worker --concurrency 32", "start more workers if providers are well"),
            act(
                "sluice resume --tenant {tenant}",
                "let the tenant's messages go again",
                "queue depth back to normal",
            ),
        ),
        verification=(QUEUE, WORKERS),
        escalation=(
            "Providers failing too: follow provider-outage.",
            "Workers run but the oldest ready age still climbs: the database is slow; "
            "call the database owner.",
        ),
        follow_ups=("Is there an alert before the queue is this deep?",),
    ),
    Runbook(
        id="dlq-growth",
        title="Dead letters growing",
        source="002#2",
        summary="Messages run out of attempts or fail for good: bad recipients, a provider "
        "account problem, an unapproved template, or a provider down for too long.",
        diagnosis=(DEAD, FAILURES, SUPPRESSIONS, TENANTS),
        containment=(
            look(
                "sluice dlq list --channel {channel} --error-code {error_code}",
                "the dead letters of the leading code",
            ),
            look(
                "sluice messages list --status dead --error-code {error_code} --since {since}",
                "a sample of them, with recipients",
            ),
        ),
        recovery=(
            dry(
                "sluice dlq retry --error-code {error_code} --since {since}",
                "how many a retry would requeue (only once the cause is fixed)",
            ),
            act(
                "sluice dlq retry --error-code {error_code} --since {since}",
                "requeue them",
                "cause fixed; retrying the dead letters",
            ),
            dry(
                "sluice dlq cancel --error-code INVALID_RECIPIENT",
                "how many bad-recipient letters a cancel would close",
            ),
            act(
                "sluice dlq cancel --error-code INVALID_RECIPIENT",
                "close the letters no retry can deliver",
                "recipients invalid: never deliverable",
            ),
        ),
        verification=(DEAD,),
        escalation=(
            "ACCOUNT_SUSPENDED or QUOTA_EXCEEDED: only the provider can fix it; open a "
            "ticket with them.",
            "INVALID_RECIPIENT from one tenant: tell the tenant; their data is wrong.",
        ),
        follow_ups=("Could the bad recipients have been refused at enqueue?",),
    ),
    Runbook(
        id="high-failure-rate",
        title="Success rate low",
        source="002#3",
        summary="A channel or provider fails more than it should: find which, find the "
        "codes, then shed it to a backup provider or stop it.",
        diagnosis=(FAILURES, BREAKERS, FAILOVER, TENANTS, AUTH, SAMPLE),
        containment=(
            act(
                "sluice breakers open p:{provider}",
                "stop sending through it; a route fails over",
                "failure rate high",
            ),
            act(
                "sluice pause --provider {provider}",
                "keep its messages queued when there is no backup",
                "failure rate high",
            ),
        ),
        recovery=(
            act(
                "sluice breakers reset p:{provider}",
                "let the breaker probe again",
                "provider healthy again",
            ),
            act(
                "sluice resume --provider {provider}",
                "send its queued messages",
                "provider healthy again",
            ),
            dry(
                "sluice dlq retry --error-code {error_code} --since {since}",
                "what died in the meantime",
            ),
            act(
                "sluice dlq retry --error-code {error_code} --since {since}",
                "requeue them",
                "provider healthy again: retrying what died",
            ),
        ),
        verification=(FAILURES, BREAKERS),
        escalation=(
            "Failure codes say auth: follow token-revoked.",
            "The provider's status page is red: open a ticket with them.",
        ),
        follow_ups=("Did a deploy or credential rotation come just before?",),
    ),
    Runbook(
        id="quota-exhaustion",
        title="Quota nearly used up",
        source="002#4",
        summary="A tenant's or provider's quota runs out: find who is using it, slow "
        "them, and keep urgent traffic flowing.",
        diagnosis=(QUOTA, TOP, THROTTLES),
        containment=(
            look("sluice top --since {since} --provider {provider}", "the biggest senders"),
            act(
                "sluice limits set rate --tenant {tenant} --provider {provider} --rate 1",
                "slow the biggest sender to a trickle",
                "quota nearly used up",
            ),
            act(
                "sluice pause --tenant {tenant} --provider {provider}",
                "or stop it until the quota resets",
                "quota nearly used up",
            ),
        ),
        recovery=(
            act(
                "sluice limits clear rate --tenant {tenant} --provider {provider}",
                "lift the slow-down after the reset",
                "quota reset",
            ),
            act(
                "sluice resume --tenant {tenant} --provider {provider}",
                "send what waited",
                "quota reset",
            ),
        ),
        verification=(QUOTA, QUEUE),
        escalation=("A higher tier is the provider's call: ask their support.",),
        follow_ups=("Should urgent messages have a reserve of the quota?",),
    ),
    Runbook(
        id="stuck-messages",
        title="Messages stuck retrying",
        source="002#5",
        summary="Messages keep coming back to the queue after failing, or sit there with "
        "no live worker to take them.",
        diagnosis=(RETRYING, WORKERS, FAILURES, THROTTLES, QUEUE),
        containment=(
            look(
                "sluice attempts list --provider {provider} --outcome failed --since {since}",
                "what their attempts say",
            ),
        ),
        recovery=(
            dry(
                "sluice messages retry-now --provider {provider}",
                "how many would be tried now instead of at their backoff",
            ),
            act(
                "sluice messages retry-now --provider {provider}",
                "try them now",
                "cause fixed: retrying stuck messages",
            ),
            look("sluice worker", "start a worker if none is live"),
        ),
        verification=(RETRYING, WORKERS),
        escalation=("No worker stays up: call the platform on-call.",),
        follow_ups=(
            "Was the backoff schedule right for this provider's failures?",
            "Should messages this old have expired (ttl) instead?",
        ),
    ),
    Runbook(
        id="delivery-latency",
        title="Delivery slow",
        source="002#6",
        summary="Messages take long from creation to sent: waiting in the queue, or a "
        "provider answering slowly.",
        diagnosis=(LATENCY, QUEUE, WORKERS, THROTTLES, FAILURES),
        containment=(
            look("sluice top --since {since}", "whether one tenant is crowding the rest"),
            look("sluice worker --concurrency 32", "more sends in flight"),
        ),
        recovery=(STATUS,),
        verification=(LATENCY, QUEUE),
        escalation=("One provider slow for everyone: ask the provider.",),
        follow_ups=("Which part of the latency was queueing and which the provider?",),
    ),
    # -- seed 003: incident runbooks RB-01 to RB-12, and §2.2 -------------------------------
    Runbook(
        id="cross-tenant",
        title="Wrong account or cross-tenant action",
        source="003#RB-01",
        summary="A send or receipt tried to act for another tenant. Sluice refused it and "
        "held the message; stop everything until the cause is known.",
        diagnosis=(TENANCY, CONNECTIONS, HELD, INCIDENTS),
        containment=(
            act(
                "sluice kill",
                "nothing leaves, anywhere, until it is understood",
                "tenancy violation: global kill",
            ),
            look(
                "sluice audit list --action tenancy --since {since}",
                "the refused acts, with both tenants",
            ),
        ),
        recovery=(
            dry(
                "sluice cancel --reason-contains tenancy",
                "how many held messages the guard refused",
            ),
            act(
                "sluice cancel --reason-contains tenancy",
                "close them: they must never go",
                "refused by the tenancy guard",
            ),
            act(
                "sluice resume",
                "lift the kill once the cause is fixed",
                "tenancy cause fixed and tested",
            ),
        ),
        verification=(TENANCY, CONTROLS, AUDIT),
        escalation=(
            "Always a P0: page the security owner now.",
            "Rotate any credential that may have crossed tenants.",
        ),
        follow_ups=("A regression test for the path that crossed tenants.",),
    ),
    Runbook(
        id="publish-failures",
        title="Sends failing at the provider",
        source="003#RB-02",
        summary="Provider calls fail: sort the failures by class (auth, rate, bad request, "
        "outage) and switch the provider to approval while it is looked at.",
        diagnosis=(FAILURES, AUTH, THROTTLES, BREAKERS, SAMPLE),
        containment=(
            act(
                "sluice controls set approval --provider {provider}",
                "manual only: each message waits for a person",
                "send failures high",
            ),
        ),
        recovery=(
            dry("sluice approve --provider {provider}", "what is waiting for approval"),
            act(
                "sluice approve --provider {provider}",
                "send the ones a person checked",
                "checked by hand",
            ),
            act(
                "sluice controls clear --provider {provider}",
                "back to automatic",
                "send failures fixed",
            ),
        ),
        verification=(FAILURES,),
        escalation=("Codes changed after a provider release: ask the provider.",),
        follow_ups=("A test that maps each new provider error to its ErrorCode.",),
    ),
    Runbook(
        id="verification-failures",
        title="Sent, but not confirmed delivered",
        source="003#RB-03",
        summary="The provider accepted messages that then bounced or never came back "
        "delivered: stop the automatic sends of that provider and let a person decide.",
        diagnosis=(INBOX, SUPPRESSIONS, FAILURES),
        containment=(
            act(
                "sluice controls set approval --provider {provider}",
                "a person confirms each send",
                "delivery not confirmed",
            ),
        ),
        recovery=(
            act(
                "sluice controls clear --provider {provider}",
                "back to automatic",
                "delivery receipts normal again",
            ),
        ),
        verification=(INBOX,),
        escalation=("Receipts stopped arriving at all: follow ingress-down.",),
        follow_ups=("Should these messages ask for confirmation (verify_within)?",),
    ),
    Runbook(
        id="token-refresh-failure",
        title="Token refresh failing",
        source="003#RB-04",
        summary="A tenant's credentials expire or cannot be refreshed; its sends fail "
        "with auth errors until someone re-authorises.",
        diagnosis=(CONNECTIONS, AUTH, HELD),
        containment=(
            act(
                "sluice pause --tenant {tenant} --provider {provider}",
                "stop spending attempts on a dead token",
                "token refresh failing",
            ),
            look(
                "sluice connections check --tenant {tenant} --provider {provider}",
                "what the provider says about the credential",
            ),
        ),
        recovery=(
            act(
                "sluice connections rotate --tenant {tenant} --provider {provider} "
                "--credentials-file new-credentials.json",
                "install the re-authorised credential",
                "tenant re-authorised",
            ),
            act(
                "sluice resume --tenant {tenant} --provider {provider}",
                "send what waited",
                "tenant re-authorised",
            ),
        ),
        verification=(CONNECTIONS, AUTH),
        escalation=("The tenant's admin must re-consent; Sluice cannot.",),
        follow_ups=("Warn before a token expires, not after.",),
    ),
    Runbook(
        id="rate-limited",
        title="Rate limited or restricted by the provider",
        source="003#RB-05",
        summary="The provider answers 429 or restricts the account: slow down, stagger, "
        "cap, and resume slowly.",
        diagnosis=(THROTTLES, FAILURES, TOP, CAPS),
        containment=(
            act(
                "sluice limits set rate --provider {provider} --rate 5",
                "send slower than the provider allows",
                "rate limited",
            ),
            act(
                "sluice pause --tenant {tenant} --provider {provider}",
                "stop the tenant causing the burst",
                "rate limited",
            ),
        ),
        recovery=(
            act(
                "sluice resume --tenant {tenant} --provider {provider}",
                "resume slowly",
                "provider no longer limiting",
            ),
            act(
                "sluice limits clear rate --provider {provider}",
                "lift the slow-down",
                "provider no longer limiting",
            ),
        ),
        verification=(THROTTLES,),
        escalation=("The account is restricted, not just limited: ask the provider.",),
        follow_ups=("Is a standing rate limit for this provider needed in sluice.toml?",),
    ),
    Runbook(
        id="queue-backlog",
        title="Jobs not starting",
        source="003#RB-07",
        summary="Work is queued but not taken: workers down or stale, or held back by a control.",
        diagnosis=(WORKERS, QUEUE, CONTROLS, DEAD),
        containment=(
            look("sluice worker", "start a worker"),
            look("sluice controls list", "a forgotten pause or kill"),
        ),
        recovery=(STATUS,),
        verification=(WORKERS, QUEUE),
        escalation=("Workers start and die: call the platform on-call.",),
        follow_ups=("Why did no worker come back by itself?",),
    ),
    Runbook(
        id="action-gateway-failure",
        title="Action endpoints failing",
        source="003#RB-08",
        summary="Tenants' webhook or http action endpoints fail: fail closed for that "
        "tenant rather than retry into a broken gateway.",
        diagnosis=(ENDPOINTS, FAILURES, BREAKERS),
        containment=(
            act(
                "sluice pause --tenant {tenant} --provider {provider}",
                "fail closed: its actions wait",
                "action endpoint failing",
            ),
        ),
        recovery=(
            look("sluice endpoints list --tenant {tenant}", "the endpoint's state"),
            act(
                "sluice resume --tenant {tenant} --provider {provider}",
                "send what waited",
                "endpoint healthy again",
            ),
        ),
        verification=(ENDPOINTS,),
        escalation=("The endpoint belongs to the tenant: tell them.",),
        follow_ups=("Should the endpoint have been disabled sooner, automatically?",),
    ),
    Runbook(
        id="provider-outage",
        title="Provider outage",
        source="003#RB-09",
        also=("001#provider-outage",),
        summary="A provider fails for everyone: fail over along [routes] where a backup "
        "exists, otherwise stop it and let the queue wait; keep credentials as they are.",
        diagnosis=(FAILURES, BREAKERS, FAILOVER, TENANTS, SAMPLE, QUEUE, INCIDENTS),
        containment=(
            act(
                "sluice breakers open p:{provider}",
                "stop it now; traffic fails over along [routes]",
                "provider outage",
            ),
            act(
                "sluice pause --provider {provider}",
                "no backup route: keep its messages queued",
                "provider outage",
            ),
        ),
        recovery=(
            act("sluice breakers reset p:{provider}", "probe it again", "provider back up"),
            act("sluice resume --provider {provider}", "send the backlog", "provider back up"),
            dry(
                "sluice dlq retry --error-code {error_code} --since {since}",
                "what died during the outage",
            ),
            act(
                "sluice dlq retry --error-code {error_code} --since {since}",
                "requeue them",
                "outage over: retrying what died",
            ),
        ),
        verification=(FAILURES, BREAKERS, CONTROLS, QUEUE),
        escalation=(
            "Do not revoke or rotate credentials during an outage.",
            "Open a ticket with the provider; link their status page.",
        ),
        follow_ups=(
            "Does every channel have a backup provider in [routes]?",
            "Did the breaker open before the alert fired?",
        ),
    ),
    Runbook(
        id="runaway-loop",
        title="Runaway reply loop",
        source="003#RB-10",
        summary="The same recipients get message after message: a loop between two "
        "automations. Recipient caps hold the excess; kill the tenant's flow.",
        diagnosis=(CAPS, TOP, HELD),
        containment=(
            act(
                "sluice kill --tenant {tenant}",
                "nothing more leaves for the tenant",
                "runaway loop",
            ),
        ),
        recovery=(
            dry(
                "sluice cancel --tenant {tenant} --reason-contains recipient",
                "the messages the cap held",
            ),
            act(
                "sluice cancel --tenant {tenant} --reason-contains recipient",
                "close them for good",
                "loop messages, never to send",
            ),
            act("sluice resume --tenant {tenant}", "after the loop is fixed", "loop fixed"),
        ),
        verification=(CAPS, CONTROLS),
        escalation=("Tell the tenant: their automation loops.",),
        follow_ups=("Which recipient cap would have stopped it earlier?",),
    ),
    Runbook(
        id="missing-audit",
        title="Audit or state unreadable",
        source="003#RB-11",
        summary="Sluice cannot read its own state, or the audit chain does not verify: "
        "freeze side effects until it does.",
        diagnosis=(AUDIT, QUEUE, WORKERS),
        containment=(act("sluice kill", "freeze every side effect", "audit unreadable"),),
        recovery=(
            look("sluice audit verify", "the chain verifies again"),
            act("sluice resume", "lift the freeze", "audit verified"),
        ),
        verification=(AUDIT,),
        escalation=("A broken hash chain is a security event: page the security owner.",),
        follow_ups=("How was the state unreadable, and is there an alert for it now?",),
    ),
    Runbook(
        id="cost-runaway",
        title="Cost runaway",
        source="003#RB-12",
        summary="Volume far above normal: find the tenant and action, pause it, cap it.",
        diagnosis=(TOP, QUOTA, CAPS),
        containment=(
            act("sluice pause --tenant {tenant}", "stop the spend", "cost runaway"),
            act(
                "sluice limits set quota --tenant {tenant} --limit 1000 --window 1d",
                "a daily cap",
                "cost runaway",
            ),
        ),
        recovery=(act("sluice resume --tenant {tenant}", "after the cap is in place", "capped"),),
        verification=(TOP,),
        escalation=("Tell the tenant's owner what it cost.",),
        follow_ups=("A quota per tenant that matches what they pay for.",),
    ),
    Runbook(
        id="held-too-long",
        title="Messages held too long",
        source="003#2.2",
        summary="Held messages wait for a person: a kill or approval left in place, a "
        "tenant awaiting re-auth, a recipient cap.",
        diagnosis=(HELD, CONTROLS, CONNECTIONS),
        containment=(look("sluice held list --tenant {tenant}", "what waits, and why"),),
        recovery=(
            dry("sluice release --tenant {tenant}", "how many would go back to the queue"),
            act("sluice release --tenant {tenant}", "send them", "cause gone"),
        ),
        verification=(HELD,),
        escalation=("Held for approval: the approver is the one to call.",),
        follow_ups=("Should this control have had an expiry?",),
    ),
    # -- seed 001: the five failure modes (provider outage is provider-outage above) ------
    Runbook(
        id="token-revoked",
        title="Token revoked or refresh grant invalid",
        source="001#token-revocation",
        summary="A tenant's grant is gone; its connection waits for re-auth and its "
        "messages are held, not failed.",
        diagnosis=(CONNECTIONS, AUTH, HELD),
        containment=(
            look("sluice connections list --tenant {tenant}", "which connections wait"),
            act(
                "sluice connections revoke --tenant {tenant} --provider {provider}",
                "block writes that need the revoked grant",
                "grant revoked",
            ),
        ),
        recovery=(
            act(
                "sluice connections rotate --tenant {tenant} --provider {provider} "
                "--credentials-file new-credentials.json",
                "install the re-consented credential",
                "tenant re-consented",
            ),
            dry(
                "sluice release --tenant {tenant} --provider {provider}", "the messages held for it"
            ),
            act(
                "sluice release --tenant {tenant} --provider {provider}",
                "send them",
                "tenant re-consented",
            ),
        ),
        verification=(CONNECTIONS, AUTH),
        escalation=("No connection should stay pending_reauth without someone asked.",),
        follow_ups=("Tell the tenant before the grant lapses; who owns that message?",),
    ),
    Runbook(
        id="webhook-replay",
        title="Webhook replayed or delivered twice",
        source="001#webhook-replay",
        summary="A provider repeats receipts: the inbox deduplicates; check it keeps up "
        "and no receipt is applied twice.",
        diagnosis=(INBOX, TENANCY),
        containment=(look("sluice inbox list --state rejected", "what was refused"),),
        recovery=(look("sluice inbox list --state dead", "what the projector gave up on"),),
        verification=(INBOX,),
        escalation=("Signatures failing too: the secret changed; call the provider's owner.",),
        follow_ups=("Is the provider's replay a known behaviour to document?",),
    ),
    Runbook(
        id="outbox-lag",
        title="Outbox lag",
        source="001#outbox-lag",
        summary="The oldest ready message or the oldest receipt waits too long: workers "
        "or the projector fall behind.",
        diagnosis=(QUEUE, INBOX, WORKERS),
        containment=(look("sluice worker", "add a worker: it also runs the projector"),),
        recovery=(STATUS,),
        verification=(QUEUE, INBOX),
        escalation=("Never bypass the outbox to catch up.",),
        follow_ups=("Is the worker count sized for the peak, with margin?",),
    ),
    Runbook(
        id="projector-failure",
        title="Receipt projector failing",
        source="001#notification-projector-failure",
        summary="Receipts land in the inbox but the projector gives up on them.",
        diagnosis=(INBOX, WORKERS),
        containment=(look("sluice inbox list --state dead", "the events given up on"),),
        recovery=(act("sluice inbox retry <ids>", "retry them once fixed", "projector fixed"),),
        verification=(INBOX,),
        escalation=("The same event dies again: a parser bug; call the owner of ingress.",),
        follow_ups=("A parser test with the event that died.",),
    ),
    # -- seed 004: failure modes 1.1 to 1.5 ------------------------------------------------
    Runbook(
        id="ingress-down",
        title="Provider webhooks not arriving or refused",
        source="004#1.1",
        summary="Receipts stop, or arrive and fail signature checks: the webhook URL, its "
        "secret, or ingress itself.",
        diagnosis=(INBOX, QUEUE),
        containment=(
            look("sluice inbox list --state rejected --provider {provider}", "the refused events"),
        ),
        recovery=(look("sluice serve", "make sure ingress runs"),),
        verification=(INBOX,),
        escalation=("The provider's webhook settings are on their console: its owner.",),
        follow_ups=("An alert when receipts stop while sends go on.",),
    ),
    Runbook(
        id="duplicate-actions",
        title="Duplicate actions or reply storms",
        source="004#1.2",
        summary="Recipients get the same thing twice, or auto-replies outpace what came in.",
        diagnosis=(CAPS, TOP, INBOX),
        containment=(
            act(
                "sluice kill --tenant {tenant} --action {action}",
                "stop the automatic replies",
                "duplicate actions",
            ),
        ),
        recovery=(
            act(
                "sluice resume --tenant {tenant} --action {action}",
                "after the idempotency keys are fixed",
                "duplicates fixed",
            ),
        ),
        verification=(CAPS,),
        escalation=("Tell the tenant whose customers got duplicates.",),
        follow_ups=("Which idempotency key was missing?",),
    ),
    Runbook(
        id="rate-limit-429",
        title="Downstream 429s",
        source="004#1.3",
        summary="A provider answers 429: Sluice honours Retry-After with a throttle; cut "
        "concurrency and non-essential sends until it clears.",
        diagnosis=(THROTTLES, FAILURES, QUEUE, TOP),
        containment=(
            act(
                "sluice limits set concurrency --provider {provider} --max 2",
                "fewer calls in flight",
                "429 storm",
            ),
            act(
                "sluice pause --tenant {tenant} --provider {provider}",
                "hold the burst's sender",
                "429 storm",
            ),
        ),
        recovery=(
            act(
                "sluice limits clear concurrency --provider {provider}",
                "back to normal",
                "429s stopped",
            ),
            act(
                "sluice resume --tenant {tenant} --provider {provider}",
                "send the backlog",
                "429s stopped",
            ),
        ),
        verification=(THROTTLES, QUEUE),
        escalation=("Never clear throttles to go faster: they are the provider's word.",),
        follow_ups=("Set a rate limit under the provider's, so 429s are the exception.",),
    ),
    Runbook(
        id="dependency-outage",
        title="Upstream dependency down: fall back, stop auto-replies",
        source="004#1.4",
        summary="What decides a send (a classifier, an upstream service) is down: route "
        "the safe way and stop automatic replies until it is back.",
        diagnosis=(FAILURES, BREAKERS, FAILOVER),
        containment=(
            act(
                "sluice controls set shadow --action {action}",
                "record what auto-replies would do, send none",
                "dependency down",
            ),
        ),
        recovery=(
            act("sluice controls clear --action {action}", "auto-replies again", "dependency back"),
        ),
        verification=(FAILURES,),
        escalation=("Ask the dependency's owner for an estimate.",),
        follow_ups=("Is the fallback path exercised regularly?",),
    ),
    Runbook(
        id="partial-side-effects",
        title="Partial side effects",
        source="004#1.5",
        summary="Of one correlation's steps some went out and others died: re-run the "
        "missing ones only (their idempotency keys keep the rest from going twice).",
        diagnosis=(PARTIAL, DEAD),
        containment=(
            look("sluice messages list --status dead --since {since}", "the steps that did not go"),
        ),
        recovery=(
            dry(
                "sluice dlq retry --since {since} --error-code {error_code}",
                "what a re-run would requeue",
            ),
            act(
                "sluice dlq retry --since {since} --error-code {error_code}",
                "re-run the missing steps",
                "re-running partial side effects",
            ),
        ),
        verification=(PARTIAL,),
        escalation=("Tell the tenant which customers got half a flow.",),
        follow_ups=("Could the steps be ordered so a failure leaves nothing half done?",),
    ),
    # -- seed 000: the scope revocation postmortem -----------------------------------------
    Runbook(
        id="scope-revoked",
        title="OAuth scope revoked",
        source="000#remediation",
        summary="A tenant's admin removed a scope; sends needing it are refused with 403 "
        "and pile up as dead letters unless held.",
        diagnosis=(AUTH, CONNECTIONS, DEAD, HELD, TENANTS),
        containment=(
            act(
                "sluice pause --tenant {tenant} --provider {provider}",
                "stop new attempts for the tenant",
                "scope revoked",
            ),
            look(
                "sluice connections check --tenant {tenant} --provider {provider}",
                "which scopes the token still has",
            ),
        ),
        recovery=(
            act(
                "sluice connections rotate --tenant {tenant} --provider {provider} "
                "--credentials-file new-credentials.json",
                "the re-authorised token, with the scope",
                "scope restored",
            ),
            dry(
                "sluice dlq retry --tenant {tenant} --error-code SCOPE_MISSING",
                "the dead letters the scope caused",
            ),
            act(
                "sluice dlq retry --tenant {tenant} --error-code SCOPE_MISSING",
                "requeue them",
                "scope restored",
            ),
            act(
                "sluice resume --tenant {tenant} --provider {provider}",
                "send again",
                "scope restored",
            ),
        ),
        verification=(AUTH, DEAD),
        escalation=("The tenant's admin must grant the scope again.",),
        follow_ups=("Alert on scopes before they are missing, not after.",),
    ),
)

#: Seed sections with no runbook here, and why.
NOT_COVERED: dict[str, str] = {
    "003#RB-06": "browser runners and selectors: Sluice drives no browser",
}
