"""The desired set of models (service/repository.py): what a load or unload makes of it, and what it refuses."""

import os

import pytest

from service.errors import ApiError
from service.repository import Desired, Repository
from service.rollout import Plan

A1, A2, A3, B1 = "a:1", "a:2", "a:3", "b:1"


def test_the_first_model_is_the_main_one_and_each_names_first_version_its_default() -> None:
    d = Desired.of([A1, B1, A2])
    assert (d.main, d.defaults, d.versions("a")) == ("a", {"a": A1, "b": B1}, ["1", "2"])


def test_a_load_switches_the_default_unless_told_not_to() -> None:
    d = Desired.of([A1, B1])
    assert d.loaded(A2, default=False).defaults["a"] == A1
    assert d.loaded(A2, default=True).defaults["a"] == A2
    assert Desired.of([B1]).loaded(A1, default=False).defaults["a"] == A1, "a name's first version is its default"


def test_an_unloaded_default_passes_to_the_version_loaded_last_and_the_main_model_stays() -> None:
    d = Desired.of([A1, B1]).loaded(A2, default=False).unloaded("a", "1")
    assert (d.tags, d.defaults["a"], d.main) == ((B1, A2), A2, "a")
    with pytest.raises(ValueError, match="default model"):
        d.unloaded("a", None)  # the main model's last version, though it is no longer listed first
    assert Desired.of([A1, B1]).unloaded("b", None).tags == (A1,), "another model may go entirely"
    with pytest.raises(LookupError):
        d.unloaded("a", "9")


def test_changes_are_numbered_and_kept_in_the_folder(tmp_path) -> None:
    first = Repository(str(tmp_path), "front")
    first.path.write_bytes(Desired.of([A1]).dump())
    changed = first.change(lambda d: d.loaded(A2, default=True))
    second = Repository(str(tmp_path), "engine")
    assert second.read([]) == changed and changed.generation == 1, "another process reads what one wrote"
    first.applied(changed)
    assert second.behind(changed, "engine") == [] and second.behind(changed) == []
    assert not first.changed() and second.change(lambda d: d).generation == 2 and first.changed()
    assert first.behind(second.read([])) == [os.getpid()], "this process applied generation 1 only"
    first.forget_processes()  # a new deployment: process numbers of the last one mean nothing
    assert first.behind(second.read([])) == [] and second.read([]).tags == (A1, A2), "the set itself is kept"


def test_a_canary_or_shadow_never_moves_the_default_and_a_plain_load_promotes_it() -> None:
    d = Desired.of([A1, B1]).routed(A2, Plan(traffic=20)).routed(A3, Plan(shadow_rate=0.5))
    assert (d.defaults["a"], d.traffic, d.shadows) == (A1, {A2: 20}, {A3: 0.5})
    assert d.split("a").canaries == (("2", 20),) and d.split("a").shadows == (("3", 0.5),)
    assert d.routed(A2, Plan(traffic=50)).traffic == {A2: 50}, "loading again changes the weight"
    assert d.routed(A2, Plan(shadow_rate=1)).traffic == {}, "a canary turned shadow is no longer a canary"
    assert d.routed(A2, Plan(traffic=0)).traffic == {} and A2 in d.routed(A2, Plan(traffic=0)).tags, "0 ends it"
    promoted = d.loaded(A2, default=True)
    assert (promoted.defaults["a"], promoted.traffic, promoted.previous) == (A2, {}, {A2: A1}), "promote ends it"
    assert promoted.shadows == {A3: 0.5}, "another version's shadow goes on, against the new default"


def test_rollouts_that_make_no_sense_are_refused_with_the_reason() -> None:
    d = Desired.of([A1, B1]).routed(A2, Plan(traffic=60))
    assert d.routed(A3, Plan(traffic=40)).traffic == {A2: 60, A3: 40}, "up to 100 %"
    with pytest.raises(ApiError, match="110 %"):
        d.routed(A3, Plan(traffic=50))
    with pytest.raises(ApiError, match="is the default"):
        d.routed(A1, Plan(shadow_rate=1))
    with pytest.raises(ApiError, match="not loaded"):
        d.routed("c:1", Plan(traffic=5))


def test_rolling_back_a_promoted_version_restores_the_default_it_replaced() -> None:
    d = Desired.of([A1]).loaded(A2, default=False).loaded(A3, default=True)  # A3 replaced A1, not A2
    back = d.unloaded("a", "3")
    assert back.defaults["a"] == A1, "not the version loaded last"
    chain = Desired.of([A1]).loaded(A2, default=True).loaded(A3, default=True).unloaded("a", "2")
    assert chain.previous == {A3: A1} and chain.unloaded("a", "3").defaults["a"] == A1, "a gone link is passed over"
    canary = Desired.of([A1]).routed(A2, Plan(traffic=10)).unloaded("a", "2")
    assert (canary.defaults["a"], canary.traffic) == (A1, {}), "a canary unloaded ends its share"


def test_the_rollout_is_kept_in_the_file_and_an_old_file_reads_without_one(tmp_path) -> None:
    repository = Repository(str(tmp_path), "front")
    repository.path.write_bytes(b'{"tags": ["a:1"], "defaults": {"a": "a:1"}, "main": "a", "generation": 3}')
    assert repository.read([]) == Desired((A1,), {"a": A1}, "a", 3)
    changed = repository.change(lambda d: d.loaded(A2, default=True).routed(A3, Plan(traffic=25)))
    assert Repository(str(tmp_path), "engine").read([]) == changed and changed.previous == {A2: A1}


def test_a_fleet_shares_versions_defaults_and_rollouts_but_not_the_main_model() -> None:
    d = Desired.of([A1, B1]).loaded(A2, default=True).routed(A3, Plan(shadow_rate=0.5))
    adopted = Desired.of([B1]).adopted(d.shared())
    assert adopted.main == "b" and adopted.shared() == d.shared() and adopted.previous == {A2: A1}


def test_canaries_keep_the_order_they_started_in_whatever_the_load_order() -> None:
    d = Desired.of([A1]).loaded(A2, default=False).routed(A3, Plan(traffic=10)).routed(A2, Plan(traffic=5))
    assert d.split("a").canaries == (("3", 10), ("2", 5)), "a:3 started first: its range starts at the bottom"
    assert d.routed(A3, Plan(traffic=30)).split("a").canaries == (("3", 30), ("2", 5)), "growing keeps its place"


def test_a_version_promoted_back_does_not_become_its_own_predecessor() -> None:
    d = Desired.of([A1]).loaded(A2, default=True).loaded(A1, default=True).unloaded("a", "1")
    assert d.defaults["a"] == A2 and d.previous == {}


def test_a_look_or_a_refused_change_leaves_another_process_write_to_the_watch(tmp_path) -> None:
    mine, other = Repository(str(tmp_path), "front"), Repository(str(tmp_path), "front")
    mine.path.write_bytes(Desired.of([A1]).dump())
    mine.read([])
    other.change(lambda d: d.loaded(A2, default=False))
    assert mine.peek().tags == (A1, A2)
    with pytest.raises(LookupError):
        mine.change(lambda d: d.unloaded("a", "9"))
    assert mine.changed(), "the watch still applies what the other process wrote"
