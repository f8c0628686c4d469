"""The only place that imports onnxruntime: sessions, the runner, the engine in process and the engine server."""
