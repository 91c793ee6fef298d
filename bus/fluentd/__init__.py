"""The Fluentd pieces together: reading a Fluentd configuration (config.py) and turning its matches into bus
routes (routes.py), for `bus routes import FLUENTD.CONF`. Builds on routes.py and tags.py; imports neither the
journal nor the worker nor the ingress."""
