"""The bus's werkzeug WSGI app as a module attribute, for WSGI servers to serve alone (bench experiments only)."""
from bus import intake
from bus.ingress.http import make_app

app = make_app(intake.default())
