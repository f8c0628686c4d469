"""Client errors with a status and a JSON body ``{error, detail}``; nothing internal leaks."""


class ClientError(Exception):
    """Raised for bad input; the front service turns it into a 4xx JSON response."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail

    def body(self) -> dict[str, str]:
        return {"error": self.error, "detail": self.detail}
