"""Stand-in for A1111 ``modules/progress.py``: the task bookkeeping behind ``/internal/progress``."""

import time
from collections import OrderedDict

current_task = None
pending_tasks = OrderedDict()
finished_tasks = []
recorded_results = []


def start_task(id_task):
    global current_task
    current_task = id_task
    pending_tasks.pop(id_task, None)


def finish_task(id_task):
    global current_task
    if current_task == id_task:
        current_task = None
    finished_tasks.append(id_task)


def record_results(id_task, res):
    recorded_results.append((id_task, res))


def add_task_to_queue(id_job):
    pending_tasks[id_job] = time.time()


def progressapi(id_task):
    """What ``POST /internal/progress`` answers the page's ``requestProgress`` (its first lines, as A1111's):
    a task never registered is "Waiting..." until the page gives up after 40 s; a finished one ends the bar."""
    active, queued, completed = id_task == current_task, id_task in pending_tasks, id_task in finished_tasks
    textinfo = None
    if not active:
        textinfo = f"In queue: {list(pending_tasks).index(id_task) + 1}/{len(pending_tasks)}" if queued else "Waiting..."
    return {"active": active, "queued": queued, "completed": completed, "textinfo": textinfo}
