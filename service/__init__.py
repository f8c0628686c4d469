"""BentoML services: the public front and the batching inference engine; no torch."""
