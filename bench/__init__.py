"""Benchmark harness of django-inotifier (not part of the installed package).

Entry point: ``python bench/run.py`` (``make bench``).  Layout:

* ``run.py``            -- command line, orchestration, RESULTS.md writing
* ``scenarios.py``      -- the scenarios (drain, burst, latency, recursive, tasks)
* ``consumer.py``       -- subprocess entry that runs one contender
* ``writer.py``         -- subprocess that creates files (the event source)
* ``common.py``         -- protocol, ``Recorder`` and the contexts contenders get
* ``report.py``         -- statistics, tables and target checks
* ``machine.py``        -- machine facts (cores, kernel limits, versions)
* ``contenders/``       -- baselines and the slot for this project
* ``c/rawread.c``       -- the raw C reader, compiled at run time
"""
