"""Ctrl-C during ``fit``: stop after the current batch, never in the middle of an update."""

import signal
import threading


class CtrlC:
    """While training, the first Ctrl-C only asks ``fit`` to stop after the current batch, so the
    weights are never left half-updated; a second Ctrl-C interrupts at once, as usual (and may
    then land in the middle of an update).

    Signal handlers can only be set from the main thread; elsewhere Ctrl-C behaves as usual.
    A process told to ignore SIGINT (a job a non-interactive shell started with ``&``) keeps
    ignoring it, as Python itself does at start-up.
    """

    def __enter__(self):
        self.pressed = False
        self._previous = None
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is not signal.SIG_IGN):
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.pressed:
            raise KeyboardInterrupt
        self.pressed = True
        print("\nCtrl-C: stopping after this batch (press again to stop now).", flush=True)

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False

