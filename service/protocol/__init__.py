"""The Open Inference Protocol (KServe v2): the body codec, the server routes, and the client of a remote engine."""
