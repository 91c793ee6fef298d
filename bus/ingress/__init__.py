"""Ways in over the network: the HTTP ingress and the Fluentd forward listener."""
