"""Peak memory: building an optimizer allocates its state once; a step allocates nothing."""

import numpy as np

import fastopt

from .common import data, sizes


class Memory:
    params = (["SGD", "Adam", "RMSprop"], sizes(1e7))
    param_names = ["optimizer", "size"]

    def setup(self, name, size):
        self.p, self.g = data(size, np.float32)
        self.cls = getattr(fastopt, name)
        options = {"SGD": {"momentum": 0.9}, "RMSprop": {"centered": True}}.get(name, {})
        self.options = options
        self.opt = self.cls(self.p, **options)
        self.opt.step(self.g)

    def peakmem_construct(self, name, size):
        # the parameter and gradient arrays already exist: this adds the state buffers
        self.cls(self.p, **self.options)

    def peakmem_step(self, name, size):
        # the optimizer and its state already exist: this should add nothing
        for _ in range(5):
            self.opt.step(self.g)

    def track_state_bytes_per_parameter(self, name, size):
        return sum(v.nbytes for k, v in self.opt.state.items() if k != "step") / size

    track_state_bytes_per_parameter.unit = "bytes"
