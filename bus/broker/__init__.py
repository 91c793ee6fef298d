"""The bus's coupling to Celery and kombu, in one place: the task message envelope (messages.py), the patches
to kombu's Redis transport (kombu_fixes.py) and the check that the kombu and Celery installed are ones they
were written against (versions.py), the start-up refusals (celery_checks.py), and the reads of kombu's
unacked hash for worker leases (unacked.py). bus/celery.py (the app `celery -A bus` finds) and
bus/celery_defaults.py (which users' celeryconfig.py imports) stay where Celery and those files name them.

Kept empty: the journal imports messages.py, and importing the package must not load the rest."""
