"""Load test of the gRPC service (issue 5): corpus, pre-check, h2load runs, echo baseline.

``python -m tests.load`` runs the full load test (``make loadtest``); ``--ci`` runs the
short version that CI gates on (any error, wrong decision, count mismatch or memory
growth fails it; absolute speed never does). Modules:

* ``corpus``      requests built from the default bundle's own cases, with the answers
                  the decision core gives in-process; h2load data files
* ``check``       full-answer comparison, the pre-check over gRPC, the CLI cross-check
                  and the second client that checks decisions during the load
* ``echo_server`` a bare echo service on the same gRPC stack: the baseline
* ``h2load``      runs h2load processes pinned to a core and reads their results
* ``procs``       the servers under test: start, pin, CPU time, RSS, metrics counters
* ``harness``     the runs, the table, the JSON file and the pass/fail verdict
* ``profile``     py-spy over a loaded worker, summarised by function (not run in CI)

``make loadtest`` = ``python -m tests.load --json loadtest-results.json`` (about 5
minutes); ``--compare OLD.json`` prints each row against a previous run. CI runs
``python -m tests.load --ci`` (about 65 s); ``pytest -m load tests/load`` runs the same.
"""
