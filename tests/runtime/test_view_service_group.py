"""How servers and clients find the leader of a view service replicated on etcd
(``pbkv.runtime.group``), by hand: redirects, strangers, refused connections, silence."""

from __future__ import annotations

import pytest

from pbkv.runtime.config import ConfigError
from pbkv.runtime.group import ViewServiceGroup, member_after, split_members

A, B, C = "127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"


def test_a_redirect_to_a_listed_member_moves_there() -> None:
    group = ViewServiceGroup((A, B, C))
    assert group.target(1.0) == A
    group.on_not_leader(A, C, 1.0)
    assert group.target(1.1) == C


def test_a_redirect_to_a_stranger_or_to_nobody_moves_to_the_next_member() -> None:
    group = ViewServiceGroup((A, B, C))
    group.on_not_leader(A, "10.0.0.9:7000", 1.0)  # a follower cannot send anyone elsewhere
    assert group.current == B
    group.on_not_leader(B, "", 1.0)
    assert group.current == C


def test_a_late_redirect_from_a_member_already_left_changes_nothing() -> None:
    group = ViewServiceGroup((A, B, C))
    group.on_not_leader(A, B, 1.0)
    group.on_not_leader(A, C, 1.1)
    assert group.current == B


def test_an_unreachable_member_is_left_for_the_next() -> None:
    group = ViewServiceGroup((A, B, C))
    group.on_unreachable(B, 1.0)  # not the current one: nothing
    assert group.current == A
    group.on_unreachable(A, 1.0)
    assert group.current == B


def test_a_silent_member_is_left_after_the_silence_but_not_one_that_answers() -> None:
    group = ViewServiceGroup((A, B), silence_s=1.0)
    assert group.target(10.0) == A
    group.heard(A, 10.8)
    assert group.target(11.5) == A  # heard 0.7 s ago
    assert group.target(11.9) == B  # silent for 1.1 s: a paused process keeps its connection
    assert group.target(12.5) == B
    assert group.target(13.0) == A


def test_lists_are_checked() -> None:
    assert split_members(f"{A}, {B}") == (A, B)
    for bad in ("", ",", f"{A},{A}", "host", ",".join(f"127.0.0.1:{p}" for p in range(1, 18))):
        with pytest.raises(ConfigError):
            split_members(bad)
    assert member_after((A, B, C), C, "") == A
    assert member_after((A, B, C), A, C) == C
    assert member_after((A, B, C), A, A) == B


def test_a_member_left_for_silence_is_not_returned_to_on_a_redirect_for_a_while() -> None:
    group = ViewServiceGroup((A, B, C), silence_s=1.0)
    assert group.target(10.0) == A
    assert group.target(11.1) == B  # A (the paused leader) went silent
    group.on_not_leader(B, A, 11.15)  # B still names A: its lease has not expired yet
    assert group.current == C  # not back to A: on to the next follower
    group.on_not_leader(C, A, 11.2)
    assert group.current == B  # cycling the followers, one per message, passing over A
    group.on_not_leader(B, C, 11.3)  # C won the election
    assert group.current == C
    group.on_not_leader(C, A, 12.5)  # a second later A may be named again (it came back)
    assert group.current == A
