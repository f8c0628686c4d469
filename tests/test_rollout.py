"""A rollout's routing (service/rollout.py): canary shares within binomial bounds, sticky keys that stay when a
canary grows, shadows drawn at their rate, and the parameters a load refuses."""

import pytest

from service.classifier.front import Front
from service.config import Settings
from service.errors import ApiError
from service.metrics import GONE_S
from service.rollout import BUCKETS, ROUTING_KEY, Plan, Split, bucket


def picks(split: Split, keys: list[str | None]) -> list[str]:
    out = []
    for key in keys:
        token = ROUTING_KEY.set(key)
        out.append(split.pick())
        ROUTING_KEY.reset(token)
    return out


def test_a_canary_takes_its_share_of_requests_without_a_key() -> None:
    n, share = 10_000, 0.2
    got = picks(Split("1", (("2", 20),)), [None] * n).count("2")
    assert abs(got - n * share) < 4 * (n * share * (1 - share)) ** 0.5, got  # 4 standard deviations
    assert set(picks(Split("1"), [None] * 100)) == {"1"}


def test_a_key_keeps_its_version_and_keys_on_a_growing_canary_stay() -> None:
    keys = [f"user-{i}" for i in range(2000)]
    at20, at50 = picks(Split("1", (("2", 20),)), keys), picks(Split("1", (("2", 50),)), keys)
    assert at20 == picks(Split("1", (("2", 20),)), keys), "the same key, the same version"
    assert all(b == "2" for a, b in zip(at20, at50, strict=True) if a == "2"), "no key leaves the canary"
    assert 0.15 < at20.count("2") / len(keys) < 0.25 and 0.45 < at50.count("2") / len(keys) < 0.55
    assert bucket("user-1") == bucket("user-1") and 0 <= bucket("user-1") < BUCKETS


def test_shadows_are_drawn_at_their_rate() -> None:
    split = Split("1", shadows=(("3", 1.0), ("4", 0.25)))
    drawn = [split.mirrored() for _ in range(4000)]
    assert all("3" in d for d in drawn) and 0.2 < sum("4" in d for d in drawn) / 4000 < 0.3


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"traffic": 101}, "0 to 100"),
        ({"traffic": -1}, "0 to 100"),
        ({"traffic": True}, "0 to 100"),
        ({"traffic": "20"}, "0 to 100"),
        ({"traffic": 20, "shadow": True}, "not both"),
        ({"traffic": 20, "default": False}, "never changes the default"),
        ({"shadow": True, "default": True}, "never changes the default"),
        ({"shadow": True, "shadow_rate": 1.5}, "0 to 1"),
        ({"shadow_rate": 0.5}, "goes with shadow"),
        ({"shadow": "yes"}, "goes with shadow"),
    ],
)
def test_a_load_refuses_rollout_parameters_out_of_range(params: dict, reason: str) -> None:
    with pytest.raises(ApiError, match=reason) as raised:
        Plan.of(params)
    assert raised.value.status == 400


def test_a_load_reads_its_plan() -> None:
    assert Plan.of({"version": "2"}) is None and Plan.of({"default": False}) is None
    assert Plan.of({"traffic": 20}) == Plan(traffic=20.0)
    assert Plan.of({"shadow": True}) == Plan(shadow_rate=1.0) and Plan.of({"shadow": False}) == Plan(shadow_rate=0.0)
    assert Plan.of({"shadow": True, "shadow_rate": 0.3}) == Plan(shadow_rate=0.3)


def test_series_of_a_version_unloaded_a_while_ago_leave_metrics() -> None:
    """Its own figures, and a shadow's comparison with it as the default; another model's same version stays."""
    front = Front(None, Settings(), None)
    front.entries = {"m:1": None, "m:2": None}
    front.update({}, {}, "")
    assert set(front.gone) == {"m:1", "m:2"}
    front.gone["m:1"] -= GONE_S + 1
    text = (
        'resnet_answers_total{model="m",version="1"} 3.0\n'
        'resnet_answers_total{model="m",version="2"} 1.0\n'
        'resnet_shadow_compared_total{default="1",model="m",version="3"} 4.0\n'
        'resnet_answers_total{model="m-image",version="1"} 1.0\n'
    )
    assert front.keep_series(text) == (
        'resnet_answers_total{model="m",version="2"} 1.0\nresnet_answers_total{model="m-image",version="1"} 1.0\n'
    ), "m:2 left only now: its series stay a while"
