"""A webhook endpoint that does not answer never holds up charging (R24): while a
delivery is in flight to a receiver that holds the request open, the same database
takes a subscription and a charge, and the delivery completes after, unharmed."""

from __future__ import annotations

import threading
from pathlib import Path

from adapters import bootstrap
from adapters.bootstrap import Settings
from adapters.webhooks import register
from adapters.webhooks.delivery import DeliveryLimits, deliver_pass, new_client
from adapters.webhooks.runner import WebhookRunner
from credits_domain import Channel, Contact
from endpoint_store_contract import counting_bytes
from webhook_support import ListSource, Receiver, Reply


def _until(check: object, what: str) -> None:
    waiting = threading.Event()
    for _ in range(600):  # a bound: 30 s
        if callable(check) and check():
            return
        waiting.wait(0.05)
    raise AssertionError(f"still waiting for {what}")


def test_a_charge_completes_while_a_delivery_hangs(tmp_path: Path) -> None:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'credits.db'}", migrate=True, verifier_script={}
    )
    source = ListSource()
    gate = threading.Event()
    with (
        Receiver() as receiver,
        bootstrap.build(settings) as wiring,
        new_client(30.0) as client,
    ):
        register(
            wiring.webhooks,
            "acme",
            receiver.url,
            at=wiring.clock.now(),
            random_bytes=counting_bytes(),
        )
        source.emit("acme", wiring.clock.now())
        receiver.script(Reply(status=204, gate=gate))
        runner = WebhookRunner(
            lambda after_id: deliver_pass(
                store=wiring.webhooks,
                source=source,
                client=client,
                clock=wiring.clock,
                draw=lambda: 0.5,
                limits=DeliveryLimits(timeout_s=30),
                after_id=after_id,
                stopping=runner.stopping,
            ),
            interval_s=0.05,
        )
        runner.start()
        try:
            _until(lambda: len(receiver.received) == 1, "the delivery to start")
            wiring.service.subscribe("acme", "boost")
            result = wiring.service.unlock("acme", [Contact.email("ann@corp.com")])
            assert result.charged(Channel.EMAIL) == 1
            # The charge is done and the delivery is still in flight, unacknowledged.
            assert runner.delivered == 0 and not gate.is_set()
            assert wiring.webhooks.endpoints("acme")[0].last_seq == 0
            gate.set()
            _until(lambda: runner.delivered == 1, "the delivery to end")
        finally:
            gate.set()
            assert runner.stop(timeout_s=30)
        assert wiring.webhooks.endpoints("acme")[0].last_seq == 1
        assert receiver.seqs() == [1]
