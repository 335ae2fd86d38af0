"""Backends compared on this machine: ``parity`` (quality against PyTorch and the clean targets)
and ``bench`` (latency, throughput, memory). They sit above export (they export what they need)
and the runtimes (they run it); nothing below imports them."""
