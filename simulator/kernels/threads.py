"""The kernels' threads: a kernel's task range [0, n_tasks) cut into contiguous chunks run on both cores.

The kernels are serial `@njit(nogil=True)` functions over a task range [lo, hi). Each has, beside it in its own
module, a parallel launcher (`launcher`): a few lines of `@njit(parallel=True)` whose prange runs the kernel on
each chunk, so numba's threading layer (OpenMP's spinning workers, or its own) takes the chunks with no GIL
hand-off: a launch costs a few microseconds. Why not the kernels themselves as parfors: a parfor of a whole
kernel body takes ~3 s to compile, a launcher ~0.3 s (it calls the kernel already compiled), and numba's cache
keeps both. Why beside the kernel: numba's cache keys a function on its own file, so a launcher in another
file would keep a stale copy of a kernel edited since.

A kernel without a launcher (one returning two counts), or one whose launcher a planned one-run command does
not think worth compiling (jit.worth_launching), takes the persistent worker threads below instead: a hand-off
through two locks and the GIL, ~20-100 us on a VM whose idle cores sleep, so only large calls gain. Every task
writes its own outputs, so the bits never depend on the thread count; a kernel that returns a count returns it
per chunk and the caller adds them (integers: any order gives the same sum). Work below `LAUNCH_WORK`
(`SERIAL_WORK` for the worker threads) runs on the calling thread, as does a call made while another thread's
split runs.
"""
import itertools
import os
import threading

from .. import jit

SERIAL_WORK = 1 << 16   # work (~ns: elements of a pass) below which a hand-off costs more than it saves
LAUNCH_WORK = 1 << 13   # the same for a parallel launch (a few us)
CHUNKS_PER_THREAD = 4   # chunks of a call per thread: enough to even out unequal tasks, few hand-offs

DEFAULT_COUNT = max(1, int(os.environ.get("NUMBA_NUM_THREADS") or os.cpu_count() or 1))
_count = DEFAULT_COUNT
_workers: list = []
_busy = threading.Lock()   # one split at a time; another Python thread meanwhile runs its split serially
_local = threading.local()  # .numba_threads: the thread count this thread last gave numba
_launchers: dict = {}       # (module, name) of a kernel -> its parallel launcher
_launch_of: dict = {}       # a kernel (its numba dispatcher, or its stand-in) -> its launcher, looked up once
_UNSEEN = object()


def launcher(kernel):
    """Decorator: the function below is `kernel`'s parallel launcher, launch(n_tasks, chunks, *args) running
    kernel(n_tasks·c // chunks, n_tasks·(c + 1) // chunks, *args) for c in prange(chunks). Write it in the
    kernel's module (numba's cache keys a function on its own file)."""
    def register(launch):
        _launchers[_key(kernel)] = launch
        return launch
    return register


def _key(kernel) -> tuple:
    func = getattr(kernel, "py_func", kernel)   # a numba dispatcher's function, or hwsim's stand-in's
    return func.__module__, func.__name__


def count() -> int:
    """Threads the kernels use (default: NUMBA_NUM_THREADS, else the CPU count)."""
    return _count


def set_count(n: int) -> None:
    """Use n threads (1 = everything on the calling thread). Results are identical for any n."""
    global _count
    if int(n) < 1:
        raise ValueError(f"thread count must be at least 1, got {n}")
    _count = int(n)


class _Worker:
    """A daemon thread that runs one chunk when told to (two locks: no queue, no futures: ~20 us a hand-off).

    A KeyboardInterrupt can land anywhere in the caller's thread, even just after a lock was taken: so the
    locks only wake the other side, and which job the worker finished last (`_finished`, the job tuple itself)
    says whether the caller's is done. A wake-up consumed by an interrupted wait then costs one more loop,
    never a wait for a release that already happened (a hang seen under Ctrl-C)."""

    def __init__(self):
        self._go, self._done = threading.Lock(), threading.Lock()
        self._go.acquire()
        self._done.acquire()
        self._job = self._finished = self.result = self.error = None
        threading.Thread(target=self._loop, name="hwsim-kernel", daemon=True).start()

    def start(self, kernel, args):
        self._job = (kernel, args)   # a new tuple per job: its identity marks it done
        _release(self._go)

    def wait(self):
        interrupted = None
        while self._finished is not self._job:   # until the chunk is done: it writes into the caller's arrays
            try:
                self._done.acquire()
            except BaseException as exc:   # (an interrupt waits for the chunk, then is raised)
                interrupted = interrupted or exc
        if interrupted is not None:
            raise interrupted
        if self.error is not None:
            error, self.error = self.error, None
            raise error
        return self.result

    def _loop(self):
        while True:
            self._go.acquire()
            job = self._job
            kernel, args = job
            try:
                self.result = kernel(*args)
            except BaseException as exc:   # handed to the caller's thread, raised there
                self.result, self.error = None, exc
            self._finished = job
            _release(self._done)


def _release(lock) -> None:
    """Wake the other side; a wake-up still pending (its taker was interrupted) is already one."""
    try:
        lock.release()
    except RuntimeError:
        pass


def split(kernel, n_tasks: int, *args, work: int = None) -> list:
    """[kernel(lo, hi, *args) for each chunk]: [0, n_tasks) in contiguous chunks, in chunk order (a launched
    kernel's count per chunk, or [None]).

    `work` (elements the whole call touches; default n_tasks) decides: one thread, Python mode or the kernel's
    numpy twin (jit.tiered; Python holds the GIL), too little work, or another split already running: one
    chunk on the calling thread. Else the kernel's parallel launcher, one chunk per thread; a kernel without
    one: a few chunks per thread, taken in turn by whichever thread is free (tasks of one call can differ in
    cost: a static split would leave one thread waiting)."""
    n_tasks = int(n_tasks)
    work = n_tasks if work is None else work
    kernel, python = jit.tiered(kernel, work)
    parts = min(_count, n_tasks)
    if (parts <= 1 or python or jit.mode() == jit.PYTHON or work < LAUNCH_WORK
            or not _busy.acquire(blocking=False)):
        return [kernel(0, n_tasks, *args)]
    try:
        launch = _launch_of.get(kernel, _UNSEEN)
        if launch is _UNSEEN:   # (the registry's stand-in, once built: its numba dispatcher, one call less)
            launch = _launch_of[kernel] = _launchers.get(_key(kernel))
        if isinstance(launch, jit.Kernel) and launch.target is not None:
            launch = _launch_of[kernel] = launch.target
        if launch is not None and jit.worth_launching(launch, work):
            _numba_threads(parts)
            counts = launch(n_tasks, parts, *args)   # per chunk, from a kernel that returns a count
            return [None] if counts is None else counts.tolist()
        if work < SERIAL_WORK:
            return [kernel(0, n_tasks, *args)]
        _start_workers(parts - 1)
        chunks = min(n_tasks, parts * CHUNKS_PER_THREAD)
        bounds = [n_tasks * i // chunks for i in range(chunks + 1)]
        results = [None] * chunks
        taken = itertools.count()   # next() is atomic under the GIL: each chunk is run once

        def drain():
            for i in iter(lambda: next(taken), None):
                if i >= chunks:
                    return
                results[i] = kernel(bounds[i], bounds[i + 1], *args)

        _together(drain, [(drain, ())] * (parts - 1))
        return results
    finally:
        _busy.release()


def _numba_threads(parts: int) -> None:
    """Have this thread's numba launches use `parts` threads (at most the NUMBA_NUM_THREADS numba started
    with; numba keeps the count per calling thread)."""
    if getattr(_local, "numba_threads", 0) != parts:
        numba = jit.import_numba()
        numba.set_num_threads(max(1, min(parts, numba.config.NUMBA_NUM_THREADS)))
        _local.numba_threads = parts


def image_spans(t0: int, t1: int, per_image: int) -> list:
    """[(first image, end image, first unit, end unit)] covering tasks t0..t1 of `per_image` units an image (task
    t is unit t % per_image of image t // per_image): one span when the range holds whole images (a split's single
    chunk, as the numpy twins get it), else one span per image."""
    if t0 % per_image == 0 and t1 % per_image == 0:
        return [(t0 // per_image, t1 // per_image, 0, per_image)]
    return [(ni, ni + 1, max(t0 - ni * per_image, 0), min(t1 - ni * per_image, per_image))
            for ni in range(t0 // per_image, -(-t1 // per_image))]


def _together(mine, theirs: list) -> tuple:
    """(mine(), [fn(*args) for each (fn, args) of `theirs`]): mine on the calling thread while the workers run
    theirs (the caller holds _busy). Every worker is waited for even when something fails (they write into the
    caller's arrays); the first error is raised then."""
    for worker, (fn, args) in zip(_workers, theirs):
        worker.start(fn, args)
    first, results, error = None, [None] * len(theirs), None
    try:
        first = mine()
    except BaseException as exc:
        error = exc
    for i, worker in enumerate(_workers[:len(theirs)]):
        try:
            results[i] = worker.wait()
        except BaseException as exc:
            error = error or exc
    if error is not None:
        raise error
    return first, results


def _start_workers(n: int) -> None:
    while len(_workers) < n:
        _workers.append(_Worker())
