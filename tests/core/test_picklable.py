"""The configuration dataclasses survive pickling (a sweep's workers send them back).

Under the compiled build (``make test-compiled``) these failed before ``__reduce__``:
unpickling a mypyc frozen dataclass raised ``FrozenInstanceError``.
"""

from __future__ import annotations

import pickle

import pytest

from pbkv.core.client_session import ClientConfig
from pbkv.core.kv_store import Limits
from pbkv.core.replica_base import ReplicaConfig

LIMITS = Limits(key_bytes_max=7, value_bytes_max=9, window=3)

CONFIGS = [
    LIMITS,
    ClientConfig(retry_initial_ticks=3, timeout_ticks=77),
    ReplicaConfig(ping_interval_ticks=4, durable=True, limits=LIMITS),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: type(c).__name__)
def test_a_config_is_equal_after_a_pickle_round_trip(config: object) -> None:
    for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):
        copy = pickle.loads(pickle.dumps(config, protocol=protocol))
        assert copy == config
        assert type(copy) is type(config)


def test_the_nested_limits_keep_their_values() -> None:
    copy = pickle.loads(pickle.dumps(CONFIGS[2]))
    assert isinstance(copy, ReplicaConfig)
    assert copy.limits.key_bytes_max == 7
    assert copy.limits is not LIMITS
