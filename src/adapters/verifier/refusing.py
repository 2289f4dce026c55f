"""The verifier of a service that must never charge (the CLI's reading commands)."""

from __future__ import annotations

from collections.abc import Sequence

from credits_domain import Contact, Verdict


class VerifierNotConfigured(RuntimeError):
    """NoVerifier was called: a service wired without a verifier tried to charge. A bug
    in the caller, not an expected refusal, so not a CreditsError."""


class NoVerifier:
    """Refuses to be called; wired where nothing may be verified (or charged)."""

    def verify(self, contacts: Sequence[Contact]) -> Sequence[Verdict]:
        raise VerifierNotConfigured(
            f"this service has no verifier, yet was asked to verify {len(contacts)} data"
        )
