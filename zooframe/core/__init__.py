"""The objective and what it is made of: the couplings of a network to a simulator, the correction
network's normalization wrapper, flat parameter vectors evaluated for many queries at once,
training windows, sparsity masks, and analytic test objectives. Plain objects in, plain objects
out: nothing here reads a config or the registry."""
