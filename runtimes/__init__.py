"""One runner interface over every inference backend."""
