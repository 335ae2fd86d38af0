"""File handling shared by every layer, torch-free: atomic writes and the image codec."""
