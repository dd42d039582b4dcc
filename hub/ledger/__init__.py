"""Token budgets and the cost ledger: what each tenant used, what it cost, and whether
it may use more.

- :mod:`~hub.ledger.prices` and :mod:`~hub.ledger.budgets` (the ``prices:`` and
  ``budgets:`` sections) are pure: a price table and limits, a cost and a verdict;
- :mod:`~hub.ledger.windows` names the UTC hour, day and month a moment falls in;
- :mod:`~hub.ledger.totals` keeps each tenant's running totals of the current day and
  month in memory, for a budget check that costs no I/O;
- :mod:`~hub.ledger.store` is the SQLite file (``ledger:``), and
  :mod:`~hub.ledger.writer` the one thread that writes it, in batches, so a request
  never waits for a disk;
- :mod:`~hub.ledger.ledger` ties them together for the request path
  (``record``, ``check``, ``spill_allowed``) and the admin API (``query``).
"""
