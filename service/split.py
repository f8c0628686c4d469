"""Serve the engine alone, or the front alone against a remote engine, so each scales on its own.

    python -m service.split engine [--host 0.0.0.0] [--port 3001]
    python -m service.split front --engine http://resnet-engine:3001 [--host 0.0.0.0] [--port 3000]

`bentoml serve` starts both services of the graph on one machine, and BentoML 1.4.40's CLI has no
option to start one of them against a remote dependency (BentoCloud does this). Its server
function has, so this calls it as `bentoml serve` would: BentoML internals, pinned with it.
"""

import argparse
import sys

from _bentoml_impl.server import serve_http
from bentoml._internal.service.loader import load

from . import check

TARGET = "service.service:Classifier"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("role", choices=("engine", "front"))
    parser.add_argument("--engine", help="the engine's base URL (front only)")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=3000)
    args = parser.parse_args()
    if (args.role == "front") != bool(args.engine):
        parser.error("--engine URL is required for the front, and only for it")
    if check.main():  # the models the engine loads, and whose labels the front reads
        sys.exit(1)
    load(TARGET, working_dir=".").inject_config()
    if args.role == "engine":
        serve_http(TARGET, working_dir=".", host=args.host, port=args.port, service_name="resnet-engine")
    else:
        serve_http(TARGET, working_dir=".", host=args.host, port=args.port,
                   dependency_map={"resnet-engine": args.engine})  # fmt: skip


if __name__ == "__main__":
    main()
