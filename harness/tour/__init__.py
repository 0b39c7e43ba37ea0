"""The guided tour of docs/tutorial.md: its pictures, made from real runs (``python -m harness.tour``)."""
