"""PostgreSQL clusters as the participants of a run (``harness.run --backend postgres``).

Only ``points`` is imported by modules outside this package without psycopg;
everything else needs the ``postgres`` extra.
"""
