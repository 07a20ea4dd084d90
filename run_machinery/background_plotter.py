"""Per-epoch plotting that keeps out of the GPU's way.

With `background` (on CUDA) each plot is drawn in a worker thread, so the GPU does not
wait for matplotlib; the caller passes copies of what training goes on changing. On a
CPU the cores are busy training anyway: the plot is drawn at once.
"""
from concurrent.futures import ThreadPoolExecutor


class Plotter:
    """At most one call is pending; its error, if any, is raised by the next `submit` or by `wait`."""

    def __init__(self, background):
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="plotter") if background else None
        self._pending = None

    def submit(self, function, *args, **kwargs):
        self.wait()
        if self._executor is None:
            function(*args, **kwargs)
        else:
            self._pending = self._executor.submit(function, *args, **kwargs)

    def wait(self):
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()
