"""The `credits` command against real SQLite files (typer's CliRunner, and one subprocess).

The demo's expected balances are computed here from the story as told (plans' allowances,
the charges of each step), not copied from its output.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from adapters.cli.main import app as cli_app
from adapters.clock import ManualClock
from adapters.sql import SchemaOutOfDate, SqlRepository, schema_head, upgrade
from adapters.sql.errors import DatabaseNotFound
from adapters.verifier import NoVerifier, VerifierNotConfigured
from credits_domain import PLANS, Contact, CreditsError, CreditService

WIDE = {"COLUMNS": "220"}  # rich wraps tables at the terminal's width; keep rows on one line
STORY_END = datetime(2025, 5, 12, 9, 0, tzinfo=UTC)
ANCHOR = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)  # every demo account subscribes then
RENEWAL_EMAIL = ["grant", "(renewal)", "email"]  # a row of the demo's statement excerpt


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli_app, list(args), env=WIDE)
    return result.exit_code, result.stdout, result.stderr


def url_of(path: Path) -> str:
    return f"sqlite:///{path}"


def cells(output: str, title: str, first: str) -> list[str]:
    """The words of the first row starting with `first` after the line that has `title`.

    Tables are printed without vertical rules: a row's cells are its words, as long as
    the cells looked at hold one word each (numbers, names).
    """
    tail = output[output.index(title) :]
    for line in tail.splitlines():
        words = line.split()
        if words and words[0] == first:
            return words
    raise AssertionError(f"no row for {first!r} under {title!r}")


def entry_rows(output: str, kind: str) -> list[list[str]]:
    """Statement rows of one kind: seq, date, time, kind, cause, pool, amount, balance."""
    return [w for w in (line.split() for line in output.splitlines()) if w[3:4] == [kind]]


def n(text: str) -> int:
    return int(text.replace(",", ""))


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A database the demo ran on once, and what the demo printed."""
    url = url_of(tmp_path_factory.mktemp("demo") / "credits.db")
    code, out, err = invoke("demo", "--db", url)
    assert code == 0, err
    return url, out


# -- the story, told as arithmetic ------------------------------------------------------


def expected_final() -> dict[str, tuple[int, int]]:
    """Each demo account's (email, mobile) at the story's end, 12 May 2025 (in period 4)."""
    ignite, boost, power = (PLANS[name].monthly for name in ("ignite", "boost", "power"))
    periods = 5  # Jan 6, Feb 6, Mar 6, Apr 6, May 6 (R3, R4); credits roll over (R5)

    # acme, boost: period 0 uses exactly 7,500 email credits (docs/rules.md's rollover example)
    # and 50 + 18 mobiles; then 1,000 emails + 100 mobiles, a bounce refunded (+1, R18),
    # 480 emails + 54 mobiles (20 and 6 invalid, R10), an export of 300 new emails.
    acme = (
        periods * boost.email - (7_500 + 1_000 - 1 + 480 + 300),
        periods * boost.mobile - (50 + 18 + 100 + 54),
    )
    # globex, power, downgraded to boost in period 1: boost grants from period 2 (R7).
    globex = (
        2 * power.email + 3 * boost.email - (580 + 400 + 200),
        2 * power.mobile + 3 * boost.mobile - 60,
    )
    # northwind, ignite, upgraded to power on Feb 20 09:00, 14 of period 1's 28 days left:
    # the difference pro-rated, rounded down (R7); power grants from period 2.
    left, length = timedelta(days=14), timedelta(days=28)
    northwind = (
        2 * ignite.email
        + (power.email - ignite.email) * left // length
        + 3 * power.email
        - (300 + 800),
        2 * ignite.mobile + (power.mobile - ignite.mobile) * left // length + 3 * power.mobile - 30,
    )
    # initech cancelled in period 1 and lapsed on Mar 6: a lapsed account reads zero (R6).
    # hooli, ignite, a team: a promo grant of 500 (R23), 120 + 100 + 50 emails charged to
    # its members (R22), 230 of the grant expired, 3 bounces refunded (R18); 100 mobiles.
    hooli = (
        periods * ignite.email + 500 - (120 + 100 + 50) - 230 + 3,
        periods * ignite.mobile - 100,
    )
    return {
        "acme": acme,
        "globex": globex,
        "initech": (0, 0),
        "northwind": northwind,
        "hooli": hooli,
    }


def boundaries(anchor: datetime, after: datetime, now: datetime) -> int:
    """Monthly boundaries of `anchor` (same day and time, R4) in (after, now].

    The test's anchors fall on days every month has, so no clamping is needed here.
    """
    count = 0
    for months in range(1, 12 * 100):
        years, month0 = divmod(anchor.month - 1 + months, 12)
        boundary = anchor.replace(year=anchor.year + years, month=month0 + 1)
        if boundary > now:
            return count
        if boundary > after:
            count += 1
    raise AssertionError("a century of renewals")


# -- demo --------------------------------------------------------------------------------


def test_demo_prints_the_final_balances_the_story_implies(demo_db: tuple[str, str]) -> None:
    _, out = demo_db
    for account, (email, mobile) in expected_final().items():
        row = cells(out, "Balances at the end of the story", account)
        assert (n(row[3]), n(row[4])) == (email, mobile), row
    assert cells(out, "Balances at the end of the story", "initech")[2] == "lapsed"


def test_demo_shows_the_rulebook_examples(demo_db: tuple[str, str]) -> None:
    _, out = demo_db
    # R5's worked example: 12,000 - 7,500 + 12,000, as acme's first renewal grant leaves it.
    renewals = [w for w in map(str.split, out.splitlines()) if w[2:5] == RENEWAL_EMAIL]
    assert renewals[0][-1] == "16,500"  # the balance after acme's first renewal grant
    assert "8 email charged; not verified: 2 invalid" in out  # 10 contacts, 2 invalid
    assert "7 email charged; 1 already owned; not verified: 2 invalid" in out


def test_demo_tells_the_team_story(demo_db: tuple[str, str]) -> None:
    """hooli: members and an allowance (R22), an expiring promo grant (R23), a low-balance
    webhook arriving at the demo's receiver (R24), a guarantee report (R25)."""
    _, out = demo_db
    assert "100 email charged; 30 beyond the member's allowance" in out  # ben, at 100
    assert "ana unlocks 50 more: the team pool still pays for her" in out
    assert "50 email charged" in out.split("ana unlocks 50 more", 1)[1].splitlines()[0]
    statement = out.split("Statement of hooli, period 0", 1)[1].split("Members of hooli", 1)[0]
    charges = [
        w for w in map(str.split, statement.splitlines()) if w[2:4] == ["charge", "(unlock)"]
    ]
    assert [(w[5], w[8:]) for w in charges] == [
        ("120", ["member", "ana;", "grant", "#2"]),
        ("100", ["member", "ben;", "grant", "#2"]),
        ("50", ["member", "ana;", "grant", "#2"]),
        ("100", ["member", "ana"]),
    ]
    assert "promo; grant #2, expires Jan 20 09:00" in statement
    (expired,) = [w for w in map(str.split, statement.splitlines()) if w[2:3] == ["expire"]]
    assert expired[6:9] == ["-230", "5,000", "grant"]
    assert cells(out, "Members of hooli", "ben")[1:] == ["100", "99"]  # a bounce gave 1 back
    assert cells(out, "Members of hooli", "ana")[1:] == ["none", "168"]
    assert cells(out, "Deliverability guarantee of hooli", "0")[3:] == [
        "270", "3", "1.11%", "breached",
    ]  # fmt: skip
    hooks = out.split("Webhooks of hooli as its receiver on 127.0.0.1 got them", 1)[1]
    assert hooks.splitlines()[0].strip() == "(one delivery pass: 10 delivered, 0 failed)"
    rows = [w for w in map(str.split, hooks.splitlines()) if w[:1] and w[0].isdigit()][:10]
    assert [(r[0], r[1], r[-1]) for r in rows[:2]] == [
        ("1", "credits.low", "verified"),
        ("2", "grant.expired", "verified"),
    ]
    assert [r[0] for r in rows] == [str(i) for i in range(1, 11)]
    assert all(r[2].startswith("evt_") and r[-1] == "verified" for r in rows)
    assert "guarantee.breached" in [r[1] for r in rows]
    assert re.search(r"whsec_[A-Za-z0-9+/]", out) is None  # the secret is never printed
    assert "beyond the member's allowance: not revealed (R22)" in out


def test_demo_prints_the_same_story_on_every_fresh_database(
    demo_db: tuple[str, str], tmp_path: Path
) -> None:
    """Deterministic: a scripted clock, fixed data; the webhook secret and the receiver's
    port, which vary, are never printed (only the progress bar's elapsed time varies)."""
    url, out = demo_db
    other = url_of(tmp_path / "again.db")
    code, again, err = invoke("demo", "--db", other)
    assert code == 0, err

    def same(text: str, db: str) -> str:
        path = str(Path(db.removeprefix("sqlite:///")).resolve())
        text = re.sub(r"\b\d+:\d\d:\d\d\b", "ELAPSED", text)  # the progress bar's time
        return " ".join(text.replace(path, "DB").replace(db, "URL").split())  # paths wrap

    assert same(again, other) == same(out, url)


def test_demo_says_which_verifier_and_where_the_database_is(demo_db: tuple[str, str]) -> None:
    url, out = demo_db
    assert "ScriptedVerifier" in out
    assert str(Path(url.removeprefix("sqlite:///")).resolve()) in out


def test_demo_runs_again_on_the_same_database_under_new_names(demo_db: tuple[str, str]) -> None:
    """A second run on the demo's database (it only adds accounts: acme-2, ...)."""
    url, _ = demo_db
    code, out, err = invoke("demo", "--db", url)
    assert code == 0, err
    assert "run 2" in out
    email, mobile = expected_final()["acme"]
    row = cells(out, "Balances at the end of the story", "acme-2")
    assert (n(row[3]), n(row[4])) == (email, mobile)


@pytest.mark.postgres
def test_demo_on_postgresql(postgres_url: str) -> None:
    code, out, err = invoke("demo", "--db", postgres_url)
    assert code == 0, err
    for account, (email, mobile) in expected_final().items():
        row = cells(out, "Balances at the end of the story", account)
        assert (n(row[3]), n(row[4])) == (email, mobile), row
    code, out, err = invoke("statement", "initech", "--db", postgres_url)
    assert code == 0, err
    assert [row[6] for row in entry_rows(out, "forfeit")] == ["-9,860", "-333"]


# -- reading a demo account -------------------------------------------------------------


def test_balance_of_a_lapsed_demo_account_reads_zero(demo_db: tuple[str, str]) -> None:
    url, _ = demo_db
    code, out, err = invoke("balance", "initech", "--db", url)
    assert code == 0, err
    assert "lapsed" in out
    assert n(cells(out, "initech", "email")[1]) == 0
    assert n(cells(out, "initech", "mobile")[1]) == 0


def test_balance_applies_the_renewals_due_since_the_story(demo_db: tuple[str, str]) -> None:
    """`balance` reads on the real clock: every month since May 2025 granted 800 mobiles."""
    url, _ = demo_db
    before = boundaries(ANCHOR, STORY_END, datetime.now(UTC))
    code, out, err = invoke("balance", "acme", "--db", url)
    after = boundaries(ANCHOR, STORY_END, datetime.now(UTC))
    assert code == 0, err
    email, mobile = expected_final()["acme"]
    boost = PLANS["boost"].monthly
    shown = (n(cells(out, "acme", "email")[1]), n(cells(out, "acme", "mobile")[1]))
    # Two candidates only if a period boundary passed during the call itself.
    assert shown in {(email + k * boost.email, mobile + k * boost.mobile) for k in (before, after)}


def test_statement_of_one_period(demo_db: tuple[str, str]) -> None:
    url, _ = demo_db
    code, out, err = invoke("statement", "acme", "--period", "1", "--db", url)
    assert code == 0, err
    # Period 1: two renewal grants, 1,000 + 100 charges, one bounce refund.
    assert "1,103 entries" in out
    assert [row[7] for row in entry_rows(out, "grant")] == ["16,500", "1,532"]
    assert [row[6] for row in entry_rows(out, "refund")] == ["+1"]
    assert len(entry_rows(out, "charge")) == 1_100


def test_statement_of_all_periods_streams_every_entry(demo_db: tuple[str, str]) -> None:
    url, _ = demo_db
    code, out, err = invoke("statement", "initech", "--db", url)
    assert code == 0, err
    # 4 grants, 333 + 120 + 20 charges, 2 forfeits at the lapse (R6).
    assert "479 entries" in out
    assert [row[6] for row in entry_rows(out, "forfeit")] == ["-9,860", "-333"]


# -- errors: one line on stderr, a non-zero exit ----------------------------------------


def assert_one_line_error(code: int, out: str, err: str, *needles: str) -> None:
    assert code != 0
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err + out
    for needle in needles:
        assert needle in err


def test_unknown_account(demo_db: tuple[str, str]) -> None:
    url, _ = demo_db
    assert_one_line_error(*invoke("balance", "nobody", "--db", url), "'nobody'")
    assert_one_line_error(*invoke("statement", "nobody", "--db", url), "'nobody'")


def db_files(path: Path) -> list[Path]:
    """The file of an SQLite database and its companions (WAL, shared memory, journal)."""
    return [path.with_name(path.name + suffix) for suffix in ("", "-wal", "-shm", "-journal")]


READ_ONLY_COMMANDS = [
    ["balance", "acme"],
    ["statement", "acme"],
    ["statement", "acme", "--period", "0"],
    ["renew-due"],
    ["keys", "revoke", "0123456789abcdef"],
    ["serve", "--demo-verifier"],
]


@pytest.mark.parametrize("command", READ_ONLY_COMMANDS, ids=" ".join)
def test_reading_commands_never_create_the_database(tmp_path: Path, command: list[str]) -> None:
    path = (tmp_path / "typo.db").resolve()
    url = url_of(path)
    assert_one_line_error(
        *invoke(*command, "--db", url),
        f"there is no database at {path}",
        f"run `credits db upgrade --db {url}`",
    )
    assert [p for p in db_files(path) if p.exists()] == []


def test_a_missing_database_is_refused_without_creating_it(tmp_path: Path) -> None:
    """The adapter itself, for library callers: a SchemaOutOfDate that creates nothing."""
    path = tmp_path / "typo.db"
    with pytest.raises(DatabaseNotFound) as raised:
        SqlRepository.connect(url_of(path))
    assert isinstance(raised.value, SchemaOutOfDate)  # callers who upgrade on it still do
    assert raised.value.current == ()
    assert "\n" not in str(raised.value)
    assert [p for p in db_files(path) if p.exists()] == []
    # A URI names its own mode: SQLite, not this check, decides (here: read-only, refused).
    uri = f"sqlite:///file:{path}?mode=ro&uri=true"
    with pytest.raises(CreditsError) as raised_uri:
        SqlRepository.connect(uri)
    assert not isinstance(raised_uri.value, DatabaseNotFound)
    assert not path.exists()


HEAD = ", ".join(schema_head())


def test_upgrade_creates_a_new_database_then_finds_it_up_to_date(tmp_path: Path) -> None:
    path = (tmp_path / "new.db").resolve()
    url = url_of(path)
    code, out, err = invoke("db", "upgrade", "--db", url)
    assert (code, out) == (0, f"SQLite file {path}: created, with the schema at revision {HEAD}.\n")
    code, out, err = invoke("db", "upgrade", "--db", url)
    assert code == 0, err
    assert out == f"SQLite file {path}: the schema was up to date already (revision {HEAD}).\n"
    code, out, err = invoke("renew-due", "--db", url)
    assert (code, out.strip()) == (0, "Renewed 0 accounts."), err
    assert_one_line_error(*invoke("balance", "acme", "--db", url), "'acme'", "subscribe")


def test_an_empty_database_file_asks_for_the_upgrade(tmp_path: Path) -> None:
    path = (tmp_path / "empty.db").resolve()
    path.touch()  # as another tool, or an older version of this one, may leave it
    url = url_of(path)
    for command in (["balance", "acme"], ["statement", "acme"], ["renew-due"]):
        assert_one_line_error(
            *invoke(*command, "--db", url), "revision none (empty database)", "credits db upgrade"
        )
    code, out, err = invoke("db", "upgrade", "--db", url)
    assert code == 0, err
    assert out == (
        f"SQLite file {path}: the database was empty; created the schema at revision {HEAD}.\n"
    )


def test_outdated_database_asks_for_the_upgrade(tmp_path: Path) -> None:
    url = url_of(tmp_path / "old.db")
    upgrade(url, revision="+1")  # the first revision only
    assert_one_line_error(*invoke("balance", "acme", "--db", url), "credits db upgrade")
    assert invoke("db", "upgrade", "--db", url)[0] == 0
    assert_one_line_error(*invoke("balance", "acme", "--db", url), "'acme'")


def test_upgrade_says_from_which_revision(tmp_path: Path) -> None:
    path = (tmp_path / "old.db").resolve()
    url = url_of(path)
    upgrade(url, revision="0002")
    assert HEAD != "0002"
    code, out, err = invoke("db", "upgrade", "--db", url)
    assert code == 0, err
    assert out == f"SQLite file {path}: upgraded the schema from revision 0002 to {HEAD}.\n"


@pytest.mark.parametrize(
    "url",
    [
        "not a url",
        "mysql://root@127.0.0.1/credits",
        "sqlite:////no/such/directory/credits.db",
        "postgresql+psycopg://postgres@127.0.0.1:1/credits",  # nothing listens on port 1
    ],
)
def test_a_bad_or_unreachable_database_is_one_line(url: str) -> None:
    assert_one_line_error(*invoke("balance", "acme", "--db", url))


def test_no_verifier_refuses_to_verify() -> None:
    with pytest.raises(VerifierNotConfigured):
        NoVerifier().verify([Contact.email("ann@corp.com")])


# -- renew-due ---------------------------------------------------------------------------


def test_renew_due_renews_each_due_account_once(tmp_path: Path) -> None:
    url = url_of(tmp_path / "due.db")
    long_ago = datetime(2024, 1, 15, tzinfo=UTC)
    repository = SqlRepository.connect(url, migrate=True)
    try:
        service = CreditService(
            repository=repository, verifier=NoVerifier(), clock=ManualClock(long_ago)
        )
        service.subscribe("due", "ignite")
    finally:
        repository.close()
    code, out, err = invoke("renew-due", "--db", url)
    assert (code, out.strip()) == (0, "Renewed 1 account."), err
    code, out, err = invoke("renew-due", "--db", url)
    assert (code, out.strip()) == (0, "Renewed 0 accounts."), err  # nothing granted twice
    before = boundaries(long_ago, long_ago, datetime.now(UTC))
    code, out, _ = invoke("balance", "due", "--db", url)
    after = boundaries(long_ago, long_ago, datetime.now(UTC))
    ignite = PLANS["ignite"].monthly.email
    assert n(cells(out, "due", "email")[1]) in {ignite * (1 + k) for k in (before, after)}


# -- the entry point ---------------------------------------------------------------------


def run_module(*args: str) -> subprocess.CompletedProcess[str]:
    """`python -m adapters.cli ARGS`: the entry point the console script calls."""
    return subprocess.run(
        [sys.executable, "-m", "adapters.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **WIDE},
        timeout=60,
        check=False,
    )


def listed_commands(help_text: str) -> list[str]:
    """The command names under a help page's "Commands:" heading."""
    section = help_text.split("\nCommands:\n", 1)[1].split("\n\n", 1)[0]
    return [line.split()[0] for line in section.splitlines() if line.startswith("  ")]


def test_python_dash_m_runs_the_command(tmp_path: Path) -> None:
    done = run_module("balance", "x", "--db", url_of(tmp_path / "e.db"))
    assert_one_line_error(done.returncode, done.stdout, done.stderr, "credits db upgrade")
    helped = run_module("--help")
    assert helped.returncode == 0
    assert listed_commands(helped.stdout) == [
        "accounts",
        "balance",
        "statement",
        "guarantee",
        "events",
        "threshold",
        "subscribe",
        "change-plan",
        "cancel",
        "pause",
        "resume",
        "top-up",
        "unlock",
        "export",
        "enrich",
        "bounce",
        "renew-due",
        "demo",
        "serve",
        "conformance",
        "keys",
        "members",
        "webhooks",
        "db",
    ]


def test_version_names_the_installed_distribution() -> None:
    expected = f"credits-domain {metadata.version('credits-domain')}\n"
    assert invoke("--version") == (0, expected, "")
    done = run_module("--version")  # answered before the command is even imported
    assert (done.returncode, done.stdout, done.stderr) == (0, expected, "")


# -- help pages ----------------------------------------------------------------------------


def command_tree() -> list[tuple[list[str], Any]]:
    """Every command and group of `credits`, with its path of names ([] for `credits`)."""
    found: list[tuple[list[str], Any]] = []

    def walk(command: Any, path: list[str]) -> None:
        found.append((path, command))
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, [*path, name])

    walk(typer.main.get_command(cli_app), [])
    return found


COMMANDS = command_tree()


@pytest.mark.parametrize(
    ("path", "command"), COMMANDS, ids=[" ".join(["credits", *p]) for p, _ in COMMANDS]
)
def test_every_help_page_reads_as_a_person_types(path: list[str], command: Any) -> None:
    code, out, err = invoke(*path, "--help")
    assert code == 0, err
    usage = f"Usage: {' '.join(['credits', *path])} [OPTIONS]"
    assert out.startswith(usage), out
    # No Python types (<bool>, <str>, <int range>) and no braces round argument names.
    assert re.findall(r"<[a-z][a-z |_\[\]]*>|\{\w+\}", out) == []
    arguments = [p for p in command.params if p.param_type_name == "argument"]
    for argument in arguments:
        name = argument.metavar
        assert name is not None and name.isupper(), argument.name
        usage_line = out.splitlines()[0]
        assert f" {name}" in usage_line or f" [{name}]" in usage_line
    # Every command says what it does, every argument and option what it is for.
    assert command.help, path
    undocumented = [p.name for p in command.params if not p.help]
    assert undocumented == []
    if hasattr(command, "commands"):
        assert listed_commands(out) == list(command.commands)


def test_missing_arguments_name_them_as_the_help_does() -> None:
    code, _, err = invoke("balance")
    assert code == 2
    assert "Missing argument 'ACCOUNT'" in err
    assert "Usage: credits balance [OPTIONS] ACCOUNT" in err
