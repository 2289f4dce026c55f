"""`credits demo`: replay the story (adapters.cli.story) on a database, then show the
books it left: what happened, balances per period, a statement excerpt, outcomes."""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Iterable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from adapters import bootstrap
from adapters.bootstrap import DEMO_DATABASE_URL, Settings
from adapters.cli import render, story
from adapters.cli.replay import (
    DemoRun,
    StatementLine,
    grouped_statement,
    log_lines,
    period_rows,
    replay,
    verdict_label,
)
from adapters.cli.story import Step
from adapters.cli.support import DbOption, db_hint, reported, wired
from adapters.clock import ManualClock
from adapters.webhooks import MemoryEndpointStore, register
from adapters.webhooks.receiver import DemoReceiver
from credits_domain import Channel, CreditService, ItemResult, Operation, Outcome, Verdict
from credits_domain.errors import invariant

EXCERPT_ROLE = "acme"  # whose statement the demo prints
EXCERPT_PERIODS = (0, 1)


def demo(db: DbOption = DEMO_DATABASE_URL) -> None:
    """Replay five months of five accounts, then show the books.

    Five accounts on the shipped plans, January to May 2025, on a scripted clock with
    the in-memory ScriptedVerifier: no real verification, nothing leaves this machine
    (the team's webhooks go to a receiver the demo runs on 127.0.0.1).
    The database (credits-demo.db here unless --db says otherwise, apart from the
    other commands' credits.db) is created (or upgraded) first; on one that holds an
    earlier run, the accounts get a suffix (acme-2, ...).
    """
    console = render.console()
    plot = story.story()
    clock = ManualClock(story.START)
    settings = Settings(database_url=db, migrate=True, verifier_script=plot.script)
    with (
        reported(),
        wired(settings, clock=clock) as wiring,
        DemoReceiver(clock.now) as receiver,
    ):
        cast = story.free_cast(wiring.repository)
        console.rule("[bold]credits demo")
        console.print(
            f"Five accounts on the shipped plans, {story.START:%d %b %Y} to "
            f"{story.END:%d %b %Y}, replayed on a scripted clock (ManualClock)."
        )
        console.print(
            "Verifier: ScriptedVerifier, in memory, with scripted verdicts "
            "(no real verification; nothing leaves this machine)."
        )
        console.print(f"Database: {bootstrap.describe_database(db)}")
        if cast.run > 1:
            console.print(
                f"This database holds earlier demo runs; this is run {cast.run}, with the "
                f"accounts {', '.join(cast.names)}."
            )
        # The team's endpoint lives in memory, for this run only: a delivery pass sends
        # nothing to the endpoints the database may hold.
        hooks = MemoryEndpointStore()
        endpoint = register(
            hooks,
            cast.name(story.TEAM_ROLE),
            receiver.url,
            at=clock.now(),
            random_bytes=secrets.token_bytes,
        )
        receiver.secret = endpoint.secret
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("contacts"),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            task = progress.add_task("Replaying", total=plot.size)

            def advance(step: Step) -> None:
                progress.update(task, advance=step.size)

            run = replay(wiring.service, clock, cast, plot, advance)
        _print_log(console, run)
        _print_periods(console, run)
        _print_excerpt(console, run)
        _print_team(console, run)
        _print_webhooks(console, run, hooks, receiver, clock)
        _print_outcomes(console, run)
        _print_final(console, run)
        acme = cast.name(EXCERPT_ROLE)
        console.print(
            f"\nLook again: [bold]credits balance {acme}{db_hint(db)}[/], "
            f"[bold]credits statement {acme} --period 1{db_hint(db)}[/]. Those commands "
            "read on the real clock, so the renewals due since the story ended are applied "
            "when you look (R4, R5)."
        )


def _print_log(console: Console, run: DemoRun) -> None:
    table = render.table("What happened")
    table.add_column("When (UTC)", no_wrap=True)
    table.add_column("Account", no_wrap=True)
    table.add_column("Event", overflow="fold")
    table.add_column("Result", overflow="fold")
    table.add_column("Rules", no_wrap=True)
    for line in log_lines(run.happened):
        table.add_row(render.when(line.at), line.account, line.title, line.note, line.rules)
    console.print(table)


def _print_periods(console: Console, run: DemoRun) -> None:
    console.print(
        "[bold]Balances per billing period[/], from the ledger (R21); forfeits at a period's "
        "end (lapse, R6) close that period."
    )
    for account in run.cast.names:
        table = render.table(account)
        for name in ("Period", "Plan", "Pool"):
            table.add_column(name)  # text may wrap on a narrow screen; numbers never do
        for name in ("Opening", "Granted", "Used", "Refund", "Forfeit", "Closing"):
            table.add_column(name, justify="right", no_wrap=True)
        for row in period_rows(run.service, account):
            first = row.pool is Channel.EMAIL
            table.add_row(
                f"{row.index} {row.period.start:%b %d}" if first else "",
                " → ".join(row.plans) if first else "",
                row.pool.value,
                render.n(row.carried_in),
                render.n(row.granted),
                render.n(row.used),
                render.n(row.refunded),
                render.n(row.forfeited),
                render.n(row.closing),
            )
        console.print(table)


def _print_excerpt(console: Console, run: DemoRun) -> None:
    account = run.cast.name(EXCERPT_ROLE)
    lines = [
        line
        for index in EXCERPT_PERIODS
        for line in grouped_statement(run.service, account, run.service.period(account, index))
    ]
    title = (
        f"Statement of {account}, periods {EXCERPT_PERIODS[0]} and {EXCERPT_PERIODS[-1]} "
        "(the entries of one request taken together)"
    )
    console.print(_statement_table(title, lines))


def _statement_table(title: str, lines: Iterable[StatementLine]) -> Table:
    table = render.table(title)
    table.add_column("When (UTC)", no_wrap=True)
    table.add_column("Entry", no_wrap=True)
    table.add_column("Pool", no_wrap=True)
    table.add_column("Count", justify="right", no_wrap=True)
    table.add_column("Amount", justify="right", no_wrap=True)
    table.add_column("Balance", justify="right", no_wrap=True)
    table.add_column("Detail", overflow="fold")
    for line in lines:
        table.add_row(
            render.when(line.at),
            f"{line.kind.value} ({line.operation.value})",
            line.pool.value,
            render.n(line.count),
            render.signed(line.amount),
            render.n(line.balance_after),
            line.detail,
        )
    return table


_OUTCOME_LABELS = {
    Outcome.CHARGED: "charged: verified and new",
    Outcome.ALREADY_OWNED: "already owned: free (R12)",
    Outcome.DUPLICATE_IN_REQUEST: "repeated in the request: free (R12)",
    Outcome.INSUFFICIENT_CREDITS: "beyond the balance: not revealed (R15)",
    Outcome.MEMBER_ALLOWANCE_EXCEEDED: "beyond the member's allowance: not revealed (R22)",
}


def _not_verified_label(verdict: Verdict | None) -> str:
    name = "no verdict" if verdict is None else verdict_label(verdict)
    return f"not verified ({name}): free (R10)"


def _outcome_label(item: ItemResult) -> str:
    if item.outcome is Outcome.NOT_VERIFIED:
        return _not_verified_label(item.verdict)
    return _OUTCOME_LABELS[item.outcome]


def _print_outcomes(console: Console, run: DemoRun) -> None:
    operations = (Operation.UNLOCK, Operation.EXPORT, Operation.ENRICH)
    counts: Counter[tuple[str, Operation]] = Counter()
    for happened in run.happened:
        if happened.result is not None:
            for item in happened.result.items:
                counts[_outcome_label(item), happened.result.operation] += 1
    rows = [
        _OUTCOME_LABELS[Outcome.CHARGED],
        _OUTCOME_LABELS[Outcome.ALREADY_OWNED],
        _OUTCOME_LABELS[Outcome.DUPLICATE_IN_REQUEST],
        *(_not_verified_label(v) for v in Verdict if v is not Verdict.VALID),
        _OUTCOME_LABELS[Outcome.INSUFFICIENT_CREDITS],
        _OUTCOME_LABELS[Outcome.MEMBER_ALLOWANCE_EXCEEDED],
    ]
    table = render.table("What became of the contacts asked for")
    table.add_column("Outcome")
    for operation in operations:
        table.add_column(operation.value, justify="right")
    table.add_column("total", justify="right")
    for row in rows:
        found = [counts[row, operation] for operation in operations]
        if any(found):
            table.add_row(row, *map(render.n, found), render.n(sum(found)))
    console.print(table)


def _print_final(console: Console, run: DemoRun) -> None:
    table = render.table(f"Balances at the end of the story, {render.when(story.END)}")
    table.add_column("Account")
    table.add_column("Plan")
    table.add_column("Status")
    table.add_column("Email", justify="right")
    table.add_column("Mobile", justify="right")
    for account in run.cast.names:
        balance = run.balances[account]
        table.add_row(
            account,
            run.plans[account],
            run.statuses[account],
            render.n(balance.email),
            render.n(balance.mobile),
        )
    console.print(table)


def _print_team(console: Console, run: DemoRun) -> None:
    """The team's month: its statement with members and grants, usage, the guarantee."""
    account = run.cast.name(story.TEAM_ROLE)
    period = run.service.period(account, 0)
    title = f"Statement of {account}, period 0 (the member who charged; the grant drawn on)"
    console.print(_statement_table(title, grouped_statement(run.service, account, period)))
    usage = render.table(f"Members of {account}, period 0 (R22)")
    usage.add_column("Member")
    usage.add_column("Allowance (email)", justify="right")
    usage.add_column("Used (email)", justify="right")
    for member in story.MEMBERS:
        allowance = story.BEN_ALLOWANCE.email if member == "ben" else None
        used = run.service.member_usage(account, member, period)
        usage.add_row(
            member, "none" if allowance is None else render.n(allowance), render.n(used.email)
        )
    console.print(usage)
    _print_guarantee(console, run.service, account)


def _print_guarantee(console: Console, service: CreditService, account: str) -> None:
    table = render.table(f"Deliverability guarantee of {account} (R25: at most 1% bounces)")
    table.add_column("Period")
    for name in ("Emails charged", "Bounces", "Bounce rate"):
        table.add_column(name, justify="right")
    table.add_column("Guarantee")
    for index in range(len(story.PERIOD_STARTS)):
        report = service.guarantee(account, service.period(account, index))
        table.add_row(
            f"{index} {report.period.start:%b %d}",
            render.n(report.emails_charged),
            render.n(report.bounces),
            f"{report.bounce_rate:.2%}",
            "breached" if report.breached else "kept",
        )
    console.print(table)


def _print_webhooks(
    console: Console,
    run: DemoRun,
    hooks: MemoryEndpointStore,
    receiver: DemoReceiver,
    clock: ManualClock,
) -> None:
    try:
        from adapters.webhooks.delivery import DeliveryLimits, deliver_pass, new_client
    except ImportError:  # delivery needs the `http` extra (httpx); the rest of the demo not
        console.print(
            "Webhooks: not delivered; delivery needs the http extra "
            "(pip install 'credits-domain[http]')."
        )
        return
    limits = DeliveryLimits(max_events=story.MAX_TEAM_EVENTS, timeout_s=5.0)
    with new_client(limits.timeout_s) as client:
        report = deliver_pass(
            store=hooks,
            source=run.service,
            client=client,
            clock=clock,
            draw=lambda: 0.5,  # jitter, used only after a failure
            limits=limits,
        )
    account = run.cast.name(story.TEAM_ROLE)
    (endpoint,) = hooks.endpoints(account)
    invariant(endpoint.last_seq == len(receiver.got), "demo: the receiver got every event")
    table = render.table(
        f"Webhooks of {account} as its receiver on 127.0.0.1 got them "
        f"(one delivery pass: {report.delivered} delivered, {report.failed} failed)"
    )
    table.add_column("Seq", justify="right")
    table.add_column("Type")
    table.add_column("webhook-id", no_wrap=True)
    table.add_column("Signature")
    for got in receiver.got:
        table.add_row(str(got.seq), got.type, got.webhook_id, "verified" if got.verified else "BAD")
    console.print(table)
    console.print(
        "The endpoint: http://127.0.0.1:PORT/hooks (an ephemeral port), signed with a fresh "
        "secret (whsec_..., not shown); webhook-id is the event's id, the same on every "
        "retry (R24)."
    )
