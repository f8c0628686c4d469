"""The Open Inference Protocol's routes, spelled once: health, models, the repository, and who may change it.

The front's Guard, the engine server, the REST router and the gRPC servicer all read these.
"""

import re

LIVE, READY = "/v2/health/live", "/v2/health/ready"
HEALTH = (LIVE, READY)  # open, as probes need
INDEX = "/v2/repository/index"
REPOSITORY = "/v2/repository/models/"  # loading and unloading models: a token, or a caller on this machine
MODEL = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?(/ready|/infer)?$")
CHANGE = re.compile(r"^/v2/repository/models/([^/]+)/(load|unload)$")
DESIRED = "/v2/repository/desired"  # this project's engine: the whole set a fleet shares (GET it, PUT it)


def is_v2(path: str) -> bool:
    return path == "/v2" or path.startswith("/v2/")


def model_path(name: str, version: str | None = None, action: str = "") -> str:
    """``/v2/models/NAME[/versions/V]`` and an action (``/ready``, ``/infer``)."""
    return f"/v2/models/{name}" + (f"/versions/{version}" if version else "") + action


def change_path(name: str, action: str) -> str:
    return f"{REPOSITORY}{name}/{action}"


def change_refused(token: str, local: bool) -> str | None:
    """Why a call that loads or unloads models may not (with no token, only this machine may), or None."""
    if not token and not local:
        return "loading and unloading models takes RESNET_API_TOKEN, or a call from this machine"
    return None
