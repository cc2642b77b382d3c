"""A catalog that survives losing the server's database (issue 13).

* :mod:`.service`: encrypted copies of the database under ``server/catalog/`` in the bucket
  (``backapp catalog backup`` / ``restore``, and the periodic catalog round);
* :mod:`.sealed`: the copies' file format (HKDF from the server secret, AES-256-GCM chunks);
* :mod:`.dump`: SQLite's online backup API, ``pg_dump``/``pg_restore``;
* :mod:`.metadata`: the small JSON object beside each completed backup;
* :mod:`.rebuild`: ``backapp catalog rebuild --from-bucket``, from those objects alone.

Nothing is imported here, so that the backup service can import :mod:`.metadata` without pulling
in the rest.
"""
