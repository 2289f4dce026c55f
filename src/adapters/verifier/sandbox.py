"""The verifier of test mode (`credits serve --test-mode`): the verdict is chosen by magic
contact values (`credits_domain.sandbox`), like a payment sandbox's test card numbers. It
verifies nothing: never wire it in production."""

from __future__ import annotations

from collections.abc import Sequence

from credits_domain import Contact, Verdict
from credits_domain.sandbox import sandbox_verdict


class SandboxVerifier:
    """Answers each contact by the table of `credits_domain.sandbox`."""

    def verify(self, contacts: Sequence[Contact]) -> Sequence[Verdict]:
        return [sandbox_verdict(contact) for contact in contacts]
