"""The story that `credits demo` replays: five accounts, five months, on a scripted clock.

Everything here is deterministic: the data follow fixed patterns (no randomness), the
clock is a `ManualClock` set to each step's instant, and the verifier is the in-memory
`ScriptedVerifier`, answering from a script built together with the data. The story
checks itself against docs/rules.md's worked examples as it goes (a mismatch is a bug and
crashes through `invariant`). `adapters.cli.replay` plays it.

The cast (run 1; a later run on the same database suffixes the names, see `Cast`):
- acme, on boost: docs/rules.md's worked examples, then a month of prospecting that uses
  exactly 7,500 email credits, an export to HubSpot, an enrichment, a bounce refund;
  the rollover example (12,000 - 7,500 + 12,000 = 16,500) at the first renewal;
- globex, on power: a downgrade to boost, which waits for the next renewal (R7);
- initech, on ignite: more mobiles asked for than it has credits (R15), then a
  cancellation and its lapse (R6);
- northwind, on ignite: an upgrade to power in the middle of a period, pro-rated (R7);
- hooli, on ignite, a team: members ana and ben, ben with an allowance of 100 email
  credits a month (R22); a promo grant of 500 email credits expiring on Jan 20, spent
  first, its remainder expiring (R23); its mobile credits running low (R24: the event
  the demo delivers to its webhook receiver); 3 bounces in 270 emails, which breach the
  deliverability guarantee (R25).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import attrs

from credits_domain import (
    Channel,
    ChargeResult,
    Contact,
    Credits,
    CreditsError,
    CreditService,
    EntryKind,
    NoActiveSubscription,
    PlanChange,
    RefundWindowClosed,
    Repository,
    Verdict,
)
from credits_domain.errors import invariant

START = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)
END = datetime(2025, 5, 12, 9, 0, tzinfo=UTC)
ROLES = ("acme", "globex", "initech", "northwind", "hooli")
PLAN_OF_ROLE = {
    "acme": "boost",
    "globex": "power",
    "initech": "ignite",
    "northwind": "ignite",
    "hooli": "ignite",
}
TEAM_ROLE = "hooli"  # the team (R22..R25); its events go to the demo's webhook receiver
MEMBERS = ("ana", "ben")
BEN_ALLOWANCE = Credits(email=100)
PROMO = Credits(email=500)
MAX_TEAM_EVENTS = 100  # the team's events the demo delivers in one pass (about a dozen)
PERIOD_STARTS = ("Jan 06", "Feb 06", "Mar 06", "Apr 06", "May 06")  # the story's periods
MOBILE_LOW = 250  # hooli's low-balance threshold for mobiles (R24)
PROMO_EXPIRES = datetime(2025, 1, 20, 9, 0, tzinfo=UTC)
MAX_RUNS = 1_000  # demo runs one database can hold before the demo asks for a fresh one
BULK_BATCHES = 8
BULK_VALID_PER_BATCH = 900
# acme's prospecting is sized so that period 0 uses exactly 7,500 email credits, as in
# docs/rules.md's rollover example: 200 + 8 + 7 (worked examples) + 93 (export) + 5 (enrich).
BULK_VALID_TOTAL = 7_500 - 200 - 8 - 7 - 93 - 5

# Names for the generated leads (plain word lists read better than long literals).
_FIRST = (  # noqa: SIM905
    "ann bob carla dev emma farid grace hugo ines jon kemal lena milo nadia omar paula "
    "quinn rosa sven tara umar vera wes xenia yusuf zoe"
).split()
_LAST = (  # noqa: SIM905
    "adams baker chen diaz evans fischer garcia hansen ito jones khan lopez meyer novak "
    "olsen patel quist rossi silva tanaka ueda varga weber xu young zimmer"
).split()
_COMPANIES = (  # noqa: SIM905
    "northpeak bluefern hallmark-supply oakridge brightlane copperleaf summitworks tidewater "
    "riverstone ironbark meadowgate sablepoint lumenforge harborview quillstack redwoodlabs "
    "stonebridge cinderpath wavecrest pinegrove foxhollow granitebay silverline maplecourt "
    "bramblefield eastwind clearwater highmoor juniperhq kestrel"
).split()
_MAX_EMAILS = len(_FIRST) * len(_LAST) * len(_COMPANIES)
_MAX_MOBILES = 1_000


@attrs.frozen(kw_only=True)
class Cast:
    """The demo's account names in one database. Run 1 uses the plain role names; run n
    suffixes them with `-n`, so that replaying on a used database never collides."""

    run: int

    def name(self, role: str) -> str:
        return role if self.run == 1 else f"{role}-{self.run}"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.name(role) for role in ROLES)


def free_cast(repository: Repository) -> Cast:
    """The first run number whose account names are all unused in `repository`."""
    for run in range(1, MAX_RUNS + 1):
        cast = Cast(run=run)
        with repository.unit_of_work() as uow:
            if all(uow.load_wallet(name) is None for name in cast.names):
                return cast
    raise DemoError(f"this database holds {MAX_RUNS} demo runs already; use a fresh one with --db")


class DemoError(CreditsError):
    """The demo cannot run on this database."""


Action = Callable[[CreditService, str], ChargeResult | str]


@attrs.frozen(kw_only=True)
class Step:
    """One event of the story: at `at`, the account playing `role` does `action`."""

    at: datetime
    role: str
    title: str
    action: Action
    rules: str = ""
    size: int = 1  # contacts handled, for the progress bar
    expect: Credits | None = None  # what the step must charge (a worked example)
    refusal: type[CreditsError] | None = None  # the refusal the step demonstrates
    group: str = ""  # consecutive charging steps of one group are one line of the log


@attrs.frozen(kw_only=True)
class Story:
    steps: tuple[Step, ...]
    script: dict[str, Verdict]  # the verifier's answers that are not VALID

    @property
    def size(self) -> int:
        """How many contacts the story handles (the progress bar's total)."""
        return sum(step.size for step in self.steps)


# -- the data ---------------------------------------------------------------------------


class _Data:
    """Fresh, distinct contact data, and the verifier's script for the bad ones."""

    def __init__(self) -> None:
        self._emails = 0
        self._mobiles = 0
        self.script: dict[str, Verdict] = {}

    def email(self, verdict: Verdict = Verdict.VALID) -> str:
        n = self._emails
        invariant(n < _MAX_EMAILS, "the demo ran out of distinct emails")
        self._emails += 1
        first = _FIRST[n % len(_FIRST)]
        last = _LAST[(n // len(_FIRST)) % len(_LAST)]
        company = _COMPANIES[n // (len(_FIRST) * len(_LAST))]
        raw = f"{first}.{last}@{company}.example"  # RFC 2606: never a real mailbox
        if verdict is not Verdict.VALID:
            self.script[raw] = verdict
        return raw

    def mobile(self, verdict: Verdict = Verdict.VALID) -> str:
        n = self._mobiles
        invariant(n < _MAX_MOBILES, "the demo ran out of distinct mobile numbers")
        self._mobiles += 1
        raw = f"+447700900{n:03d}"  # Ofcom's range for drama: never a real subscriber
        if verdict is not Verdict.VALID:
            self.script[raw] = verdict
        return raw

    def emails(
        self, count: int, bad: Callable[[int], Verdict | None] = lambda k: None
    ) -> list[str]:
        return [self.email(bad(k) or Verdict.VALID) for k in range(count)]

    def mobiles(
        self, count: int, bad: Callable[[int], Verdict | None] = lambda k: None
    ) -> list[str]:
        return [self.mobile(bad(k) or Verdict.VALID) for k in range(count)]


def _contacts(raws: Sequence[str]) -> list[Contact]:
    return [Contact.email(r) if "@" in r else Contact.mobile(r) for r in raws]


def _unlock(raws: Sequence[str]) -> Action:
    contacts = _contacts(raws)
    return lambda service, account: service.unlock(account, contacts)


def _export(raws: Sequence[str], destination: str) -> Action:
    contacts = _contacts(raws)
    return lambda service, account: service.export(account, contacts, destination=destination)


def _enrich(raws: Sequence[str]) -> Action:
    contacts = _contacts(raws)
    return lambda service, account: service.enrich(account, contacts)


def _every(modulus: int, offset: int, verdict: Verdict) -> Callable[[int], Verdict | None]:
    return lambda k: verdict if k % modulus == offset else None


def _bulk_verdict(k: int) -> Verdict:
    """The prospect list's quality: about 5% of its addresses do not verify."""
    if k % 41 == 7:
        return Verdict.INVALID
    if k % 59 == 3:
        return Verdict.CATCH_ALL
    if k % 97 == 5:
        return Verdict.UNKNOWN
    if k % 113 == 11:
        return Verdict.DISPOSABLE
    return Verdict.VALID


def _day(month: int, day: int, hour: int = 10, minute: int = 0) -> datetime:
    return datetime(2025, month, day, hour, minute, tzinfo=UTC)


def _subscribe(plan: str) -> Action:
    def act(service: CreditService, account: str) -> str:
        sub = service.subscribe(account, plan)
        monthly = sub.plan.monthly
        return f"{plan}: {monthly.email:,} email + {monthly.mobile:,} mobile credits a month"

    return act


def _renewal_check(email: int, mobile: int, why: str) -> Action:
    def act(service: CreditService, account: str) -> str:
        balance = service.balance(account)
        invariant(
            (balance.email, balance.mobile) == (email, mobile),
            f"demo: {account} should start the period at {email}/{mobile}, "
            f"has {balance.email}/{balance.mobile}",
        )
        return f"starts the period at {email:,} email, {mobile:,} mobile ({why})"

    return act


def _upgrade(plan: str, at: datetime) -> Action:
    def act(service: CreditService, account: str) -> str:
        before = service.balance(account)
        change = service.change_plan(account, plan)
        invariant(change is PlanChange.UPGRADED, f"demo: {plan} should be an upgrade")
        after = service.balance(account)
        period = service.subscription(account).period
        left_days = (period.end - at) / timedelta(days=1)
        length_days = (period.end - period.start) / timedelta(days=1)
        return (
            f"to {plan} at once: +{after.email - before.email:,} email, "
            f"+{after.mobile - before.mobile:,} mobile (the difference, pro-rated to the "
            f"{left_days:g} of {length_days:g} days left)"
        )

    return act


def _downgrade(plan: str) -> Action:
    def act(service: CreditService, account: str) -> str:
        change = service.change_plan(account, plan)
        invariant(change is PlanChange.DOWNGRADE_SCHEDULED, f"demo: {plan} is a downgrade")
        end = service.subscription(account).period.end
        return f"to {plan} from the next renewal ({end:%b %d}); credits granted are kept"

    return act


def _cancel(service: CreditService, account: str) -> str:
    ends = service.cancel(account)
    return f"ends {ends:%b %d %H:%M}; credits left can be spent until then"


def _bounce(raw: str) -> Action:
    def act(service: CreditService, account: str) -> str:
        entry = service.report_bounce(account, Contact.email(raw))
        return f"refunded {entry.amount} {entry.pool.value} credit for {raw}"

    return act


def _unlock_as(member: str, raws: Sequence[str]) -> Action:
    contacts = _contacts(raws)
    return lambda service, account: service.unlock(account, contacts, member=member)


def _team(service: CreditService, account: str) -> str:
    for member in MEMBERS:
        service.add_member(account, member)
    service.set_member_allowance(account, "ben", BEN_ALLOWANCE)
    service.set_low_balance_threshold(account, Channel.MOBILE, MOBILE_LOW)
    return (
        f"members {' and '.join(MEMBERS)}; ben may use {BEN_ALLOWANCE.email:,} email "
        "credits a month, ana draws on the team pool freely; credits.low when "
        f"{MOBILE_LOW} mobile credits or fewer are left"
    )


def _promo(service: CreditService, account: str) -> str:
    service.top_up(account, PROMO, reason="promo", expires_at=PROMO_EXPIRES)
    return f"+{PROMO.email:,} email credits, spent before plan credits, until {PROMO_EXPIRES:%b %d}"


def _expiry(service: CreditService, account: str) -> str:
    expired = [e for e in service.statement(account) if e.kind is EntryKind.EXPIRE]
    invariant(len(expired) == 1, f"demo: {account}'s promo grant should have expired once")
    return f"{-expired[0].amount:,} unspent promo credits left the pool ({expired[0].pool.value})"


def _bounces(raws: Sequence[str]) -> Action:
    def act(service: CreditService, account: str) -> str:
        entries = [service.report_bounce(account, Contact.email(raw)) for raw in raws]
        members = " and ".join(sorted({str(e.cause.member) for e in entries}))
        return f"refunded {sum(e.amount for e in entries)} email credits (charged by {members})"

    return act


def _guarantee(service: CreditService, account: str) -> str:
    report = service.guarantee(account, service.period(account, 0))
    verdict = "breached" if report.breached else "kept"
    return (
        f"period 0: {report.bounces} bounces in {report.emails_charged:,} emails charged, "
        f"{report.bounce_rate:.2%}: guarantee {verdict} (over 1% with 100 or more)"
    )


def _look(service: CreditService, account: str) -> str:
    balance = service.balance(account)
    return f"{balance.email:,} email, {balance.mobile:,} mobile"


def story() -> Story:
    """The scripted steps, in time order, and the verifier's script for them."""
    data = _Data()
    steps: list[Step] = [
        Step(at=START, role=role, title="subscribes", action=_subscribe(plan), rules="R3")
        for role, plan in PLAN_OF_ROLE.items()
    ]

    # acme: docs/rules.md's worked examples, word for word.
    first200 = data.emails(200)
    ten = data.emails(10, _every(5, 2, Verdict.INVALID))  # positions 2 and 7 invalid
    nine = data.emails(9, _every(4, 1, Verdict.INVALID))  # positions 1 and 5 invalid
    steps += [
        Step(
            at=_day(1, 7),
            role="acme",
            title="unlocks 200 valid business emails",
            action=_unlock(first200),
            size=200,
            expect=Credits(email=200),
            rules="R9",
        ),
        Step(
            at=_day(1, 7, 10, 5),
            role="acme",
            title="unlocks 50 mobile numbers",
            action=_unlock(data.mobiles(50)),
            size=50,
            expect=Credits(mobile=50),
            rules="R9",
        ),
        Step(
            at=_day(1, 7, 10, 10),
            role="acme",
            title="unlocks 10 contacts, 2 come back invalid",
            action=_unlock(ten),
            size=10,
            expect=Credits(email=8),
            rules="R10",
        ),
        Step(
            at=_day(1, 7, 10, 15),
            role="acme",
            title="unlocks one of those 200 emails again",
            action=_unlock([first200[42]]),
            expect=Credits(),
            rules="R12",
        ),
        Step(
            at=_day(1, 8),
            role="acme",
            title="unlocks 10 contacts: 2 invalid, 1 already owned",
            action=_unlock([first200[7], *nine]),
            size=10,
            expect=Credits(email=7),
            rules="R10 R12",
        ),
    ]

    # acme: a prospect list worked through in daily batches; about 5% of it does not
    # verify, some addresses are typed twice (another case, stray spaces) and some are
    # already owned.
    bulk_valid: list[str] = []
    k = 0
    for batch in range(BULK_BATCHES):
        target = BULK_VALID_PER_BATCH
        if batch == BULK_BATCHES - 1:
            target = BULK_VALID_TOTAL - BULK_VALID_PER_BATCH * (BULK_BATCHES - 1)
        raws: list[str] = []
        valid = 0
        while valid < target:
            verdict = _bulk_verdict(k)
            raw = data.email(verdict)
            raws.append(raw)
            if verdict is Verdict.VALID:
                valid += 1
                bulk_valid.append(raw)
            if k % 150 == 149:
                raws.append(f"  {raw.upper()} ")  # the same datum in another form (R12)
            if k % 40 == 20:
                raws.append(first200[(k // 40) % len(first200)])
            k += 1
        steps.append(
            Step(
                at=_day(1, 9 + batch),
                role="acme",
                title=f"works through its prospect list, batch {batch + 1} of {BULK_BATCHES}",
                action=_unlock(raws),
                size=len(raws),
                expect=Credits(email=target),
                rules="R10 R12",
                group="works through its prospect list",
            )
        )

    export_new = data.emails(
        100,
        lambda k: Verdict.INVALID if k % 25 == 0 else Verdict.CATCH_ALL if k % 33 == 10 else None,
    )
    enrich_found = [
        *data.mobiles(20, lambda k: Verdict.INVALID if k in (4, 13) else None),
        *first200[100:105],
        *data.emails(5),
    ]
    steps += [
        Step(
            at=_day(1, 20, 11),
            role="acme",
            title="exports 400 leads to HubSpot, 300 of them already owned",
            action=_export([*bulk_valid[:300], *export_new], "hubspot"),
            size=400,
            expect=Credits(email=93),
            rules="R13",
        ),
        Step(
            at=_day(1, 22, 11),
            role="acme",
            title="enriches its leads: 20 new mobiles, 5 known and 5 new emails found",
            action=_enrich(enrich_found),
            size=30,
            expect=Credits(email=5, mobile=18),
            rules="R14",
        ),
    ]

    # globex, initech, northwind in the first month.
    steps += [
        Step(
            at=_day(1, 17, 14),
            role="globex",
            title="unlocks 600 emails and 60 mobiles",
            action=_unlock(
                [*data.emails(600, _every(30, 4, Verdict.CATCH_ALL)), *data.mobiles(60)]
            ),
            size=660,
            expect=Credits(email=580, mobile=60),
            rules="R10",
        ),
        Step(
            at=_day(1, 17, 12),
            role="northwind",
            title="unlocks 300 emails and 30 mobiles",
            action=_unlock([*data.emails(300), *data.mobiles(30)]),
            size=330,
            expect=Credits(email=300, mobile=30),
            rules="R9",
        ),
        Step(
            at=_day(1, 20, 15),
            role="initech",
            title="asks for 400 mobiles (10 of them invalid) with 333 mobile credits",
            action=_unlock(data.mobiles(400, _every(40, 0, Verdict.INVALID))),
            size=400,
            expect=Credits(mobile=333),
            rules="R15",
        ),
        Step(
            at=_day(1, 21, 15),
            role="initech",
            title="unlocks 120 emails",
            action=_unlock(data.emails(120)),
            size=120,
            expect=Credits(email=120),
            rules="R9",
        ),
    ]

    # Month 2: renewal with rollover, refunds, plan changes, a cancellation.
    feb_emails = data.emails(1000)
    steps += [
        Step(
            at=_day(2, 6, 9),
            role="acme",
            title="month boundary: renewal",
            action=_renewal_check(16_500, 1_532, "12,000 - 7,500 + 12,000; 800 - 68 + 800"),
            rules="R5",
        ),
        Step(
            at=_day(2, 10),
            role="acme",
            title="unlocks 1,000 emails and 100 mobiles",
            action=_unlock([*feb_emails, *data.mobiles(100)]),
            size=1_100,
            expect=Credits(email=1_000, mobile=100),
            rules="R9",
        ),
        Step(
            at=_day(2, 15, 14),
            role="globex",
            title="downgrades",
            action=_downgrade("boost"),
            rules="R7",
        ),
        Step(
            at=_day(2, 20, 9),
            role="northwind",
            title="upgrades",
            action=_upgrade("power", _day(2, 20, 9)),
            rules="R7",
        ),
        Step(
            at=_day(2, 20, 14),
            role="globex",
            title="unlocks 400 emails",
            action=_unlock(data.emails(400)),
            size=400,
            expect=Credits(email=400),
            rules="R9",
        ),
        Step(
            at=_day(2, 21, 12),
            role="northwind",
            title="unlocks 800 emails",
            action=_unlock(data.emails(800)),
            size=800,
            expect=Credits(email=800),
            rules="R9",
        ),
        Step(
            at=_day(2, 24),
            role="acme",
            title="reports a bounce 14 days after the charge",
            action=_bounce(feb_emails[0]),
            rules="R18",
        ),
        Step(
            at=_day(2, 24, 10, 5),
            role="acme",
            title="reports a bounce 48 days after the charge",
            action=_bounce(first200[0]),
            refusal=RefundWindowClosed,
            rules="R18",
        ),
        Step(
            at=_day(2, 25),
            role="acme",
            title="unlocks the refunded email again",
            action=_unlock([feb_emails[0]]),
            expect=Credits(),
            rules="R18",
        ),
        Step(at=_day(2, 25, 15), role="initech", title="cancels", action=_cancel, rules="R6"),
        Step(
            at=_day(2, 26, 15),
            role="initech",
            title="unlocks 20 emails before the end",
            action=_unlock(data.emails(20)),
            size=20,
            expect=Credits(email=20),
            rules="R6",
        ),
    ]

    # Months 3 to 5.
    steps += [
        Step(
            at=_day(3, 12),
            role="acme",
            title="unlocks 500 emails and 60 mobiles",
            action=_unlock(
                [
                    *data.emails(500, _every(25, 12, Verdict.INVALID)),
                    *data.mobiles(60, _every(10, 3, Verdict.INVALID)),
                ]
            ),
            size=560,
            expect=Credits(email=480, mobile=54),
            rules="R10",
        ),
        Step(
            at=_day(3, 12, 15),
            role="initech",
            title="tries to unlock after its lapse",
            action=_unlock(data.emails(5)),
            size=5,
            refusal=NoActiveSubscription,
            rules="R6",
        ),
        Step(
            at=_day(3, 20, 14),
            role="globex",
            title="unlocks 200 emails",
            action=_unlock(data.emails(200)),
            size=200,
            expect=Credits(email=200),
            rules="R9",
        ),
        Step(
            at=_day(4, 15),
            role="acme",
            title="exports 350 leads to a CSV file, 50 of them already owned",
            action=_export([*bulk_valid[300:350], *data.emails(300)], "csv"),
            size=350,
            expect=Credits(email=300),
            rules="R13",
        ),
        Step(
            at=_day(4, 16),
            role="acme",
            title="enriches, finds only data it owns",
            action=_enrich(first200[150:160]),
            size=10,
            expect=Credits(),
            rules="R14",
        ),
    ]
    steps += _team_story(data)
    steps += [
        Step(at=END, role=role, title="end of the story", action=_look, rules="R21")
        for role in ROLES
    ]
    # Written account by account; played in time order (stable: same instant, same order).
    return Story(steps=tuple(sorted(steps, key=lambda step: step.at)), script=data.script)


def _team_story(data: _Data) -> list[Step]:
    """hooli: a team with an allowance, an expiring promo grant, a low balance, bounces."""
    ana_first = data.emails(120)
    ben_asks = data.emails(130)
    ana_more = data.emails(50)
    return [
        Step(
            at=_day(1, 7, 9),
            role=TEAM_ROLE,
            title="adds two members",
            action=_team,
            rules="R22 R24",
        ),
        Step(
            at=_day(1, 7, 9, 30),
            role=TEAM_ROLE,
            title="gets a promo grant that expires",
            action=_promo,
            rules="R23",
        ),
        Step(
            at=_day(1, 8),
            role=TEAM_ROLE,
            title="ana unlocks 120 emails, paid from the promo grant",
            action=_unlock_as("ana", ana_first),
            size=120,
            expect=Credits(email=120),
            rules="R22 R23",
        ),
        Step(
            at=_day(1, 9),
            role=TEAM_ROLE,
            title="ben asks for 130 emails with an allowance of 100",
            action=_unlock_as("ben", ben_asks),
            size=130,
            expect=Credits(email=100),
            rules="R22",
        ),
        Step(
            at=_day(1, 9, 10, 5),
            role=TEAM_ROLE,
            title="ana unlocks 50 more: the team pool still pays for her",
            action=_unlock_as("ana", ana_more),
            size=50,
            expect=Credits(email=50),
            rules="R22",
        ),
        Step(
            at=_day(1, 14),
            role=TEAM_ROLE,
            title="ana unlocks 100 mobiles: 233 of 333 left, credits.low",
            action=_unlock_as("ana", data.mobiles(100)),
            size=100,
            expect=Credits(mobile=100),
            rules="R24",
        ),
        Step(
            at=_day(1, 20, 9, 1),
            role=TEAM_ROLE,
            title="the promo grant expires",
            action=_expiry,
            rules="R23",
        ),
        Step(
            at=_day(1, 22),
            role=TEAM_ROLE,
            title="reports 3 bounces",
            action=_bounces((ana_first[0], ana_first[1], ben_asks[0])),
            rules="R18",
        ),
        Step(
            at=_day(1, 22, 11),
            role=TEAM_ROLE,
            title="the deliverability guarantee",
            action=_guarantee,
            rules="R25",
        ),
    ]
