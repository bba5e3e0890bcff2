"""A misbehaving solver for the fault tests: ``fake_solver.py BEHAVIOUR [ARGS...]``.

Batch behaviours (files in the current directory, the work directory): ``copy`` (output =
state + 1), ``exit3``, ``partial3`` (writes the output, then exits 3), ``missing``,
``malformed``, ``shape``, ``int``, ``nan``, ``sleep``, ``argv`` (writes its argv, cwd and
$ZOOFRAME_WORKDIR as JSON to $FAKE_REPORT, then copies).

``serve``: persistent mode, output = state + 1, except by the request's seed: 7 dies (exit 5),
8 answers ok false, 9 hangs, 10 prints a banner line first.
"""

import json
import os
import sys
import time

import numpy as np


def copy(workdir="."):
    state = np.load(os.path.join(workdir, "state.npy"))
    np.save(os.path.join(workdir, "output.npy"), state + 1.0)


def batch(behaviour, args):
    if behaviour == "copy":
        copy()
    elif behaviour == "exit3":
        print("starting", flush=True)
        print("solver: the mesh is tangled\nsolver: giving up", file=sys.stderr)
        sys.exit(3)
    elif behaviour == "partial3":
        copy()
        print("solver: converged with warnings", file=sys.stderr)
        sys.exit(3)
    elif behaviour == "missing":
        print("solver: forgot to write", file=sys.stderr)
    elif behaviour == "malformed":
        with open("output.npy", "w") as f:
            f.write("this is not numpy\n")
    elif behaviour == "shape":
        state = np.load("state.npy")
        np.save("output.npy", state[..., :-1])
    elif behaviour == "int":
        np.save("output.npy", np.load("state.npy").astype(np.int64))
    elif behaviour == "nan":
        state = np.load("state.npy")
        state[-1, 0, 0] = np.nan
        np.save("output.npy", state)
    elif behaviour == "sleep":
        print("solver: sleeping", file=sys.stderr, flush=True)
        time.sleep(60)
    elif behaviour == "argv":
        with open(os.environ["FAKE_REPORT"], "w") as f:
            json.dump({"argv": sys.argv[1:], "cwd": os.getcwd(), "workdir": os.environ.get("ZOOFRAME_WORKDIR"),
                       "extra": os.environ.get("FAKE_EXTRA")}, f)
        copy(os.environ["ZOOFRAME_WORKDIR"])
    else:
        sys.exit(f"unknown behaviour {behaviour}")


def serve():
    print("fake solver ready", file=sys.stderr, flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        workdir = request["workdir"]
        with open(os.path.join(workdir, request["manifest"])) as f:
            seed = json.load(f)["seed"]
        if seed == 7:
            print("fake solver: segfault in the pressure solve", file=sys.stderr, flush=True)
            os._exit(5)
        if seed == 8:
            print(json.dumps({"ok": False, "error": "did not converge"}), flush=True)
            continue
        if seed == 9:
            time.sleep(60)
        if seed == 10:
            print("a banner, not an answer", flush=True)
        copy(workdir)
        print(json.dumps({"ok": True}), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve()
    else:
        batch(sys.argv[1], sys.argv[2:])
