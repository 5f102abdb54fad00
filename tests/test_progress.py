"""Progress output: a bar on a terminal, a few whole lines in a log."""

import subprocess
import sys


def test_progress_in_a_log_is_a_few_whole_lines():
    code = ("import time; from unifl.core.progress import progress_bar\n"
            "bar = progress_bar(total=400, desc='UniFL stage 1')\n"
            "for i in range(400):\n"
            "    time.sleep(0.001); bar.update(1); bar.set_postfix(loss=i); bar.set_description('UniFL stage 1')\n"
            "bar.close()\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    lines = out.stderr.splitlines()
    assert "\r" not in out.stderr
    assert 1 <= len(lines) <= 3 and lines[-1].startswith("UniFL stage 1: 100%") and "400/400" in lines[-1]
