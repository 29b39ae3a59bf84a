"""Reproducibility: a seed is a complete description of a run."""

from __future__ import annotations

import io
import json

from pbkv.sim import Overrides, draw_params, run_simulation
from pbkv.sim.params import Seeds


def test_same_seed_gives_the_identical_event_trace() -> None:
    first = run_simulation(7)
    second = run_simulation(7)
    assert first.digest == second.digest
    assert first.stats.deliveries == second.stats.deliveries


def test_different_seeds_give_different_traces() -> None:
    digests = {run_simulation(seed).digest for seed in range(1, 6)}
    assert len(digests) == 5


def test_overrides_change_the_run_and_are_reproducible_too() -> None:
    overrides = Overrides(clients=1, no_faults=True)
    plain = run_simulation(7)
    first = run_simulation(7, overrides)
    assert first.digest != plain.digest
    assert run_simulation(7, overrides).digest == first.digest
    assert first.replay == "pbkv sim --seed 7 --clients 1 --no-faults"


def test_sub_seeds_are_independent_streams() -> None:
    seeds = Seeds.of(1)
    values = [seeds.params, seeds.network, seeds.faults, seeds.workload, seeds.nodes]
    assert len(set(values)) == 5
    assert Seeds.of(1) == seeds


def test_fault_parameters_are_drawn_from_the_seed_and_printable() -> None:
    text = draw_params(3).describe()
    assert text == draw_params(3).describe()
    assert "faults for 2000 ticks" in text
    assert draw_params(3, Overrides(crash_rate=2.5)).faults.crash_rate == 2.5


def test_trace_file_is_json_lines_of_the_whole_run() -> None:
    stream = io.StringIO()
    result = run_simulation(2, trace_stream=stream)
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert events[0] == {"tick": 0, "event": "phase", "what": "faults"}
    kinds = {event["event"] for event in events}
    assert {"deliver", "invoke", "complete", "phase", "log"} <= kinds
    deliveries = sum(1 for event in events if event["event"] == "deliver")
    assert deliveries == result.stats.deliveries
    assert run_simulation(2).digest == result.digest  # tracing does not change the run


def test_history_file_is_what_check_history_reads() -> None:
    from pbkv.check import check_history, parse_history_lines

    stream = io.StringIO()
    result = run_simulation(7, history_stream=stream)  # a durable run that ends ok
    assert result.outcome == "ok"
    operations = parse_history_lines(stream.getvalue().splitlines())
    assert len(operations) == result.stats.operations
    assert check_history(operations).verdict == "ok"


def test_fault_params_carry_every_network_field_under_its_own_name() -> None:
    """FaultParams keeps NetworkParams' fields flat (overrides set them by name); network()
    must hand every one of them over, so the two cannot drift apart."""
    import dataclasses

    from pbkv.sim.faults import FaultParams
    from pbkv.sim.network import NetworkParams

    names = [spec.name for spec in dataclasses.fields(NetworkParams)]
    values = {
        name: (0.125 if isinstance(getattr(NetworkParams(), name), float) else 7) for name in names
    }
    params = dataclasses.replace(FaultParams(), **values)  # type: ignore[arg-type]
    assert dataclasses.asdict(params.network()) == values


def test_the_edge_faults_replay_identically_from_their_line() -> None:
    """Sizes, adversaries, stale restarts, client crashes and disk loss come from the seed
    too: the replay line (with its overrides) repeats the run to the last byte."""
    overrides = Overrides(
        hostile_rate=40.0,
        forge_rate=40.0,
        stale_restart_rate=1.5,
        client_crash_rate=2.0,
        view_service_crash_rate=1.0,
        view_service_disk_loss=1.0,
    )
    first = run_simulation(11, overrides)
    assert run_simulation(11, overrides).digest == first.digest
    assert first.replay == (
        "pbkv sim --seed 11 --view-service-crash-rate 1 --view-service-disk-loss 1 "
        "--client-crash-rate 2 --stale-restart-rate 1.5 --hostile-rate 40 --forge-rate 40"
    )
