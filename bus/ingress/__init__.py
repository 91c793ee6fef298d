"""Ways in over the network: the HTTP ingress (and, later, the Fluentd forward listener)."""
