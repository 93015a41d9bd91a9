"""`python -m loadtest.bench`: `make bench`'s benchmark (`main.py`)."""

from loadtest.bench.main import main

main()
