"""Benchmarks: the kit side by side with what a user would otherwise run (`python -m bench.NAME`).

kitlib is imported first so that both sides of every benchmark run under the same process settings
(OpenMP's passive wait policy must be set before torch loads).
"""

import kitlib  # noqa: F401
