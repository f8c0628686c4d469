"""The only place that imports onnxruntime: sessions, the runner, the batcher, and the engine server."""
