"""A pool's balance over time as a server-rendered SVG step chart (no script, no asset).

The balance is a step function of the ledger (R19, R21): it changes only at entries, so
the line is horizontal between entries and vertical at each one. Entries of one kind at
one instant (a batch of charges settled together) make one step. Each step is also a
marker whose `data-*` attributes carry what it is (kind, instant, amount, balance after),
for people (a tooltip) and for tests, which read the chart's data rather than pixels.

After the last entry the line goes on dashed to the end of the current period: the
balance stays as it is until something changes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Final

import attrs

from adapters.api.pages import esc
from credits_domain import Channel, EntryKind, LedgerEntry

WIDTH: Final = 520
HEIGHT: Final = 220
LEFT, RIGHT, TOP, BOTTOM = 64, 12, 14, 30
MAX_STEPS: Final = 2_000
"""Markers per chart at most: beyond, neighbouring steps of one kind that fall on the
same pixel column are drawn as one (the line stays exact at every drawn step)."""

_COLOURS: Final = {
    EntryKind.GRANT: "#1f7a4d",
    EntryKind.TOP_UP: "#1f7a4d",
    EntryKind.REFUND: "#c77700",
    EntryKind.CHARGE: "#2457c5",
    EntryKind.FORFEIT: "#b3261e",
    EntryKind.EXPIRE: "#8a4fb8",
    EntryKind.ADJUSTMENT: "#5b6475",
}


@attrs.frozen(kw_only=True)
class Step:
    """One change of the balance: entries of one kind at one instant, summed."""

    at: datetime
    kind: EntryKind
    amount: int
    balance: int
    entries: int


def steps(entries: Sequence[LedgerEntry]) -> list[Step]:
    """The entries (of one pool, in seq order) as steps."""
    found: list[Step] = []
    for entry in entries:
        last = found[-1] if found else None
        if last is not None and last.at == entry.at and last.kind is entry.kind:
            found[-1] = attrs.evolve(
                last,
                amount=last.amount + entry.amount,
                balance=entry.balance_after,
                entries=last.entries + 1,
            )
        else:
            found.append(
                Step(
                    at=entry.at,
                    kind=entry.kind,
                    amount=entry.amount,
                    balance=entry.balance_after,
                    entries=1,
                )
            )
    return found


def _thinned(found: list[Step], x_of: dict[int, float]) -> list[Step]:
    if len(found) <= MAX_STEPS:
        return found
    kept: list[Step] = []
    for i, step in enumerate(found):
        last = kept[-1] if kept else None
        if last is not None and last.kind is step.kind and round(x_of[i]) == round(x_of[i - 1]):
            kept[-1] = attrs.evolve(
                last,
                amount=last.amount + step.amount,
                balance=step.balance,
                entries=last.entries + step.entries,
            )
        else:
            kept.append(step)
    return kept


def _label(n: int) -> str:
    return f"{n:,}"


def balance_chart(
    pool: Channel,
    *,
    start: datetime,
    end: datetime,
    boundaries: Sequence[datetime],
    opening: int,
    entries: Sequence[LedgerEntry],
) -> str:
    """The SVG of `pool`'s balance from `start` to `end`: `opening` at `start`, then a step
    per change (`entries`: the pool's entries in [start, end), by seq); `boundaries`
    are period starts, drawn as dashed verticals."""
    span = max((end - start).total_seconds(), 1.0)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    found = steps([e for e in entries if e.pool is pool])
    top = max([opening, *(s.balance for s in found)]) or 1

    def x(at: datetime) -> float:
        return LEFT + plot_w * min(max((at - start).total_seconds() / span, 0.0), 1.0)

    def y(balance: int) -> float:
        return TOP + plot_h - plot_h * balance / top

    found = _thinned(found, {i: x(s.at) for i, s in enumerate(found)})
    path = [f"M{x(start):.1f},{y(opening):.1f}"]
    for step in found:
        path.append(f"H{x(step.at):.1f}V{y(step.balance):.1f}")
    last = found[-1].balance if found else opening
    last_x = x(found[-1].at) if found else x(start)
    parts = [
        f'<svg class="chart" data-pool="{pool.value}" data-opening="{opening}" '
        f'data-start="{start.isoformat()}" data-end="{end.isoformat()}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{esc(pool.value)} balance over the previous and current periods" '
        'xmlns="http://www.w3.org/2000/svg">',
        f"<title>{esc(pool.value.capitalize())} credits: {_label(opening)} at the start, "
        f"{_label(last)} after the last change</title>",
    ]
    for value in sorted({0, top // 2, top}):
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(value):.1f}" '
            f'y2="{y(value):.1f}" stroke-width="1"/>'
            f'<text x="{LEFT - 6}" y="{y(value) + 4:.1f}" text-anchor="end">{_label(value)}</text>'
        )
    parts.append(
        f'<text x="{LEFT}" y="{HEIGHT - 10}">{start:%d %b %Y}</text>'
        f'<text x="{WIDTH - RIGHT}" y="{HEIGHT - 10}" text-anchor="end">{end:%d %b %Y}</text>'
    )
    for boundary in boundaries:
        bx = x(boundary)
        parts.append(
            f'<line class="boundary" x1="{bx:.1f}" x2="{bx:.1f}" y1="{TOP}" '
            f'y2="{TOP + plot_h}" stroke="#9aa3b5" stroke-dasharray="4 3"/>'
            f'<text x="{bx + 3:.1f}" y="{HEIGHT - 10}">{boundary:%d %b %Y}</text>'
        )
    parts.append(
        f'<path class="balance" d="{"".join(path)}" fill="none" stroke="#1d2433" '
        'stroke-width="2"/>'
        f'<path class="ahead" d="M{last_x:.1f},{y(last):.1f}H{x(end):.1f}" fill="none" '
        'stroke="#1d2433" stroke-width="1.5" stroke-dasharray="5 4"/>'
    )
    for step in found:
        sign = "+" if step.amount > 0 else ""
        what = f"{step.entries} entries" if step.entries > 1 else "1 entry"
        parts.append(
            f'<circle class="step" data-kind="{step.kind.value}" data-at="{step.at.isoformat()}" '
            f'data-amount="{step.amount}" data-balance="{step.balance}" '
            f'data-entries="{step.entries}" cx="{x(step.at):.1f}" cy="{y(step.balance):.1f}" '
            f'r="3.5" fill="{_COLOURS[step.kind]}"><title>{step.kind.value} {sign}'
            f"{_label(step.amount)} ({what}) on {step.at:%d %b %Y %H:%M} UTC: "
            f"{_label(step.balance)} after</title></circle>"
        )
    parts.append("</svg>")
    return "".join(parts)
