"""The GPU host's benchmark: its sections (`main.py`), their run and deadline (`run.py`), what
they share (`bench.py`), the self-checks, the composites, the figures and the load on server
processes; `carry.sh` builds what the host lacks and `host.sh` runs it there."""
