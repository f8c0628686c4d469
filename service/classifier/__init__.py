"""The classifier behind the public routes: labels, heat maps, embeddings, response schemas, image models."""
