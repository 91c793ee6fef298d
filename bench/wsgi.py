"""The bus's WSGI app as a module attribute, for WSGI servers other than `bus serve`'s gunicorn (bench only)."""
from bus import intake
from bus.ingress.http import make_app

app = make_app(intake.default())
