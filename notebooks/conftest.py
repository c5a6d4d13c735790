"""Notebooks under pytest (nbmake): smoke mode, so each runs in seconds on the demo competition.

Set here, in the pytest process, so the kernels nbmake starts inherit it. `KIT_SMOKE=0 pytest
--nbmake notebooks/` runs them with their real parameters instead (on KIT_DATA or data/).
KIT_TEST_THREADS (the test suite's thread pin) becomes the kernels' KIT_THREADS: on a shared
2-core machine two torch threads beside other busy processes run ~10x slower than one.
"""

import os

os.environ.setdefault("KIT_SMOKE", "1")
if "KIT_TEST_THREADS" in os.environ:
    os.environ.setdefault("KIT_THREADS", os.environ["KIT_TEST_THREADS"])
