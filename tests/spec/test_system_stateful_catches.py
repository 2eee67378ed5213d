"""The stateful model check is not vacuous: each broken model below must make it fail."""

from __future__ import annotations

from functools import partial

import pytest
from hypothesis import Phase, settings
from hypothesis.stateful import run_state_machine_as_test

from spec import handoff, models, translate
from spec.variants import _fresh_isns
from tests.spec.test_system_stateful import GatewaySystem

# No shrinking: the test only needs *a* failure, and shrinking a whole session is slow.
SETTINGS = settings(settings.default, max_examples=300, stateful_step_count=60,
                    derandomize=True, print_blob=False, report_multiple_bugs=False,
                    phases=[Phase.explicit, Phase.reuse, Phase.generate])


def _fails() -> str:
    with pytest.raises(AssertionError) as info:
        run_state_machine_as_test(GatewaySystem, settings=SETTINGS)
    return str(info.value)


def test_catches_off_by_one_client_to_server_translation(monkeypatch) -> None:
    monkeypatch.setattr(translate, "seq_to_server",
                        lambda sp, s: (s + sp.c2s_seq - 1) & 0xFFFFFFFF)
    _fails()


def test_catches_fast_path_acking_the_held_request(monkeypatch) -> None:
    monkeypatch.setattr(models, "fp_ack_to_client",
                        partial(models.fp_ack_to_client, ack_held_early=True))
    real_apply = models.FastPathModel._apply

    def acking_apply(self, effect, seg, now, *, reason):
        out = real_apply(self, effect, seg, now, reason=reason)
        if effect is models.Effect.HOLD_AND_OPEN_SERVER:
            ack = models.fp_ack_to_client(effect, self.proxy.client, None, 0, seg.length)
            self.client_acked_to_client = seg.length
            out.to_client.append(models.Segment(seq=(self.isn_c + 1) & 0xFFFFFFFF, ack=ack))
        return out

    monkeypatch.setattr(models.FastPathModel, "_apply", acking_apply)
    assert "fast path ACKed client bytes the server has not received" in _fails()


def test_catches_handoff_that_does_not_copy_the_isns(monkeypatch) -> None:
    monkeypatch.setattr(handoff, "handoff", partial(handoff.handoff, obtain=_fresh_isns))
    _fails()


def test_the_unbroken_model_passes_the_same_settings() -> None:
    run_state_machine_as_test(GatewaySystem, settings=SETTINGS)
