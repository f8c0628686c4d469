"""The desired set of models (service/repository.py): what a load or unload makes of it, and what it refuses."""

import os

import pytest

from service.repository import Desired, Repository

A1, A2, B1 = "a:1", "a:2", "b:1"


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
