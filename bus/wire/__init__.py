"""Redis wire clients: RESP packing (resp.py), where a Redis is and how to reach it (target.py), and the
pipelined clients the journal and the ingress talk through (pipelined.py). Below the journal: imports no
other bus package."""
