"""The property-test harness of credits-domain, for our adapters and for yours.

Needs the `testing` extra (hypothesis, pytest); the core never imports it.

- `strategies`: Hypothesis strategies for contacts (raw and canonical), verdicts, plans,
  instants, requests and scenarios.
- `ReferenceModel`: an independent, naive model of the rules (the oracle), with its own
  canonical form of a datum (`model.datum_of(RawContact)`).
- `make_state_machine(repository_factory)`: a RuleBasedStateMachine that runs a real
  CreditService on your Repository against the model: requests that overlap or crash
  between reserve and settle, retries, every statement entry by entry after every step.
- `RepositoryContract`, `ApiKeyStoreContract`: the contract test suites every Repository
  and ApiKeyStore adapter passes, error paths included.
- `ChargePathContract`: the contract of the optional set-based charging port
  (`ports.ChargePath`); `ChosenPaths` makes a service take one path or the other.
- `http`: the same rules checked on a whole service over HTTP, as a black box, against
  any base URL that implements the API and its test mode (`make_http_machine`,
  `run_conformance`; `credits conformance BASE_URL` runs it).
- `RECOMMENDED`: the Hypothesis settings to run them with (also registered as the
  profile `credits-domain-recommended`).
"""

from credits_domain.testing import http, strategies
from credits_domain.testing.charge_path import ChargePathContract, ChosenPaths
from credits_domain.testing.contract import ApiKeyStoreContract, RepositoryContract
from credits_domain.testing.http import HttpServiceMachine, make_http_machine, run_conformance
from credits_domain.testing.machine import CreditsStateMachine, make_state_machine
from credits_domain.testing.model import ReferenceModel
from credits_domain.testing.profile import PROFILE_NAME, RECOMMENDED

__all__ = [
    "PROFILE_NAME",
    "RECOMMENDED",
    "ApiKeyStoreContract",
    "ChargePathContract",
    "ChosenPaths",
    "CreditsStateMachine",
    "HttpServiceMachine",
    "ReferenceModel",
    "RepositoryContract",
    "http",
    "make_http_machine",
    "make_state_machine",
    "run_conformance",
    "strategies",
]
