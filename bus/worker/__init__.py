"""The Celery worker's side: a task's delivery (delivery.py) and its HTTP attempts (outbound.py, connect.py), what
an answer means (classify.py, task_outcome.py), when to try again (backoff.py, deadline.py, breaker_gate.py), the
retry schedule (scheduler.py), ordered lanes (lane_run.py), lost-task recovery (recovery.py) and worker leases
(leases.py). Above the journal and the broker glue; imports neither the ingress nor the CLI."""
