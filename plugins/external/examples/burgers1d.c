/*
 * Example solver for zooframe's `external` simulator: first-order 1D viscous Burgers, plain C99.
 *
 *     u_t + (u^2 / 2)_x = nu u_xx on x in [0, 2 pi), periodic
 *
 * Rusanov flux on piecewise-constant reconstruction, central diffusion, forward Euler with
 * n = max(1, ceil(dt / min(0.4 dx / max(max|u|, 1e-8), 0.4 dx^2 / max(nu, 1e-12)))) sub-steps
 * per row (max|u| over all of the row's channels). nu is column --nu-column (default 0) of
 * params.npy.
 *
 *     gcc -O2 -std=c99 -o burgers1d burgers1d.c -lm
 *     ./burgers1d --dt 0.05 [--workdir DIR]    batch / case mode: one call
 *     ./burgers1d --dt 0.05 --serve            persistent mode: JSON lines on stdin/stdout
 *
 * Reads state.npy [B, C, N] and params.npy [B, P] from the work directory (--workdir, else
 * $ZOOFRAME_WORKDIR, else the current directory; in --serve mode the request's "workdir") and
 * writes output.npy there. Only .npy version 1.0, little-endian float64 ('<f8'), C order is
 * read; anything else is rejected. Exit codes: 0 done, 2 bad usage or unreadable input,
 * 3 a numerical failure (NaN/Inf input, negative nu, too many sub-steps).
 */

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DIMS 16
#define PATH_CHARS 4096

static const double PI = 3.14159265358979323846;

typedef struct {
    double dt;
    int nu_column;
    long max_substeps;
    int serve;
    const char *workdir;
} Options;

typedef struct {
    double *data;
    int ndim;
    long shape[MAX_DIMS];
    long count;
} Array;

static char error_text[2048];

static int fail(int code, const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    vsnprintf(error_text, sizeof error_text, fmt, args);
    va_end(args);
    return code;
}

static const char *skip_spaces(const char *p) {
    while (*p == ' ' || *p == '\t') p++;
    return p;
}

/* The value after 'key': in a .npy header dict, or NULL. */
static const char *header_value(const char *header, const char *key) {
    const char *p = strstr(header, key);
    if (!p) return NULL;
    p = skip_spaces(p + strlen(key));
    if (*p != ':') return NULL;
    return skip_spaces(p + 1);
}

static int read_npy(const char *path, Array *a) {
    unsigned char pre[10];
    char *header = NULL;
    const char *p;
    unsigned hlen;
    int rc = 0;
    size_t got;
    FILE *f = fopen(path, "rb");
    memset(a, 0, sizeof *a);
    if (!f) return fail(2, "cannot open %s: %s", path, strerror(errno));
    if (fread(pre, 1, 10, f) != 10 || memcmp(pre, "\x93NUMPY", 6) != 0) {
        rc = fail(2, "%s is not a .npy file", path);
        goto done;
    }
    if (pre[6] != 1 || pre[7] != 0) {
        rc = fail(2, "%s: .npy format version %d.%d; this solver reads only 1.0", path, pre[6], pre[7]);
        goto done;
    }
    hlen = (unsigned)pre[8] | ((unsigned)pre[9] << 8);
    header = malloc(hlen + 1);
    if (!header || fread(header, 1, hlen, f) != hlen) {
        rc = fail(2, "%s: truncated .npy header", path);
        goto done;
    }
    header[hlen] = '\0';
    p = header_value(header, "'descr'");
    if (!p || strncmp(p, "'<f8'", 5) != 0) {
        rc = fail(2, "%s: dtype must be little-endian float64 ('<f8'); header is %s", path, header);
        goto done;
    }
    p = header_value(header, "'fortran_order'");
    if (!p || strncmp(p, "False", 5) != 0) {
        rc = fail(2, "%s: only C order (fortran_order False) is read; header is %s", path, header);
        goto done;
    }
    p = header_value(header, "'shape'");
    if (!p || *p != '(') {
        rc = fail(2, "%s: no shape in the header %s", path, header);
        goto done;
    }
    p++;
    a->count = 1;
    for (;;) {
        char *end;
        long n;
        p = skip_spaces(p);
        if (*p == ')') break;
        n = strtol(p, &end, 10);
        if (end == p || n < 0 || a->ndim == MAX_DIMS) {
            rc = fail(2, "%s: cannot read the shape in the header %s", path, header);
            goto done;
        }
        a->shape[a->ndim++] = n;
        a->count *= n;
        p = skip_spaces(end);
        if (*p == ',') p++;
    }
    a->data = malloc((size_t)(a->count > 0 ? a->count : 1) * sizeof(double));
    if (!a->data) {
        rc = fail(2, "%s: out of memory for %ld values", path, a->count);
        goto done;
    }
    got = fread(a->data, sizeof(double), (size_t)a->count, f);
    if (got != (size_t)a->count) rc = fail(2, "%s: holds %lu of %ld values", path, (unsigned long)got, a->count);
done:
    free(header);
    fclose(f);
    if (rc) {
        free(a->data);
        a->data = NULL;
    }
    return rc;
}

static int write_npy(const char *path, const double *data, int ndim, const long *shape, long count) {
    char dims[512] = "", header[1024], tmp[PATH_CHARS + 8];
    int n, i, pad, len = 0;
    FILE *f;
    for (i = 0; i < ndim; i++) len += snprintf(dims + len, sizeof dims - len, "%ld%s", shape[i], ndim == 1 ? "," : (i + 1 < ndim ? ", " : ""));
    n = snprintf(header, sizeof header, "{'descr': '<f8', 'fortran_order': False, 'shape': (%s), }", dims);
    pad = (64 - (10 + n + 1) % 64) % 64; /* magic, version, length, header, newline: a multiple of 64 */
    memset(header + n, ' ', pad);
    header[n + pad] = '\n';
    n += pad + 1;
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    f = fopen(tmp, "wb");
    if (!f) return fail(2, "cannot write %s: %s", tmp, strerror(errno));
    fwrite("\x93NUMPY\x01\x00", 1, 8, f);
    fputc(n & 0xff, f);
    fputc((n >> 8) & 0xff, f);
    fwrite(header, 1, (size_t)n, f);
    fwrite(data, sizeof(double), (size_t)count, f);
    if (fclose(f) != 0) return fail(2, "cannot write %s: %s", tmp, strerror(errno));
    if (rename(tmp, path) != 0) return fail(2, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
    return 0;
}

/* n forward-Euler steps of size h on one periodic channel u[0..N-1]; flux and next are scratch. */
static void euler(double *u, long N, double nu, double dx, double h, long n, double *flux, double *next) {
    long k, i;
    for (k = 0; k < n; k++) {
        for (i = 0; i < N; i++) {
            double ui = u[i], ri = u[(i + 1) % N];
            flux[i] = 0.25 * (ui * ui + ri * ri) - 0.5 * fmax(fabs(ui), fabs(ri)) * (ri - ui); /* face i+1/2 */
        }
        for (i = 0; i < N; i++) {
            long im = (i + N - 1) % N, ip = (i + 1) % N;
            next[i] = u[i] + h * (-(flux[i] - flux[im]) / dx + nu * (u[ip] - 2.0 * u[i] + u[im]) / (dx * dx));
        }
        memcpy(u, next, (size_t)N * sizeof(double));
    }
}

/* A call's inputs: the states [B, C, N] (row = C * N values per state) and the parameters [B, P]. */
typedef struct {
    Array s, p;
    long B, N, row, channels, P;
} Inputs;

static void free_inputs(Inputs *in) {
    free(in->s.data);
    free(in->p.data);
    in->s.data = in->p.data = NULL;
}

static int read_inputs(const char *workdir, const Options *o, Inputs *in) {
    char path[PATH_CHARS];
    long i;
    int rc;
    memset(in, 0, sizeof *in);
    snprintf(path, sizeof path, "%s/state.npy", workdir);
    if ((rc = read_npy(path, &in->s)) != 0) return rc;
    snprintf(path, sizeof path, "%s/params.npy", workdir);
    if ((rc = read_npy(path, &in->p)) != 0) {
        free_inputs(in);
        return rc;
    }
    if (in->s.ndim < 2 || in->s.shape[in->s.ndim - 1] < 1) {
        rc = fail(2, "state.npy must be [B, C, N], got %d dimension(s)", in->s.ndim);
        goto done;
    }
    in->B = in->s.shape[0];
    in->N = in->s.shape[in->s.ndim - 1];
    in->row = in->B > 0 ? in->s.count / in->B : 0;
    in->channels = in->row / in->N;
    if (in->p.ndim != 2 || in->p.shape[0] != in->B || in->p.shape[1] <= o->nu_column) {
        rc = fail(2, "params.npy must be [%ld, P] with a column %d for nu", in->B, o->nu_column);
        goto done;
    }
    in->P = in->p.shape[1];
    for (i = 0; i < in->s.count; i++)
        if (!isfinite(in->s.data[i])) {
            rc = fail(3, "the input state holds NaN or Inf (row %ld)", i / in->row);
            goto done;
        }
done:
    if (rc) free_inputs(in);
    return rc;
}

/* Row b's nu and its number of sub-steps n, from the row's max|u| over all its channels. */
static int row_substeps(const Inputs *in, long b, const Options *o, double *nu, long *n) {
    double dx = 2 * PI / (double)in->N, amax = 0.0, limit, steps;
    const double *u = in->s.data + b * in->row;
    long i;
    *nu = in->p.data[b * in->P + o->nu_column];
    if (!(*nu >= 0)) return fail(3, "row %ld: nu is %g; it must not be negative", b, *nu);
    for (i = 0; i < in->row; i++) amax = fmax(amax, fabs(u[i]));
    limit = fmin(0.4 * dx / fmax(amax, 1e-8), 0.4 * dx * dx / fmax(*nu, 1e-12));
    steps = ceil(o->dt / limit);
    if (steps > (double)o->max_substeps)
        return fail(3, "row %ld needs %.0f sub-steps, more than --max-substeps %ld (max|u| = %g)", b, steps,
                    o->max_substeps, amax);
    *n = steps < 1 ? 1 : (long)steps;
    return 0;
}

static int write_output(const char *workdir, const Inputs *in, const double *out) {
    char path[PATH_CHARS];
    snprintf(path, sizeof path, "%s/output.npy", workdir);
    return write_npy(path, out, in->s.ndim, in->s.shape, in->s.count);
}

static int solve(const char *workdir, const Options *o) {
    Inputs in;
    double *out = NULL, *flux = NULL, *next = NULL;
    long b, c, n = 1;
    int rc;
    if ((rc = read_inputs(workdir, o, &in)) != 0) return rc;
    out = malloc((size_t)(in.s.count > 0 ? in.s.count : 1) * sizeof(double));
    flux = malloc((size_t)in.N * sizeof(double));
    next = malloc((size_t)in.N * sizeof(double));
    if (!out || !flux || !next) {
        rc = fail(3, "out of memory");
        goto done;
    }
    memcpy(out, in.s.data, (size_t)in.s.count * sizeof(double));
    for (b = 0; b < in.B; b++) {
        double nu, dx = 2 * PI / (double)in.N;
        if ((rc = row_substeps(&in, b, o, &nu, &n)) != 0) goto done;
        for (c = 0; c < in.channels; c++)
            euler(out + b * in.row + c * in.N, in.N, nu, dx, o->dt / (double)n, n, flux, next);
    }
    rc = write_output(workdir, &in, out);
done:
    free_inputs(&in);
    free(out);
    free(flux);
    free(next);
    return rc;
}

/* The string value of "key" in a one-line JSON object, unescaped into buf; 0 on success. */
static int json_string(const char *line, const char *key, char *buf, size_t size) {
    char quoted[64];
    const char *p;
    size_t n = 0;
    snprintf(quoted, sizeof quoted, "\"%s\"", key);
    p = strstr(line, quoted);
    if (!p) return -1;
    p = skip_spaces(p + strlen(quoted));
    if (*p++ != ':') return -1;
    p = skip_spaces(p);
    if (*p++ != '"') return -1;
    while (*p && *p != '"') {
        char ch = *p++;
        if (ch == '\\') {
            ch = *p++;
            switch (ch) {
            case '"': case '\\': case '/': break;
            case 'n': ch = '\n'; break;
            case 't': ch = '\t'; break;
            case 'u': {
                unsigned v = 0;
                int k;
                for (k = 0; k < 4; k++) {
                    char hx = *p++;
                    if (!hx) return -1;
                    v = v * 16 + (unsigned)(hx >= '0' && hx <= '9' ? hx - '0' : hx >= 'a' && hx <= 'f' ? hx - 'a' + 10
                                            : hx >= 'A' && hx <= 'F' ? hx - 'A' + 10 : 99);
                }
                if (v == 0 || v > 127) return -1; /* this small solver takes ASCII escapes only */
                ch = (char)v;
                break;
            }
            default: return -1;
            }
        }
        if (n + 1 >= size) return -1;
        buf[n++] = ch;
    }
    if (*p != '"') return -1;
    buf[n] = '\0';
    return 0;
}

static void answer(int rc) {
    const char *q;
    if (rc == 0) {
        fputs("{\"ok\": true}\n", stdout);
    } else {
        fputs("{\"ok\": false, \"error\": \"", stdout);
        for (q = error_text; *q; q++) {
            if (*q == '"' || *q == '\\') fputc('\\', stdout), fputc(*q, stdout);
            else if ((unsigned char)*q < 0x20) fprintf(stdout, "\\u%04x", (unsigned char)*q);
            else fputc(*q, stdout);
        }
        fputs("\"}\n", stdout);
        fprintf(stderr, "burgers1d: %s\n", error_text);
    }
    fflush(stdout);
}

/* One whole line of stdin, however long, into *line (grown as needed): 0, 1 at end of input, 3 out of memory. */
static int read_line(char **line, size_t *cap) {
    size_t len = 0;
    for (;;) {
        if (!fgets(*line + len, (int)(*cap - len), stdin)) return len == 0 ? 1 : 0;
        len += strlen(*line + len);
        if (len > 0 && (*line)[len - 1] == '\n') return 0;
        if (len + 1 >= *cap) {
            char *bigger = realloc(*line, *cap * 2);
            if (!bigger) return 3;
            *line = bigger;
            *cap *= 2;
        }
    }
}

/* The request's work directory into workdir: 0, or an error answered already. */
static int request_workdir(const char *line, char *workdir) {
    if (json_string(line, "workdir", workdir, PATH_CHARS) == 0) return 0;
    answer(fail(2, "bad request (no \"workdir\" string): %.200s", line));
    return 2;
}

static int serve(const Options *o) {
    size_t cap = 1024;
    char *line = malloc(cap), workdir[PATH_CHARS];
    int rc;
    if (!line) return 3;
    while ((rc = read_line(&line, &cap)) == 0) {
        if (strspn(line, " \t\r\n") == strlen(line)) continue;
        if (request_workdir(line, workdir) == 0) answer(solve(workdir, o));
    }
    free(line);
    return rc == 1 ? 0 : rc; /* stdin closed: done */
}

static int little_endian(void) {
    const unsigned one = 1;
    return *(const unsigned char *)&one == 1;
}

static int parse_options(int argc, char **argv, Options *o, const char *name) {
    int i;
    Options defaults = {0.0, 0, 100000, 0, NULL};
    *o = defaults;
    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--serve") == 0) o->serve = 1;
        else if (strcmp(argv[i], "--dt") == 0 && i + 1 < argc) o->dt = strtod(argv[++i], NULL);
        else if (strcmp(argv[i], "--workdir") == 0 && i + 1 < argc) o->workdir = argv[++i];
        else if (strcmp(argv[i], "--nu-column") == 0 && i + 1 < argc) o->nu_column = atoi(argv[++i]);
        else if (strcmp(argv[i], "--max-substeps") == 0 && i + 1 < argc) o->max_substeps = atol(argv[++i]);
        else {
            fprintf(stderr, "%s: unknown argument %s\nusage: %s --dt DT [--serve] [--workdir DIR] "
                            "[--nu-column K] [--max-substeps N]\n", name, argv[i], name);
            return 2;
        }
    }
    if (!(o->dt > 0) || o->nu_column < 0 || o->max_substeps < 1) {
        fprintf(stderr, "%s: --dt must be positive (got %g), --nu-column >= 0, --max-substeps >= 1\n", name, o->dt);
        return 2;
    }
    if (!little_endian()) {
        fprintf(stderr, "%s: this solver reads little-endian .npy files on little-endian machines only\n", name);
        return 2;
    }
    if (!o->workdir) o->workdir = getenv("ZOOFRAME_WORKDIR");
    if (!o->workdir) o->workdir = ".";
    return 0;
}

#ifndef BURGERS1D_NO_MAIN /* burgers1d_mpi.c includes this file for all of the above */
int main(int argc, char **argv) {
    Options o;
    int rc = parse_options(argc, argv, &o, "burgers1d");
    if (rc) return rc;
    if (o.serve) return serve(&o);
    rc = solve(o.workdir, &o);
    if (rc) fprintf(stderr, "burgers1d: %s\n", error_text);
    return rc;
}
#endif
