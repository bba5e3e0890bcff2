"""A misbehaving MPI solver (mpi4py) for the fault tests: ``mpi_fake.py BEHAVIOUR``, run with 2 or more ranks.

``crash``: rank 1 writes to stderr and exits 7 while rank 0 waits for it; ``hang``: rank 1 sleeps for good
while rank 0 waits for it.
"""

import os
import sys
import time

from mpi4py import MPI

comm = MPI.COMM_WORLD
if comm.rank == 1:
    if sys.argv[1] == "crash":
        print("rank 1: the mesh is tangled", file=sys.stderr, flush=True)
        os._exit(7)
    time.sleep(600)
comm.Barrier()
