"""The harness bound to each planted bug of `planted_bugs.GALLERY`: a contract suite and a
state machine per bug, named after it. Not a `test_*.py` module, so that the default run
does not collect it: `test_harness_gallery.py` runs it once per bug, which must fail."""

from __future__ import annotations

from hypothesis import Phase, settings

from credits_domain.ports import Repository
from credits_domain.testing import RECOMMENDED, RepositoryContract, make_state_machine
from planted_bugs import GALLERY, Planted

# Derandomised, so that the score is the same on every run; no shrinking: a failure is
# all the gallery needs, not its smallest example.
GALLERY_SETTINGS = settings(
    RECOMMENDED, derandomize=True, database=None, phases=[Phase.explicit, Phase.generate]
)


def _bind(planted: Planted) -> None:
    class Contract(RepositoryContract):
        def make_repository(self) -> Repository:
            return planted.make()

    machine = make_state_machine(planted.make)
    machine.TestCase.settings = GALLERY_SETTINGS
    globals()[f"Test{planted.name}Contract"] = Contract
    globals()[f"Test{planted.name}Machine"] = machine.TestCase


for _planted in GALLERY:
    _bind(_planted)
