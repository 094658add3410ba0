"""The hand-written Llama, read top to bottom in data-flow order (docs/tour.md):
config -> norms -> rope -> attention (+ KV cache) -> model -> optimizer -> sampling -> beam."""
