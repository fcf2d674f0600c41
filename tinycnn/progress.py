"""The progress bar ``fit`` draws: Keras's, with running loss and accuracy."""

import sys
import time


class ProgressBar:
    """Keras-style progress: a bar with running loss/accuracy and ETA (verbose=1), or one line
    per epoch (verbose=2), or nothing (verbose=0). Uses tqdm, imported only when needed.

    When the output is not a terminal (a log file, a pipe, CI), a redrawn bar would only pile
    up carriage returns, so verbose=1 then prints the finished bar once per epoch, as Keras does.
    """

    def __init__(self, steps, verbose):
        self.verbose, self.steps = verbose, steps
        self.bar = None
        if verbose == 1 and sys.stdout.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=steps, file=sys.stdout, ascii=".=", mininterval=0.2,
                            bar_format="{n_fmt}/{total_fmt} [{bar:30}] {elapsed}<{remaining}{postfix}")
            self._last = 0.0

    def update(self, step, logs):
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            now = time.monotonic()
            if now - self._last > 0.2:
                self.bar.set_postfix_str(format_logs(logs), refresh=False)
                self._last = now

    def close(self, logs, seconds, done=None):
        """Finish the bar; ``done`` (the batches finished) is less than ``steps`` when stopped early."""
        done = self.steps if done is None else done
        if self.bar is not None:
            self.bar.set_postfix_str(format_logs(logs), refresh=False)
            self.bar.close()
        elif self.verbose == 1:
            filled = "=" * (30 * done // self.steps)
            print(f"{done}/{self.steps} [{filled:.<30}] {seconds:.1f}s - {format_logs(logs)}", flush=True)
        elif self.verbose == 2:
            print(f"{seconds:.1f}s - {format_logs(logs)}", flush=True)


def format_logs(logs):
    return " - ".join(f"{k}: {v:.4f}" for k, v in logs.items())
