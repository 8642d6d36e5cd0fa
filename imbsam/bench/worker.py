"""The step benchmark's worker processes: each builds one runner (imbsam.bench.runners) and times it on command, so
that its first-step time and peak memory are its own.

The protocol, over a pipe: the worker sends its runner's describe(); then answers ("warm", n) with the first of n
untimed steps' seconds, each step synchronised, and ("time", n) with the wall and CPU seconds and images of n steps
synchronised once at the end; None ends it with its peak memory. Steps are numbered on from one command to the
next, so every step reads its own batch of labels."""

import resource
import time


def _peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def serve(conn, runner, options):
    """The worker's side: build runner(options), then answer ("warm", n), ("time", n) and finally None.
    An exception ends the process with its traceback on the shared stderr; the main process sees the pipe close."""
    bench = runner(options)
    conn.send(bench.describe())
    position = 0
    while (command := conn.recv()) is not None:
        name, count = command
        if name == "warm":
            # Synchronised per step, so the first step's time is its own.
            seconds = []
            for i in range(position, position + count):
                start = time.perf_counter()
                bench.sync(bench.step(i)[1])
                seconds.append(time.perf_counter() - start)
            conn.send({"first_step_s": seconds[0]})
        else:
            images = 0
            cpu, start = _cpu_seconds(), time.perf_counter()
            for i in range(position, position + count):
                done, result = bench.step(i)
                images += done
            bench.sync(result)
            wall = time.perf_counter() - start
            conn.send({"seconds": wall, "cpu_seconds": _cpu_seconds() - cpu, "images": images})
        position += count
    peak_device = getattr(bench, "peak_device_mib", lambda: None)()
    conn.send({"peak_rss_mib": _peak_rss_mib(), "peak_device_mib": peak_device})


class WorkerError(RuntimeError):
    """A worker process died; its traceback is on the shared stderr."""


class Worker:
    """The main process's side of one worker, which builds `runner` (a class of imbsam.bench.runners) from `options`
    in a process of `context`; receive and call raise WorkerError where it died."""

    def __init__(self, context, name, runner, options):
        self.name = name
        self.conn, child = context.Pipe()
        self.process = context.Process(target=serve, args=(child, runner, options), name=f"bench {name}", daemon=True)
        self.process.start()
        child.close()

    def receive(self):
        try:
            return self.conn.recv()
        except EOFError:
            self.process.join(5)
            raise WorkerError(f"the {self.name!r} worker exited (code {self.process.exitcode}); "
                              "its error is printed above") from None

    def call(self, command):
        self.conn.send(command)
        return self.receive()

    def finish(self):
        peaks = self.call(None)
        self.process.join()
        return peaks

    def stop(self):
        if self.process.is_alive():
            self.process.kill()
        self.process.join()
