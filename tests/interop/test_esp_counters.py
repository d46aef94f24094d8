"""The matrix's ESP-counter check reports a side whose counters did not move."""

from aioipsec.interop.checks import esp_counter_problems
from aioipsec.interop.scenario import Scenario


def _view(name: str, packets_in: int, packets_out: int) -> dict:
    child = {"state": "INSTALLED", "packets-in": str(packets_in), "packets-out": str(packets_out)}
    return {name: {"state": "ESTABLISHED", "child-sas": {"net-1": child}}}


def test_counters_that_moved_pass_and_a_stuck_counter_is_reported() -> None:
    scenario = Scenario()
    name = scenario.connection_name
    moving = _view(name, 3, 3)
    assert esp_counter_problems(scenario, moving, moving, 3) == []
    stuck = _view(name, 0, 3)
    problems = esp_counter_problems(scenario, moving, stuck, 3)
    assert problems == ["responder: ESP packets-in 0 after 3 echo replies"]
