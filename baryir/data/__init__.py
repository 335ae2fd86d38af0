"""Degradations, datasets and image I/O shared by every command."""
