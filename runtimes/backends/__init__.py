"""One module per backend; each imports its library lazily."""
