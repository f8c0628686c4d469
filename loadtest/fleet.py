"""What a fleet costs a front: the same front (one worker) calling three engine servers against calling one, driven
in turn in rounds (the order rotating) so that each ratio is paired within a round; the front's own CPU-ms per
/classify request (its process tree, from /proc), medians over the rounds. The engines' CPU is not counted: the
question is what the heartbeats, the balancing and the set's polling add to the front.

    python -m loadtest.fleet [--rounds 5] [--count 400] [--clients 8]
"""

import argparse
import json
import statistics
import sys
from contextlib import ExitStack

from .cpu import cpu_per_request
from .drive import photos
from .overhead import DEFAULT
from .server import ROOT, model_home, serve

TOKEN, SIZES = "fleet-cost", (1, 3)


def measure(rounds: int, count: int, clients: int) -> dict:
    out = ROOT / "reports" / "fleet"
    out.mkdir(parents=True, exist_ok=True)
    home = model_home(out / "home", DEFAULT)
    env = {"BENTOML_HOME": str(home), "RESNET_MODELS": f"{DEFAULT.name}:latest", "RESNET_ENGINE_TOKEN": TOKEN}
    engine = [sys.executable, "-m", "service.engine.server"]
    bodies, samples = photos(sizes=(640,)), {n: [] for n in SIZES}
    with ExitStack() as stack:
        engines = [
            stack.enter_context(serve(f"e{i}", env, out / f"e{i}.log", command=engine, ready_path="/v2/health/ready"))
            for i in range(max(SIZES))
        ]
        fronts = {
            n: stack.enter_context(
                serve(
                    "service.service:Classifier",
                    {**env, "RESNET_ENGINE_URL": ",".join(engines[:n]), "RESNET_FRONT_WORKERS": "1"},
                    out / f"front{n}.log",
                )
            )
            for n in SIZES
        }
        for r in range(rounds):
            for n in SIZES if r % 2 == 0 else SIZES[::-1]:
                url = fronts[n]
                samples[n].append(cpu_per_request(url, [url.pid], bodies, clients, count)["server_cpu_ms"])
    ratios = [three / one for one, three in zip(samples[1], samples[3], strict=True)]
    return {
        "front_cpu_ms": {f"{n} engine(s)": statistics.median(v) for n, v in samples.items()},
        "ratio_3_over_1": statistics.median(ratios),
        "ratios": ratios,
        "clients": clients,
        "rounds": rounds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--count", type=int, default=400)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    print(json.dumps(measure(args.rounds, args.count, args.clients), indent=2))


if __name__ == "__main__":
    main()
