"""Errors with an HTTP status and a JSON body ``{error, detail}``; nothing internal leaks."""


class ApiError(Exception):
    """Raised for bad input (4xx) or an unavailable engine (503); the front turns it into JSON."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail

    def body(self) -> dict[str, str]:
        return {"error": self.error, "detail": self.detail}


class EngineUnavailable(Exception):
    """The engine cannot take the call now (unreachable, restarting or over its queue budget): 503, retry."""
