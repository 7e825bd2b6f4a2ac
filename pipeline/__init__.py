"""Stage entry points and their plumbing: no model math here."""
