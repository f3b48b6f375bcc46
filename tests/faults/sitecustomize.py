"""A fault for tests/test_distributed.py, injected into every process of a launched job (vaekit train --nproc,
torchrun) by putting this folder first on PYTHONPATH: Python imports `sitecustomize` at start-up.

$VAEKIT_TEST_FAULT = "KIND:RANK:EPOCH:STEP" (1-based epoch and step): on that process, at that step of training,
`kill` SIGKILLs the process (after writing the time to $VAEKIT_TEST_FAULT_TIME), `nan` makes its loss NaN.
Nothing in vaekit reads the variable: the fault is a patch of Trainer._eager_loss made here.
"""

import os

_spec = os.environ.get("VAEKIT_TEST_FAULT", "")
if _spec and _spec.split(":")[1] == os.environ.get("RANK"):
    import signal
    import time

    import vaekit.train

    _kind, _, _epoch, _step = _spec.split(":")
    _original = vaekit.train.Trainer._eager_loss
    _seen = {}

    def _faulty(self, x, eps, kl_weight):
        epoch = self.epoch + 1
        _seen[epoch] = step = _seen.get(epoch, 0) + 1
        loss = _original(self, x, eps, kl_weight)
        if (epoch, step) == (int(_epoch), int(_step)):
            if _kind == "kill":
                with open(os.environ["VAEKIT_TEST_FAULT_TIME"], "w") as f:
                    f.write(repr(time.time()))
                os.kill(os.getpid(), signal.SIGKILL)
            loss = loss * float("nan")
        return loss

    vaekit.train.Trainer._eager_loss = _faulty
