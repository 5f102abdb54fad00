"""Progress output: a bar on a terminal, a few whole lines in a log."""

import subprocess
import sys


def test_progress_in_a_log_is_a_few_whole_lines():
    code = ("import time; from unifl.core.progress import progress_bar\n"
            "for _ in progress_bar(range(400), desc='UniFL stage 1'): time.sleep(0.001)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    lines = out.stderr.splitlines()
    assert "\r" not in out.stderr
    assert 1 <= len(lines) <= 3 and lines[-1].startswith("UniFL stage 1: 100%") and "400/400" in lines[-1]
