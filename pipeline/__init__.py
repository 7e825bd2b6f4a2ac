"""Stage entry points and their plumbing: no model math here."""

from pipeline import forkserver

# `python -m pipeline.STAGE`: run in a preloaded server's child when one is there (pipeline/forkserver.py)
forkserver.handover()
