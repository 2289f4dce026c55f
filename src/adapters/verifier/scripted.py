"""A Verifier that answers from a script: for tests, demos and benchmarks, never
production (it verifies nothing)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from credits_domain import Contact, MalformedContact, Verdict


def _canonical_key(raw: str) -> Contact:
    try:
        return Contact.email(raw)
    except MalformedContact:
        return Contact.mobile(raw)


class ScriptedVerifier:
    """Answers from a script: raw values (matched in canonical form) to verdicts.

    `calls` records every batch it was asked, so tests can see what was verified when
    (`record_calls=False` keeps nothing: a demo server or a long CSV run would otherwise
    hold every contact it ever verified); `before_answer`, if given, runs with each batch
    before the answer (a test hook to look at storage while the verifier "works", or to
    raise like a failing service).
    """

    def __init__(
        self,
        script: Mapping[str, Verdict] | None = None,
        *,
        default: Verdict = Verdict.VALID,
        before_answer: Callable[[Sequence[Contact]], None] | None = None,
        record_calls: bool = True,
    ) -> None:
        self._script = {_canonical_key(raw): v for raw, v in (script or {}).items()}
        self._default = default
        self._before_answer = before_answer
        self._record_calls = record_calls
        self.calls: list[tuple[Contact, ...]] = []

    def set(self, raw: str, verdict: Verdict) -> None:
        self._script[_canonical_key(raw)] = verdict

    def verdict_of(self, contact: Contact) -> Verdict:
        return self._script.get(contact, self._default)

    def verify(self, contacts: Sequence[Contact]) -> Sequence[Verdict]:
        batch = tuple(contacts)
        if self._record_calls:
            self.calls.append(batch)
        if self._before_answer is not None:
            self._before_answer(batch)
        return [self._script.get(c, self._default) for c in batch]
