"""`python -m loadtest.bench.gpu`: the GPU benchmark (`main.py`)."""

from loadtest.bench.gpu.main import main

raise SystemExit(main())
