/*
 * The example solver of burgers1d.c as an MPI code: the grid of every state is split across the
 * ranks, which exchange one halo cell with each neighbour per sub-step. Each cell is computed with
 * the same operations in the same order as in burgers1d.c, so the step is the same to the bit.
 *
 *     mpicc -O2 -std=c99 -o burgers1d_mpi burgers1d_mpi.c -lm      (beside burgers1d.c, which it includes)
 *     mpiexec -n 2 ./burgers1d_mpi --dt 0.05            batch / case mode: one call
 *     mpiexec -n 2 ./burgers1d_mpi --dt 0.05 --serve    persistent mode: one MPI job serves every request
 *
 * Rank 0 reads the inputs (and, with --serve, each request line from stdin), computes each row's
 * number of sub-steps and broadcasts the work; every rank advances its share of the cells; rank 0
 * gathers the result, writes output.npy and answers. The other ranks see no stdin: a launcher
 * gives it to rank 0 (mpiexec does; zooframe asks srun and flux run for it with --input=0).
 * The grid needs at least as many cells as ranks. Exit codes as burgers1d.c's, from rank 0.
 */

#define BURGERS1D_NO_MAIN
#include "burgers1d.c"

#include <mpi.h>

typedef struct {
    int rank, size;
    long lo, m; /* this rank's cells: [lo, lo + m) of each line of N */
} Part;

/* What rank 0 broadcasts per call: the shape, and each row's nu and sub-steps. */
typedef struct {
    long rc, B, N, channels, ndim, shape[MAX_DIMS];
} Work;

static void share(Part *part, long N) {
    long base = N / part->size, extra = N % part->size;
    part->lo = part->rank * base + (part->rank < extra ? part->rank : extra);
    part->m = base + (part->rank < extra ? 1 : 0);
}

/* The halo cells v[0] and v[m + 1] from the neighbours (periodic; a single rank is its own neighbour). */
static void exchange(double *v, long m, const Part *part) {
    int left = (part->rank + part->size - 1) % part->size, right = (part->rank + 1) % part->size;
    MPI_Sendrecv(v + 1, 1, MPI_DOUBLE, left, 0, v + m + 1, 1, MPI_DOUBLE, right, 0, MPI_COMM_WORLD,
                 MPI_STATUS_IGNORE);
    MPI_Sendrecv(v + m, 1, MPI_DOUBLE, right, 1, v, 1, MPI_DOUBLE, left, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
}

/* n forward-Euler steps of size h on this rank's cells v[1..m] of one line, as euler() of burgers1d.c. */
static void euler_part(double *v, long m, double nu, double dx, double h, long n, double *flux, double *next,
                       const Part *part) {
    long k, i;
    for (k = 0; k < n; k++) {
        exchange(v, m, part);
        for (i = 0; i <= m; i++) {
            double ui = v[i], ri = v[i + 1];
            flux[i] = 0.25 * (ui * ui + ri * ri) - 0.5 * fmax(fabs(ui), fabs(ri)) * (ri - ui); /* face i+1/2 */
        }
        for (i = 1; i <= m; i++)
            next[i] = v[i] + h * (-(flux[i] - flux[i - 1]) / dx + nu * (v[i + 1] - 2.0 * v[i] + v[i - 1]) / (dx * dx));
        memcpy(v + 1, next + 1, (size_t)m * sizeof(double));
    }
}

/* One call on every rank; rank 0 reads workdir and writes the output. The return code is rank 0's. */
static int solve_mpi(const char *workdir, const Options *o, Part *part) {
    Inputs in;
    Work w;
    double *state = NULL, *nus = NULL, *mine = NULL, *v = NULL, *flux = NULL, *next = NULL, *all = NULL;
    long *steps = NULL, lines, b, c, line, i;
    int *counts = NULL, *offsets = NULL, r, rc = 0;
    memset(&w, 0, sizeof w);
    memset(&in, 0, sizeof in);
    if (part->rank == 0) {
        w.rc = read_inputs(workdir, o, &in);
        if (!w.rc && in.N < part->size)
            w.rc = fail(2, "the grid has %ld cells, fewer than the %d ranks", in.N, part->size);
        if (!w.rc) {
            w.B = in.B, w.N = in.N, w.channels = in.channels, w.ndim = in.s.ndim;
            memcpy(w.shape, in.s.shape, sizeof w.shape);
        }
    }
    MPI_Bcast(&w, (int)(sizeof w / sizeof(long)), MPI_LONG, 0, MPI_COMM_WORLD);
    if (w.rc) {
        free_inputs(&in);
        return (int)w.rc;
    }
    lines = w.B * w.channels;
    share(part, w.N);
    state = malloc((size_t)(lines * w.N + 1) * sizeof(double));
    nus = malloc((size_t)(w.B + 1) * sizeof(double));
    steps = malloc((size_t)(w.B + 1) * sizeof(long));
    if (!state || !nus || !steps) MPI_Abort(MPI_COMM_WORLD, 3);
    if (part->rank == 0) {
        memcpy(state, in.s.data, (size_t)(lines * w.N) * sizeof(double));
        for (b = 0; b < w.B && !rc; b++) rc = row_substeps(&in, b, o, &nus[b], &steps[b]);
    }
    MPI_Bcast(&rc, 1, MPI_INT, 0, MPI_COMM_WORLD);
    if (rc) goto done;
    MPI_Bcast(state, (int)(lines * w.N), MPI_DOUBLE, 0, MPI_COMM_WORLD);
    MPI_Bcast(nus, (int)w.B, MPI_DOUBLE, 0, MPI_COMM_WORLD);
    MPI_Bcast(steps, (int)w.B, MPI_LONG, 0, MPI_COMM_WORLD);

    mine = malloc((size_t)(lines * part->m + 1) * sizeof(double));
    v = malloc((size_t)(part->m + 2) * sizeof(double));
    flux = malloc((size_t)(part->m + 2) * sizeof(double));
    next = malloc((size_t)(part->m + 2) * sizeof(double));
    if (!mine || !v || !flux || !next) MPI_Abort(MPI_COMM_WORLD, 3);
    for (b = 0; b < w.B; b++)
        for (c = 0; c < w.channels; c++) {
            line = b * w.channels + c;
            memcpy(v + 1, state + line * w.N + part->lo, (size_t)part->m * sizeof(double));
            euler_part(v, part->m, nus[b], 2 * PI / (double)w.N, o->dt / (double)steps[b], steps[b], flux, next,
                       part);
            memcpy(mine + line * part->m, v + 1, (size_t)part->m * sizeof(double));
        }

    if (part->rank == 0) { /* each rank's block [lines, m], then back into [lines, N] */
        Part other = *part;
        counts = malloc((size_t)part->size * sizeof(int));
        offsets = malloc((size_t)part->size * sizeof(int));
        all = malloc((size_t)(lines * w.N + 1) * sizeof(double));
        if (!counts || !offsets || !all) MPI_Abort(MPI_COMM_WORLD, 3);
        for (r = 0; r < part->size; r++) {
            other.rank = r;
            share(&other, w.N);
            counts[r] = (int)(lines * other.m);
            offsets[r] = r ? offsets[r - 1] + counts[r - 1] : 0;
        }
    }
    MPI_Gatherv(mine, (int)(lines * part->m), MPI_DOUBLE, all, counts, offsets, MPI_DOUBLE, 0, MPI_COMM_WORLD);
    if (part->rank == 0) {
        Part other = *part;
        for (r = 0; r < part->size; r++) {
            other.rank = r;
            share(&other, w.N);
            for (line = 0; line < lines; line++)
                for (i = 0; i < other.m; i++)
                    state[line * w.N + other.lo + i] = all[offsets[r] + line * other.m + i];
        }
        rc = write_output(workdir, &in, state);
    }
done:
    free_inputs(&in);
    free(state);
    free(nus);
    free(steps);
    free(mine);
    free(v);
    free(flux);
    free(next);
    free(all);
    free(counts);
    free(offsets);
    return rc;
}

/* Rank 0 reads each request and broadcasts its work directory (length -1: stdin closed, stop). */
static int serve_mpi(const Options *o, Part *part) {
    size_t cap = 1024;
    char *line = part->rank == 0 ? malloc(cap) : NULL, workdir[PATH_CHARS];
    long length;
    for (;;) {
        length = 0;
        if (part->rank == 0) {
            int got = line ? read_line(&line, &cap) : 3;
            if (got) length = -1;
            else if (strspn(line, " \t\r\n") != strlen(line) && request_workdir(line, workdir) == 0)
                length = (long)strlen(workdir) + 1;
        }
        MPI_Bcast(&length, 1, MPI_LONG, 0, MPI_COMM_WORLD);
        if (length < 0) break;
        if (length == 0) continue; /* a blank line, or a bad request rank 0 answered */
        MPI_Bcast(workdir, (int)length, MPI_CHAR, 0, MPI_COMM_WORLD);
        int rc = solve_mpi(workdir, o, part);
        if (part->rank == 0) answer(rc);
    }
    free(line);
    return 0;
}

int main(int argc, char **argv) {
    Options o;
    Part part;
    int rc = parse_options(argc, argv, &o, "burgers1d_mpi");
    if (rc) return rc;
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &part.rank);
    MPI_Comm_size(MPI_COMM_WORLD, &part.size);
    if (o.serve) {
        rc = serve_mpi(&o, &part);
    } else {
        rc = solve_mpi(o.workdir, &o, &part);
        if (rc && part.rank == 0) fprintf(stderr, "burgers1d_mpi: %s\n", error_text);
    }
    MPI_Finalize();
    return part.rank == 0 ? rc : 0;
}
