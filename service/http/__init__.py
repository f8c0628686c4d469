"""ASGI machinery, no numpy: the Guard (limits, token, deadlines, CORS), bounded bodies, the multipart fast path."""
