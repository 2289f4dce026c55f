"""Every `credits` command an operator uses, through the real entry point (Typer's
CliRunner) on a real SQLite file, at a clock the test sets: what each prints for people
and for scripts (--format csv|json), its exit status, and its limits.

Charging goes through the real verifier client (`--verifier-url`) against
tests/verification_server.py, which answers by the address: invalid* fails, the rest
passes.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from adapters.cli.reading import MAX_STATEMENT_ENTRIES
from cli_support import Cli, new_cli
from credits_domain import CreditService
from credits_domain.limits import MAX_ACCOUNTS_PAGE, MAX_API_KEYS_PAGE
from verification_server import VerificationServer


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    return new_cli(tmp_path, monkeypatch)


@pytest.fixture(scope="module")
def verifier() -> Iterator[str]:
    with VerificationServer() as server:
        yield server.url


def rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


# -- the command itself ------------------------------------------------------------------


def test_help_lists_the_exit_statuses(cli: Cli) -> None:
    out = cli.run("--help", db=False).out
    statuses = out.split("\nExit status:\n", 1)[1]
    assert [line.split()[0] for line in statuses.splitlines() if line[2:3].isdigit()] == [
        "0",
        "1",
        "2",
        "130",
    ]


def test_usage_errors_exit_2_and_refusals_exit_1(cli: Cli) -> None:
    assert cli.run("balance", "acme", "--no-such-option").code == 2
    assert cli.run("accounts", "--limit", "0").code == 2
    assert cli.run("top-up", "acme", "--email", "5").code == 2  # no --reason
    refused = cli.run("balance", "acme")
    assert refused.code == 1
    assert refused.error_line() == (
        "credits: error: account 'acme' has never subscribed; subscribe it to a plan first"
    )


def test_an_interrupt_exits_130(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    cli.ok("subscribe", "acme", "boost")

    def interrupted(self: CreditService, account: str) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(CreditService, "balance", interrupted)
    done = cli.run("balance", "acme")
    assert (done.code, done.error_line()) == (130, "credits: error: interrupted")


# -- subscriptions -----------------------------------------------------------------------


def test_subscribe_then_subscribing_again_says_to_change_the_plan(cli: Cli) -> None:
    done = cli.ok("subscribe", "acme", "boost")
    assert done.out == (
        "Subscribed acme to boost: 12,000 email and 800 mobile credits; the period renews "
        "on 2025-02-06 09:00 UTC.\n"
    )
    again = cli.run("subscribe", "acme", "power")
    assert again.code == 1
    assert again.error_line() == (
        "credits: error: account 'acme' already has a subscription; to switch plans, "
        "change its plan instead"
    )
    unknown = cli.run("subscribe", "globex", "platinum")
    assert "unknown plan 'platinum'; known plans: boost, ignite, power" in unknown.error_line()


def test_change_plan_upgrades_at_once_pro_rated_and_downgrades_at_renewal(cli: Cli) -> None:
    cli.ok("subscribe", "acme", "boost")
    cli.clock.advance(timedelta(days=15))  # 16 of the period's 31 days are left
    up = cli.ok("change-plan", "acme", "power")
    # R7: (30,000 - 12,000) x 16 / 31 and (2,000 - 800) x 16 / 31, rounded down.
    assert up.out == (
        "Upgraded acme to power at once: granted 9,290 email and 619 mobile credits for "
        "the rest of the period (R7).\n"
    )
    down = cli.ok("change-plan", "acme", "ignite")
    assert down.out == (
        "acme changes from power to ignite at the next renewal, 2025-02-06 09:00 UTC "
        "(R7); its credits are kept.\n"
    )
    assert cli.ok("balance", "acme", "--format", "json").json()["pending_plan"] == "ignite"
    same = cli.ok("change-plan", "acme", "power")
    assert same.out == "acme stays on power; no plan change is scheduled.\n"
    assert cli.ok("balance", "acme", "--format", "json").json()["pending_plan"] is None


def test_cancel_lets_credits_be_spent_until_the_period_ends(cli: Cli) -> None:
    cli.ok("subscribe", "acme", "ignite")
    done = cli.ok("cancel", "acme")
    assert done.out.startswith("acme's subscription ends 2025-02-06 09:00 UTC;")
    assert cli.ok("balance", "acme", "--format", "json").json()["email"] == 5_000
    cli.clock.advance(timedelta(days=31))  # R6: the lapse forfeits both pools
    state = cli.ok("balance", "acme", "--format", "json").json()
    assert (state["status"], state["email"], state["mobile"]) == ("lapsed", 0, 0)
    refused = cli.run("change-plan", "acme", "power")
    assert "has no active subscription (it lapsed); subscribe it to a plan again" in (
        refused.error_line()
    )
    cli.ok("subscribe", "acme", "boost")  # starts afresh


def test_pause_refuses_charges_until_resume(cli: Cli, verifier: str) -> None:
    cli.ok("subscribe", "acme", "boost")
    assert cli.ok("pause", "acme").out.startswith("Paused acme: credits kept")
    refused = cli.run("unlock", "acme", "ann@corp.com", "--verifier-url", verifier)
    assert refused.error_line() == (
        "credits: error: account 'acme' is paused; resume its subscription before charging "
        "or changing its plan"
    )
    assert "paused" in cli.run("change-plan", "acme", "power").error_line()
    assert cli.ok("resume", "acme").out.startswith("Resumed acme: charges are accepted again")
    cli.ok("unlock", "acme", "ann@corp.com", "--verifier-url", verifier)
    assert cli.charged("acme") == ["ann@corp.com"]


def test_top_up_grants_with_its_reason_on_the_ledger(cli: Cli) -> None:
    cli.ok("subscribe", "acme", "boost")
    done = cli.ok("top-up", "acme", "--email", "500", "--mobile", "20", "--reason", "goodwill")
    assert done.out == (
        "Granted acme 500 email (balance 12,500), 20 mobile (balance 820) credits: goodwill (R8).\n"
    )
    grants = [e for e in cli.entries("acme") if e["note"] == "goodwill"]
    assert [(e["pool"], e["amount"], e["kind"]) for e in grants] == [
        ("email", 500, "top_up"),
        ("mobile", 20, "top_up"),
    ]
    nothing = cli.run("top-up", "acme", "--reason", "nothing")
    assert nothing.error_line() == (
        "credits: error: a top-up needs credits in at least one pool (email or mobile), "
        "got email 0 and mobile 0"
    )


def test_r23_top_up_expires_makes_an_expiring_grant(cli: Cli) -> None:
    cli.ok("subscribe", "acme", "boost")
    done = cli.ok(
        "top-up", "acme", "--email", "50", "--reason", "promo", "--expires", "2999-01-01T00:00Z"
    )
    assert done.out.startswith("Granted acme 50 email (balance 12,050) credits: promo, expiring")
    assert "(R23)" in done.out
    late = cli.run(
        "top-up", "acme", "--email", "5", "--reason", "x", "--expires", "2001-01-01T00:00Z"
    )
    assert "after now" in late.error_line()
    naive = cli.run("top-up", "acme", "--email", "5", "--reason", "x", "--expires", "2999-01-01")
    assert naive.code == 2
    assert "with a zone" in naive.err


def test_top_up_limits(cli: Cli) -> None:
    cli.ok("subscribe", "acme", "boost")
    assert cli.run("top-up", "acme", "--email", str(10**12 + 1), "--reason", "x").code == 2
    assert cli.run("top-up", "acme", "--mobile", "-1", "--reason", "x").code == 2
    long = cli.run("top-up", "acme", "--email", "1", "--reason", "r" * 201)
    assert long.code == 2
    assert "at most 200 characters, got 201" in long.err
    assert "r" * 50 not in long.err  # the value is not echoed back
    assert cli.run("top-up", "acme", "--email", "1", "--reason", "a\nb").code == 2
    assert cli.ok("top-up", "acme", "--email", str(10**12), "--reason", "r" * 200)


# -- reading -----------------------------------------------------------------------------


def test_accounts_lists_plan_status_and_balances_in_pages(cli: Cli) -> None:
    for account, plan in [("initech", "ignite"), ("acme", "boost"), ("globex", "power")]:
        cli.ok("subscribe", account, plan)
    cli.ok("cancel", "initech")
    cli.clock.advance(timedelta(days=31))  # initech lapses; the others renew (R5)
    listed = cli.ok("accounts", "--format", "json").json()
    assert [(a["account"], a["plan"], a["status"], a["email"]) for a in listed["accounts"]] == [
        ("acme", "boost", "active", 24_000),
        ("globex", "power", "active", 60_000),
        ("initech", "ignite", "lapsed", 0),
    ]
    assert listed["next_after"] is None
    assert listed["accounts"][0]["period_start"] == "2025-02-06T09:00:00Z"
    first = cli.ok("accounts", "--limit", "2", "--format", "json").json()
    assert [a["account"] for a in first["accounts"]] == ["acme", "globex"]
    assert first["next_after"] == "globex"
    rest = cli.ok("accounts", "--after", "globex", "--format", "json").json()
    assert [a["account"] for a in rest["accounts"]] == ["initech"]
    table = cli.ok("accounts", "--limit", "2")
    assert "More accounts: give --after globex" in table.out
    assert table.out.split()[:1] == ["Accounts"]
    as_csv = cli.ok("accounts", "--format", "csv", "--limit", "2")
    assert [r["account"] for r in rows(as_csv.out)] == ["acme", "globex"]
    assert as_csv.err == "credits: more accounts: give --after globex\n"


def test_accounts_limits(cli: Cli) -> None:
    assert cli.run("accounts", "--limit", str(MAX_ACCOUNTS_PAGE + 1)).code == 2
    assert cli.ok("accounts", "--limit", str(MAX_ACCOUNTS_PAGE)).out.strip() == "No accounts."
    assert cli.run("accounts", "--after", "a" * 201).code == 2


def test_balance_for_scripts(cli: Cli) -> None:
    cli.ok("subscribe", "acme", "boost")
    state = cli.ok("balance", "acme", "--format", "json").json()
    assert state == {
        "account": "acme",
        "plan": "boost",
        "status": "active",
        "period": 0,
        "period_start": "2025-01-06T09:00:00Z",
        "period_end": "2025-02-06T09:00:00Z",
        "email": 12_000,
        "mobile": 800,
        "email_available": 12_000,
        "mobile_available": 800,
        "ends_at": None,
        "pending_plan": None,
    }
    (row,) = rows(cli.ok("balance", "acme", "--format", "csv").out)
    assert (row["account"], row["email"], row["ends_at"]) == ("acme", "12000", "")
    assert "Period 0: 2025-01-06 09:00 to 2025-02-06 09:00 UTC" in cli.ok("balance", "acme").out


def test_statement_pages_with_limit_and_after(cli: Cli, verifier: str) -> None:
    cli.ok("subscribe", "acme", "boost")
    emails = [f"p{i}@corp.com" for i in range(7)]
    cli.ok("unlock", "acme", *emails, "--verifier-url", verifier)
    whole = cli.entries("acme")
    assert [e["seq"] for e in whole] == list(range(9))
    seen, after = [], None
    while True:
        page = cli.ok(
            "statement", "acme", "--limit", "4", "--format", "json",
            *(["--after", str(after)] if after is not None else []),
        ).json()  # fmt: skip
        seen += page["entries"]
        after = page["next_after"]
        if after is None:
            break
    assert seen == whole
    table = cli.ok("statement", "acme", "--limit", "4")
    assert "4 entries" in table.out
    assert f"More entries: give --after 3 (credits statement acme --after 3 --db {cli.url})" in (
        table.out
    )
    as_csv = cli.ok("statement", "acme", "--format", "csv", "--after", "6")
    assert [(r["seq"], r["datum"], r["amount"]) for r in rows(as_csv.out)] == [
        ("7", "p5@corp.com", "-1"),
        ("8", "p6@corp.com", "-1"),
    ]
    assert as_csv.err == ""  # the last page: no hint
    assert cli.run("statement", "acme", "--after", str(10**15 + 1)).code == 2
    assert cli.run("statement", "acme", "--limit", str(MAX_STATEMENT_ENTRIES + 1)).code == 2


def test_statement_of_a_period_that_does_not_exist_says_which_do(cli: Cli) -> None:
    cli.ok("subscribe", "acme", "boost")
    cli.clock.advance(timedelta(days=100))  # periods 0 to 3
    period = cli.ok("statement", "acme", "--period", "3", "--format", "json").json()
    assert (period["period"], period["period_start"]) == (3, "2025-04-06T09:00:00Z")
    assert [e["operation"] for e in period["entries"]] == ["renewal", "renewal"]
    for index in ("999", "4", "-1"):
        done = cli.run("statement", "acme", "--period", index)
        assert done.code == 1
        assert (
            "account 'acme' has periods 0 to 3 (3 is the current one); there is no "
            + (f"period {index}")
            in done.error_line()
        )


# -- charging from arguments --------------------------------------------------------------


def test_unlock_from_arguments_answers_per_contact(cli: Cli, verifier: str) -> None:
    cli.ok("subscribe", "acme", "boost")
    done = cli.ok(
        "unlock", "acme", "Ann@Corp.com", "invalid-bob@corp.com", "+44 (0) 7700 900123",
        "ann@corp.com", "--verifier-url", verifier, "--format", "json",
    )  # fmt: skip
    answer = done.json()
    assert (answer["charged"], answer["replayed"]) == ({"email": 1, "mobile": 1}, False)
    assert [(i["value"], i["outcome"], i["verdict"], i["credits"]) for i in answer["items"]] == [
        ("ann@corp.com", "charged", "valid", 1),
        ("invalid-bob@corp.com", "not_verified", "invalid", 0),
        ("+447700900123", "charged", "valid", 1),
        ("ann@corp.com", "duplicate_in_request", None, 0),
    ]
    # "+44 (0) 7700 900123" and "+44 7700 900123" are one datum (R12).
    again = cli.ok("unlock", "acme", "+44 7700 900123", "--verifier-url", verifier)
    assert "already_owned" in again.out
    assert "Balance now: 11,999 email, 799 mobile." in again.out
    as_csv = rows(
        cli.ok("unlock", "acme", "ann@corp.com", "--demo-verifier", "--format", "csv").out
    )
    assert [(r["value"], r["outcome"]) for r in as_csv] == [("ann@corp.com", "already_owned")]


def test_an_idempotency_key_replays_the_first_answer(cli: Cli, verifier: str) -> None:
    cli.ok("subscribe", "acme", "boost")
    first = cli.ok(
        "unlock", "acme", "a@corp.com", "--idempotency-key", "order-42",
        "--verifier-url", verifier, "--format", "json",
    ).json()  # fmt: skip
    again = cli.ok(
        "unlock", "acme", "a@corp.com", "--idempotency-key", "order-42",
        "--verifier-url", verifier, "--format", "json",
    ).json()  # fmt: skip
    assert again == {**first, "replayed": True}
    assert cli.charged("acme") == ["a@corp.com"]
    other = cli.run(
        "unlock", "acme", "b@corp.com", "--idempotency-key", "order-42", "--verifier-url", verifier
    )
    assert (
        "idempotency key 'order-42' of account 'acme' was already used for another " + ("request")
        in other.error_line()
    )


def test_national_numbers_need_a_region(cli: Cli, verifier: str) -> None:
    cli.ok("subscribe", "acme", "boost")
    refused = cli.run("unlock", "acme", "07700 900123", "--verifier-url", verifier)
    assert "no country code: write it in international form" in refused.error_line()
    assert cli.entries("acme")[-1]["kind"] == "grant"  # nothing charged
    cli.ok("unlock", "acme", "07700 900123", "--region", "gb", "--verifier-url", verifier)
    assert cli.charged("acme") == ["+447700900123"]
    assert cli.run("unlock", "acme", "1", "--region", "GBR", "--demo-verifier").code == 2
    unknown = cli.run("unlock", "acme", "1", "--region", "XX", "--demo-verifier")
    assert unknown.code == 2
    assert "--region: a region is an ISO 3166-1 alpha-2 code" in unknown.error_line()


def test_export_and_enrich_from_arguments(cli: Cli, verifier: str) -> None:
    cli.ok("subscribe", "acme", "boost")
    cli.ok(
        "export", "acme", "a@corp.com", "b@corp.com", "--destination", "hubspot",
        "--verifier-url", verifier,
    )  # fmt: skip
    cli.ok("enrich", "acme", "b@corp.com", "c@corp.com", "--verifier-url", verifier)
    charges = [e for e in cli.entries("acme") if e["kind"] == "charge"]
    assert [(e["operation"], e["datum"], e["destination"]) for e in charges] == [
        ("export", "a@corp.com", "hubspot"),
        ("export", "b@corp.com", "hubspot"),
        ("enrich", "c@corp.com", None),  # R14: b was owned already
    ]
    long = cli.run("export", "acme", "a@corp.com", "--destination", "d" * 101, "--demo-verifier")
    assert long.code == 2


def test_charging_needs_one_verifier(cli: Cli, verifier: str) -> None:
    cli.ok("subscribe", "acme", "boost")
    none = cli.run("unlock", "acme", "a@corp.com")
    assert none.code == 2
    assert "credits unlock needs a verifier: --verifier-url URL" in none.error_line()
    both = cli.run("unlock", "acme", "a@corp.com", "--verifier-url", verifier, "--demo-verifier")
    assert both.code == 2
    assert cli.charged("acme") == []


def test_charging_limits(cli: Cli) -> None:
    cli.ok("subscribe", "acme", "boost")
    assert cli.run("unlock", "acme", "--demo-verifier").code == 2  # no contacts
    assert cli.run("unlock", "acme", "x" * 4_097, "--demo-verifier").code == 2
    too_many = cli.run(
        "unlock", "acme", *(f"p{i}@corp.com" for i in range(10_001)), "--demo-verifier"
    )
    assert "at most 10000 contacts per request" in too_many.error_line()
    long_email = cli.run("unlock", "acme", "a" * 400 + "@corp.com", "--demo-verifier")
    assert long_email.code == 1 and "malformed email" in long_email.err
    assert cli.run("unlock", "a" * 201, "a@corp.com", "--demo-verifier").code == 2
    assert cli.run("unlock", "acme", "a@corp.com", "--batch", "5", "--demo-verifier").code == 2
    assert cli.charged("acme") == []


# -- bounces (R18) ---------------------------------------------------------------------------


def test_bounce_refunds_once(cli: Cli, verifier: str) -> None:
    cli.ok("subscribe", "acme", "boost")
    cli.ok("unlock", "acme", "ann@corp.com", "--verifier-url", verifier)
    cli.clock.advance(timedelta(days=3))
    done = cli.ok("bounce", "acme", "Ann@Corp.com")
    assert done.out == (
        "Refunded 1 email credit to acme for ann@corp.com (bounce, R18); balance 12,000.\n"
    )
    assert "was refunded at" in cli.run("bounce", "acme", "ann@corp.com").error_line()
    assert "was never charged" in cli.run("bounce", "acme", "bob@corp.com").error_line()
    assert "malformed email" in cli.run("bounce", "acme", "not-an-email").error_line()
    assert cli.run("bounce", "acme", "a" * 321).code == 2


# -- API keys -------------------------------------------------------------------------------


def test_keys_list_shows_ids_and_status_never_the_keys(cli: Cli) -> None:
    tokens = []
    for account in ("acme", "acme", "globex"):
        tokens.append(cli.ok("keys", "create", account).out.split()[-1])
    ids = [token.split("_")[1] for token in tokens]
    cli.ok("keys", "revoke", ids[0])
    listed = cli.ok("keys", "list", "--format", "json").json()
    assert [k["key_id"] for k in listed["keys"]] == sorted(ids)
    status = {k["key_id"]: (k["account"], k["status"]) for k in listed["keys"]}
    assert status == {
        ids[0]: ("acme", "revoked"),
        ids[1]: ("acme", "active"),
        ids[2]: ("globex", "active"),
    }
    table = cli.ok("keys", "list", "acme")
    assert sorted(ids[:2])[0] in table.out and ids[2] not in table.out
    for token in tokens:
        assert token.split("_", 2)[2] not in table.out + str(listed)  # no secret, ever
    first = cli.ok("keys", "list", "--limit", "1", "--format", "csv")
    assert [r["key_id"] for r in rows(first.out)] == sorted(ids)[:1]
    assert first.err == f"credits: more keys: give --after {sorted(ids)[0]}\n"
    bad = cli.run("keys", "list", "--after", "ZZZZ")
    assert bad.code == 1 and "a key id is the 16 hex digits after 'ck_'" in bad.err
    assert cli.run("keys", "list", "--limit", str(MAX_API_KEYS_PAGE + 1)).code == 2


def test_r25_guarantee_reports_emails_bounces_and_the_breach(cli: Cli, verifier: str) -> None:
    cli.ok("subscribe", "acme", "boost")
    nothing = cli.ok("guarantee", "acme")
    assert "0 emails charged, 0 bounced (0.00%); guarantee kept (R25)." in nothing.out
    cli.ok("unlock", "acme", "ann@corp.com", "bob@corp.com", "--verifier-url", verifier)
    cli.ok("bounce", "acme", "ann@corp.com")
    report = cli.ok("guarantee", "acme", "--period", "0", "--format", "json")
    found = json.loads(report.out)
    assert (found["emails_charged"], found["bounces"], found["bounce_rate"]) == (2, 1, 0.5)
    assert found["breached"] is False  # fewer than 100 emails: too few to judge
    assert found["period"] == 0
    assert cli.run("guarantee", "acme", "--period", "3").code != 0


def test_r22_members_allowances_and_usage(cli: Cli, verifier: str) -> None:
    cli.ok("subscribe", "acme", "boost")
    assert cli.ok("members", "add", "acme", "alice").out == "alice added to acme (R22).\n"
    again = cli.ok("members", "add", "acme", "alice").out
    assert again == "alice is already a member of acme (R22).\n"
    set_out = cli.ok("members", "allowance", "acme", "alice", "--email", "1").out
    assert set_out == "alice of acme may use 1 email and 0 mobile credits a period (R22).\n"
    done = cli.ok(
        "unlock",
        "acme",
        "ann@corp.com",
        "bob@corp.com",
        "--member",
        "alice",
        "--verifier-url",
        verifier,
        "--format",
        "json",
    )
    outcomes = [item["outcome"] for item in json.loads(done.out)["items"]]
    assert outcomes == ["charged", "member_allowance_exceeded"]
    used = cli.ok("members", "usage", "acme", "alice", "--period", "0").out
    assert used == "alice of acme, period 0: 1 email and 0 mobile credits used (R22).\n"
    cli.ok("members", "allowance", "acme", "alice", "--remove")
    unknown = cli.run(
        "unlock", "acme", "cy@corp.com", "--member", "carol", "--verifier-url", verifier
    )
    assert "add_member" in unknown.error_line()


def test_r24_threshold_and_events(cli: Cli, verifier: str) -> None:
    cli.ok("subscribe", "acme", "boost")
    assert cli.ok("events", "acme").out.strip() == "No events."
    set_out = cli.ok("threshold", "acme", "email", "11999").out
    assert set_out == "acme: credits.low at 11,999 email and 80 mobile credits or below (R24).\n"
    cli.ok("unlock", "acme", "ann@corp.com", "--verifier-url", verifier)
    found = cli.ok("events", "acme", "--format", "json").json()
    (low,) = found["events"]
    assert (low["seq"], low["type"], low["data"]["balance"]) == (1, "credits.low", 11_999)
    assert low["id"].startswith("evt_") and found["next_after"] is None
    page = cli.ok("events", "acme", "--limit", "1")
    assert "credits.low" in page.out and "--after 1" in page.out
    assert cli.ok("events", "acme", "--after", "1", "--format", "json").json()["events"] == []
    back = cli.ok("threshold", "acme", "email", "default").out
    assert back.startswith("acme: credits.low at 1,200 email")
    assert cli.run("threshold", "acme", "email", "-1").code == 2
    assert cli.run("threshold", "acme", "fax", "1").code == 2
    assert cli.run("events", "acme", "--limit", "0").code == 2
    assert cli.run("events", "nobody").error_line().startswith("credits:")
