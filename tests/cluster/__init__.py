"""Tests against a real single-node SLURM cluster on localhost."""
