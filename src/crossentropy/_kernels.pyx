# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, nonecheck=False, cpow=True
"""Fused softmax / cross-entropy kernels.

Everything here runs without the GIL over typed memoryviews.  The Python shim
(`_api.py`) has already validated every argument: targets are in range or equal
to ``ignore_index``, buffers have the right shapes, and the thread count is
resolved.  The kernels therefore cannot fail; they still never index outside a
row (a target outside ``[0, classes)`` is treated as ignored), so a bug in the
shim shows up as a wrong number in a test, never as a crash.

Layout: every array is viewed as 3-D ``(outer, classes, inner)``; a "row" is one
``(o, i)`` pair, the classes of a row are ``x[o, :, i]``.  With the class axis
last (the common case) ``inner == 1`` and rows are contiguous, which is what the
SIMD primitives of ``csrc/`` want.

A row is computed in three steps that every path shares:

1. ``prepare``: the row max, and what the loss needs from the logits before
   they may be overwritten (in place): the target logit, the smoothing term
   ``sum_j w_j (max - z_j)``, or for probability targets ``S = sum_j c_j`` and
   ``D = sum_j c_j (max - z_j)`` with ``c_j = w_j ((1 - eps) y_j + eps / C)``.
2. ``exp(z - max)`` and its float64 sum ``s``, written into the output when a
   gradient or softmax is wanted.
3. ``finish``: loss (``lse = max + log s``) and the output array.

The language-model options enter the same steps (loss modes only): with
softcapping, the row is read as ``c tanh(z / c)`` into a scratch row (the
logits stay as they are) and ``finish`` takes the gradient through the cap
last; the z-loss is a term of the loss and of what multiplies the
probabilities in ``finish``; the log-sum-exp is ``finish``'s too.

The second-order modes are the gradient's, with one more step in ``finish``
while the output still holds the row's exps: the Hessian with respect to the
logits is ``A (diag p - p p^T) + B p p^T`` per row (``A`` what multiplies the
probabilities in the gradient, ``B`` the z-loss's ``2 z_loss``, both weighted
and scaled as the gradient), of which ``hessian_diagonal`` writes the
diagonal and ``hessian_product`` applies it to a vector; softcapping takes
both through the cap.  The across-rows block of short rows writes the
diagonal itself (``ce_short_xent``'s ``h``), from the exps left in its
buffer once the gradient is out.

The shard modes compute a row whose classes are split into shards, a
shard at a time: ``PARTIALS`` writes, per row, what the shard adds to the
loss (its max, its float64 sum of exps, and with ``c_j`` as above its target
mass ``sum_j c_j`` and ``sum_j c_j (max - z_j)``), which the shim combines
across shards; ``SHARD_GRAD`` takes the combined max, sum and mass and
writes the shard's slice of the gradient, through ``finish`` as the
gradient of a whole row.  A target in another shard is ``m + its class``.
They run on the general paths (not the across-rows block, not split rows),
and the gradient not in runs.

Which loops run depends on the shape and the options, never on the layout:

* short rows (``m <= CE_SHORT_MAX``) with class-index targets, no smoothing,
  no z-loss, no cap and no Hessian product: ``short_rows_hard``, vectorised
  across blocks of 64 rows (``ce_short_xent`` in
  ``csrc/short_rows_template.h``: the block is transposed so that every step
  is SIMD over rows).
* other short rows: ``short_rows``: ``z - max`` of a block of rows goes into one
  buffer, one SIMD exp covers the whole block, the rest is plain loops.
* long rows: ``long_rows``, SIMD primitives per row; a row whose classes are
  strided in memory is first gathered into a per-thread scratch row.  Rows of
  ``RUNS_MIN`` classes or more with class-index targets and no smoothing skip
  step 1's max pass: they go in runs, each run's exps shifted by its own max
  (``ce_run_parts``); ``ce_runs_total`` finds each run's scale to the row's
  max and ``finish`` applies them, so that the row is read from memory once.
* few very long rows (``m >= SPLIT_MIN_CLASSES``, at most ``SPLIT_MAX_ROWS``):
  ``split_rows``, the same runs, shared by the threads: the same bits (not
  the second-order modes, whose rows each go to one thread).

Rows are processed in fixed chunks, handed to threads dynamically; each chunk's
loss is summed in float64 in an order fixed by the shape (row by row, or four
lanes per block of 64 short rows), so results do not depend on the number of
threads or on which thread ran which chunk.
"""

cimport cython
from cython cimport floating
from cython.parallel cimport prange, parallel, threadid
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.math cimport exp as libm_exp, fabs, isinf, isfinite, log, log1p, INFINITY, NAN

# What a call computes.  Per row it yields one number (loss or log-sum-exp); the
# modes that write an array write it into `out`.
cpdef enum Mode:
    LOSS = 0            # loss only
    LOSS_GRAD = 1       # loss, and its gradient into out
    LOGSUMEXP = 2       # log-sum-exp only
    SOFTMAX = 3         # softmax into out
    LOG_SOFTMAX = 4     # log-softmax into out
    LOSS_GRAD_HESS = 5  # loss, gradient into out, the Hessian's diagonal into aux
    HVP = 6             # loss, and the Hessian times the vectors in aux into out
    PARTIALS = 7        # a shard of each row's classes: what combines into its loss, into part
    SHARD_GRAD = 8      # a shard's gradient into out, from the rows' totals in part

# The paths' boundaries (rows of up to CE_SHORT_MAX classes take the row-block
# paths, CE_ROWS rows at a time across rows; csrc/platform.h sizes them).
cdef enum:
    # Few rows this long are split into segments that threads share.
    SPLIT_MIN_CLASSES = 131072
    SPLIT_MAX_ROWS = 64
    SEGMENT_RUNS = 8            # runs a thread takes at a time
    # Rows this long fetch a later row's logits during their exp pass: the
    # next row's, or for float rows, whose exps cost least per byte, the
    # one as many whole rows ahead as fit in PREFETCH_BYTES (at least the
    # next; within the chunk) and, where the gradient is written elsewhere,
    # that row's gradient lines too.
    PREFETCH_MIN = 512
    PREFETCH_MAX = 16384
    PREFETCH_BYTES = 8192
    # Rows this long with hard targets without smoothing go in runs instead,
    # each shifted by its own max, so that they are read once (ce_run_parts),
    # which pays where a row no longer stays in the caches between passes.
    RUNS_MIN = 8192
    # Elements per row block (in the thread's workspace).
    BLOCK_ELEMENTS = 2048
    # Rows per block at most.
    BLOCK_ROWS = 256
    # Where each thread's workspace starts (vectors are stored aligned).
    WORKSPACE_ALIGN = 64

# Exposed for the shim and the tests, which pick shapes on either side of them.
SMALL_ROW_LEN = CE_SHORT_MAX
FAST_ROWS_LEN = CE_ROWS
SPLIT_MIN_CLASSES_LEN = SPLIT_MIN_CLASSES
SPLIT_MAX_ROWS_LEN = SPLIT_MAX_ROWS
RUNS_MIN_LEN = RUNS_MIN


# The widest ISA level this CPU runs (or the lower one CROSSENTROPY_ISA asks for).
ce_select_kernels()

if ce_register_fork_handlers() != 0:
    raise ImportError("crossentropy._kernels could not register its fork handlers")
# Whether a fork releases the thread pool first (OpenMP builds on POSIX).
FORK_HANDLERS = bool(CE_FORK_HANDLERS)


def max_threads():
    """``omp_get_max_threads()``, 1 when built without OpenMP (or in a forked
    child whose parent's thread pool could not be released).

    Reflects ``OMP_NUM_THREADS`` and limits set by threadpoolctl.
    """
    return ce_omp_max_threads()


def team_size(int n):
    """How many threads a parallel region asking for `n` gets here."""
    with nogil:
        n = ce_team_size(n)
    return n


def _release_pool_before_fork(bint on):
    """Whether the thread pool is released before a fork (tests switch it off
    to exercise the one-thread fallback of a forked child)."""
    ce_set_release_before_fork(on)


def dispatch_target():
    """Which ISA level of the kernels runs on this CPU: ``"x86-64-v4"``
    (AVX-512), ``"x86-64-v3"`` (AVX2 + FMA) or ``"baseline"`` (also what a
    build without runtime dispatch reports).  The widest the CPU has, unless
    the environment's ``CROSSENTROPY_ISA`` asked for a lower one at import."""
    return ce_dispatch_target().decode()


def build_config():
    """What this build is: its compiler, OpenMP (the setup the build found and
    the version of the standard; 0 without), whether the SIMD pragmas are on,
    and whether it is the portable (standard C) build."""
    return {
        "compiler": ce_compiler().decode(),
        "openmp": ce_build_openmp().decode(),
        "openmp_version": ce_openmp_version(),
        "simd_pragmas": bool(ce_simd_pragmas()),
        "portable": not CE_GNU,
    }


def dispatch_levels():
    """The ISA levels compiled in, widest first (``["baseline"]`` in a build
    without runtime dispatch)."""
    return ce_dispatch_levels().decode().split()


# --- the problem, as plain C data ---------------------------------------------

cdef struct Strided:
    # An array viewed as (outer, classes, inner), or (outer, inner) when sc == 0.
    char *data
    Py_ssize_t so, sc, si       # byte strides


cdef struct Problem:
    Mode mode
    Py_ssize_t m                # classes
    Py_ssize_t inner            # rows are (o, i) with i < inner
    Py_ssize_t ignore_index
    double grad_scale           # upstream gradient / reduction denominator
    double keep                 # 1 - label_smoothing
    double each                 # label_smoothing / classes
    bint smoothing              # label_smoothing > 0
    const double *weight        # class weights, or NULL for all ones
    double weight_total         # sum of the class weights
    bint probabilities          # targets are class probabilities (in `y`)
    double z_loss               # z-loss coefficient: z_loss * lse^2 per row (0: none)
    double softcap              # logits capped as softcap * tanh(z / softcap) (0: not)
    bint inf_row_lse            # log-softmax of a row with +inf: z - logsumexp(z), not NaN
    Strided z, out, y, target, sample_weight, row_value, lse
    Strided aux                 # z's shape: the Hessian's diagonal (written) or v (read)
    # The shard modes: z holds the classes [offset, offset + m) of rows of
    # n_all classes; targets and weight are the whole rows' (weight points at
    # the shard's first class); shard_weight_total sums the shard's weights.
    Strided part                # rows of 4 doubles (sc their stride): partials or totals
    Py_ssize_t offset, n_all
    double shard_weight_total
    bint has_out, has_target, has_sample_weight, has_row_value, has_lse
    bint row_value_float        # row_value and lse hold floats (float32 logits), else doubles


cdef struct RowPrep:
    double zmax
    double zmin                 # long rows: the least logit, NaN if one is (picks the exp); short: -inf
    double zt                   # target logit (hard targets)
    double wt                   # target class weight
    double gap                  # smoothing: sum w_j (max - z_j); probabilities: D
    double mass                 # probabilities: S = sum c_j
    double total                # SHARD_GRAD: the whole row's sum of exps
    Py_ssize_t t                # target class, -1 when the row is ignored (shard modes:
                                # m + the class when it is another shard's)


cdef struct Pos:
    # A row's place: rows run over i fastest, then o.
    Py_ssize_t o, i


cdef inline Pos row_pos(Py_ssize_t r, Py_ssize_t inner) noexcept nogil:
    cdef Pos p
    p.o = r // inner
    p.i = r - p.o * inner
    return p


cdef inline void next_row(Pos *p, Py_ssize_t inner) noexcept nogil:
    """Step to the next row without a division (one per row is measurable)."""
    p.i += 1
    if p.i == inner:
        p.i = 0
        p.o += 1


cdef inline char *row_ptr(const Strided *a, Pos p) noexcept nogil:
    return a.data + p.o * a.so + p.i * a.si


# --- fused-type wrappers around the C primitives -----------------------------

cdef inline floating vmax(const floating *x, Py_ssize_t n, floating *lo) noexcept nogil:
    """max of x[0:n]; its min goes to lo (NaN if an x[i] is)."""
    if floating is float:
        return ce_max_f32(x, n, lo)
    else:
        return ce_max_f64(x, n, lo)


cdef inline double vexpsum(const floating *x, floating *out, Py_ssize_t n,
                           floating shift, floating lo, const floating *ahead=NULL,
                           floating *ahead_out=NULL) noexcept nogil:
    if floating is float:
        return ce_expsum_f32(x, out, n, shift, lo, ahead, ahead_out)
    else:
        return ce_expsum_f64(x, out, n, shift, lo, ahead, ahead_out)


cdef inline double vsumexp(const floating *x, Py_ssize_t n, floating shift,
                           floating lo, const floating *ahead, floating *buf) noexcept nogil:
    """The exps' sum alone, through `buf` (CE_BLOCK elements, or n if fewer)."""
    if floating is float:
        return ce_sumexp_f32(x, n, shift, lo, ahead, buf)
    else:
        return ce_sumexp_f64(x, n, shift, lo, ahead, buf)


cdef inline void run_parts(const floating *x, floating *out, Py_ssize_t n, Py_ssize_t run,
                           double *tops, double *sums) noexcept nogil:
    """tops and sums of the runs of x[0:n], a row or whole runs of one (out
    NULL: the exps are not stored); ce_runs_total combines them."""
    if floating is float:
        ce_run_parts_f32(x, out, n, run, tops, sums)
    else:
        ce_run_parts_f64(x, out, n, run, tops, sums)


cdef inline void vexp(const floating *x, floating *out, Py_ssize_t n) noexcept nogil:
    if floating is float:
        ce_exp_f32(x, out, n)
    else:
        ce_exp_f64(x, out, n)


cdef inline double vgapsum(const floating *x, const double *w, Py_ssize_t n,
                           floating top) noexcept nogil:
    if floating is float:
        return ce_gapsum_f32(x, w, n, top)
    else:
        return ce_gapsum_f64(x, w, n, top)


cdef inline void cap(const floating *z, floating *out, Py_ssize_t n, double c) noexcept nogil:
    """out = c tanh(z / c) (softcapping); out may be z."""
    if floating is float:
        ce_softcap_f32(z, out, n, c)
    else:
        ce_softcap_f64(z, out, n, c)


cdef inline void cap_grad(floating *g, const floating *y, Py_ssize_t n, double c) noexcept nogil:
    """g *= 1 - (y / c)^2: the gradient with respect to capped logits y made
    one with respect to the logits."""
    if floating is float:
        ce_softcap_grad_f32(g, y, n, c)
    else:
        ce_softcap_grad_f64(g, y, n, c)


# --- element loops: SIMD primitives for long rows, plain loops for short ------

cdef inline void scale(floating *g, Py_ssize_t n, floating a) noexcept nogil:
    cdef Py_ssize_t j
    if n > CE_SHORT_MAX:
        if floating is float:
            ce_scale_f32(g, n, a)
        else:
            ce_scale_f64(g, n, a)
    else:
        for j in range(n):
            g[j] = g[j] * a


cdef inline void scale_sub(floating *g, const double *w, Py_ssize_t n,
                           double a, double b) noexcept nogil:
    """g = g * a - b * w (w NULL: all ones), in double."""
    cdef Py_ssize_t j
    if n > CE_SHORT_MAX:
        if floating is float:
            ce_scale_sub_f32(g, w, n, a, b)
        else:
            ce_scale_sub_f64(g, w, n, a, b)
    elif w == NULL:
        for j in range(n):
            g[j] = <floating>(g[j] * a - b)
    else:
        for j in range(n):
            g[j] = <floating>(g[j] * a - b * w[j])


cdef inline void scale_runs(floating *g, Py_ssize_t n, Py_ssize_t run, double a,
                            const double *run_scale) noexcept nogil:
    """g *= a, times run_scale[b] in run b (a row in runs of `run`)."""
    if floating is float:
        ce_scale_runs_f32(g, n, run, a, run_scale)
    else:
        ce_scale_runs_f64(g, n, run, a, run_scale)


cdef inline void shift(const floating *z, Py_ssize_t zc, floating *out, Py_ssize_t n,
                       floating a, floating b) noexcept nogil:
    """out = (z - a) - b; z has class stride zc (1 for long rows)."""
    cdef Py_ssize_t j
    if n > CE_SHORT_MAX:
        if floating is float:
            ce_shift_f32(z, out, n, a, b)
        else:
            ce_shift_f64(z, out, n, a, b)
    else:
        for j in range(n):
            out[j] = (z[j * zc] - a) - b


cdef inline floating row_max(const floating *z, Py_ssize_t zc, Py_ssize_t n,
                             floating *lo) noexcept nogil:
    """The row's max; its min goes to lo for long rows (-inf for short ones:
    their exps do not use it)."""
    cdef Py_ssize_t j
    cdef floating best
    if n > CE_SHORT_MAX:
        return vmax(z, n, lo)
    lo[0] = -INFINITY
    best = -INFINITY
    for j in range(n):
        # a select, not a branch: on random logits the branch mispredicts
        # about once a row, which costs more than the rest of the max
        best = z[j * zc] if z[j * zc] > best else best
    return best


cdef inline double short_sum(const floating *e, Py_ssize_t n) noexcept nogil:
    """Sum of a short contiguous row in double, in four independent chains
    (a single chain is latency-bound at ~4 cycles per element)."""
    cdef double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0
    cdef Py_ssize_t j = 0
    while j + 4 <= n:
        s0 = s0 + e[j]
        s1 = s1 + e[j + 1]
        s2 = s2 + e[j + 2]
        s3 = s3 + e[j + 3]
        j += 4
    while j < n:
        s0 = s0 + e[j]
        j += 1
    return (s0 + s1) + (s2 + s3)


cdef inline double gap_sum(const floating *z, Py_ssize_t zc, const double *w, Py_ssize_t n,
                           floating top) noexcept nogil:
    """sum_j w_j (top - z_j), a zero weight contributing 0 even at z_j = -inf."""
    cdef Py_ssize_t j
    cdef double acc = 0.0
    if n > CE_SHORT_MAX:
        return vgapsum(z, w, n, top)
    if w == NULL:
        for j in range(n):
            acc = acc + (<double>top - <double>z[j * zc])
    else:
        for j in range(n):
            if w[j] != 0.0:
                acc = acc + w[j] * (<double>top - <double>z[j * zc])
    return acc


cdef inline void clear_row(floating *g, Py_ssize_t stride, Py_ssize_t n) noexcept nogil:
    """An ignored row's output: zeros."""
    cdef Py_ssize_t j
    for j in range(n):
        g[j * stride] = 0


cdef inline double unshifted_logsumexp(const floating *z, Py_ssize_t zc,
                                       Py_ssize_t n) noexcept nogil:
    """log-sum-exp of a row whose max is infinite, where shifting by the max
    gives NaN; unshifted, the sum is exactly 0 (all -inf), +inf, or NaN (a NaN
    in the row)."""
    cdef Py_ssize_t j
    cdef double s = 0.0
    for j in range(n):
        s = s + libm_exp(z[j * zc])
    return log(s)


cdef inline double class_mass(const Problem *P, const floating *y, Py_ssize_t yc,
                              Py_ssize_t j) noexcept nogil:
    """c_j = w_j ((1 - eps) y_j + eps / C) for probability targets."""
    cdef double c = P.keep * y[j * yc] + P.each
    return c * P.weight[j] if P.weight != NULL else c


cdef inline double class_weight(const Problem *P, Py_ssize_t t) noexcept nogil:
    """Class t's weight (1 without class weights)."""
    return P.weight[t] if P.weight != NULL else 1.0


cdef inline void keep_target(const Problem *P, const floating *z, Py_ssize_t zc, Py_ssize_t t,
                             RowPrep *row) noexcept nogil:
    """What the loss needs of the target before the exps may overwrite z (in
    place): its logit and its class weight (a target in another shard: its
    weight alone)."""
    if t >= P.m:
        row.zt = 0.0
        row.wt = class_weight(P, t - P.m - P.offset)
        return
    row.zt = z[t * zc]
    row.wt = class_weight(P, t)


cdef enum:
    BESIDE_BLOCK = 256          # elements of exps_beside_max's stack buffer


cdef double exps_beside_max(const floating *z, Py_ssize_t zc, Py_ssize_t m,
                            floating zmax) noexcept nogil:
    """sum of exp(z_j - zmax) over z[0:m] but the row's max (its only one:
    see small_lse), a block of BESIDE_BLOCK at a time through the stack, the
    max made -inf there."""
    cdef floating buf[BESIDE_BLOCK]
    cdef floating v
    cdef Py_ssize_t j0 = 0, i, n
    cdef double t = 0.0
    while j0 < m:
        n = min(<Py_ssize_t>BESIDE_BLOCK, m - j0)
        for i in range(n):
            v = z[(j0 + i) * zc]
            buf[i] = -INFINITY if v == zmax else v
        t += vsumexp(buf, n, zmax, -INFINITY, NULL, buf)
        j0 += n
    return t


cdef inline bint small_lse(double zmax, double log_s) noexcept nogil:
    """Whether a row's log-sum-exp takes the log1p pass: its max's own term,
    1, dominates the sum of exps (below 2, so the max is the only one) and
    the result is within 0.5 of 0, where the rest's low bits were lost to it."""
    return log_s < 0.6931471805599453 and fabs(zmax + log_s) < 0.5


cdef double row_logsumexp(const floating *z, Py_ssize_t zc, Py_ssize_t m, double zmax,
                          double log_s) noexcept nogil:
    """A row's log-sum-exp from its max and sum of exps; a row whose max is
    infinite is summed unshifted (shifted, it would be NaN).  For a small
    result (small_lse) the exps beside the max are summed again alone, for
    log1p, a segment of split_rows' length at a time (which shares them
    among the threads: the same bits)."""
    cdef Py_ssize_t segment = SEGMENT_RUNS * ce_run_length(m), off = 0
    cdef double t = 0.0
    if isinf(zmax):
        return unshifted_logsumexp(z, zc, m)
    if not small_lse(zmax, log_s):
        return zmax + log_s
    while off < m:
        t += exps_beside_max(z + off * zc, zc, min(segment, m - off), <floating>zmax)
        off += segment
    return zmax + log1p(t)


cdef inline void log_softmax_shift(const Problem *P, const floating *z, Py_ssize_t zc,
                                   Py_ssize_t m, double zmax, double log_s,
                                   floating *a, floating *b) noexcept nogil:
    """A row's log-softmax is (z - a) - b: a its max, b the log of its sum of
    exps; with inf_row_lse, for a row whose max is +inf, a = 0 and b its
    unshifted log-sum-exp (+inf, or NaN if a logit is)."""
    if P.inf_row_lse and zmax == INFINITY:
        a[0] = 0
        b[0] = <floating>unshifted_logsumexp(z, zc, m)
    else:
        a[0] = <floating>zmax
        b[0] = <floating>log_s


cdef inline double multiplier(const Problem *P, const RowPrep *row, double lse) noexcept nogil:
    """What multiplies a row's probabilities in its gradient, before the
    upstream gradient and the sample weight: its target mass S = sum_j c_j,
    plus the z-loss's 2 z_loss lse, weighted as the rest of the row's loss
    (by the target's class weight; for probability targets not at all)."""
    cdef double a
    if P.probabilities:
        a = row.mass
        if P.z_loss != 0.0:
            a = a + 2.0 * P.z_loss * lse
        return a
    a = P.keep * row.wt + (P.each * P.weight_total if P.smoothing else 0.0)
    if P.z_loss != 0.0:
        a = a + 2.0 * P.z_loss * row.wt * lse
    return a


cdef inline double hard_target_end(const Problem *P, const RowPrep *row, double s,
                                   double log_s, double lse, double sample_weight,
                                   double e_t, double *factor, double *g_t) noexcept nogil:
    """The finish of a row with a class-index target (the rules are csrc/rows.h's
    ce_target_loss and ce_target_grad, which the short-row block uses too):
    returns the row's loss; with `factor` not NULL also the factor that turns
    the row's exps into its gradient (less, with smoothing, gs * eps / C * w_j)
    and, into g_t, the gradient's target entry, from e_t = exp(z_t - max).
    The z-loss, weighted by the target's class weight as the rest, adds
    2 z_loss lse to what multiplies the probabilities."""
    cdef double loss = ce_target_loss(P.keep * row.wt, row.zmax, row.zt, log_s)
    cdef double gs, a
    if P.smoothing:
        loss = loss + P.each * (P.weight_total * log_s + row.gap)
    if P.z_loss != 0.0:
        loss = loss + ce_weigh(row.wt, P.z_loss * lse * lse, log_s)
    loss = ce_weigh(sample_weight, loss, log_s)
    if factor != NULL:
        gs = P.grad_scale * sample_weight
        a = multiplier(P, row, lse)
        factor[0] = gs * a / s
        g_t[0] = ce_target_grad(gs, a, e_t / s, P.keep * row.wt,
                                P.each * row.wt if P.smoothing else 0.0)
    return loss


# --- the second-order modes -------------------------------------------------------

cdef inline double cap_slope(double u) noexcept nogil:
    """The cap's derivative 1 - tanh^2 at a capped logit y = c u, u = y / c
    (0 where rounding puts |u| above 1)."""
    cdef double d = 1.0 - u * u
    return d if d > 0.0 else 0.0


cdef inline double target_mass(const Problem *P, const RowPrep *row, const floating *y,
                               Py_ssize_t yc, Py_ssize_t j) noexcept nogil:
    """c_j, the weight of -log p_j in the row's loss: the gradient is
    (upstream gradient x sample weight) (multiplier p_j - c_j)."""
    cdef double c
    if P.probabilities:
        return class_mass(P, y, yc, j)
    c = P.each * class_weight(P, j) if P.smoothing else 0.0
    return c + P.keep * row.wt if j == row.t else c


cdef void hessian_diagonal(const floating *e, floating *h, Py_ssize_t hc, Py_ssize_t m,
                           double s, double A, double B, const double *run_scale,
                           Py_ssize_t run) noexcept nogil:
    """h (class stride hc) = A p (1 - p) + B p^2 with p = e / s (e times
    run_scale[b] in run b when run_scale is not NULL): 1 - p is taken as
    (s - e) / s, which keeps the digits of a probability near 1."""
    cdef Py_ssize_t j, j0 = 0, j1
    cdef double q, r = 1.0, inv2 = 1.0 / (s * s)
    while j0 < m:
        j1 = m
        if run_scale != NULL:
            j1 = min(m, j0 + run)
            r = run_scale[j0 // run]
        for j in range(j0, j1):
            q = e[j] * r
            h[j * hc] = <floating>(q * (A * (s - q) + B * q) * inv2)
        j0 = j1


cdef void cap_hessian(floating *h, Py_ssize_t hc, const floating *g, const floating *y,
                      Py_ssize_t m, double c) noexcept nogil:
    """The Hessian's diagonal h with respect to capped logits y = c tanh(z / c)
    made one with respect to z: d^2 h + g y'' with d the cap's slope, y'' =
    -2 (y / c^2) d and g the gradient with respect to y."""
    cdef Py_ssize_t j
    cdef double u, d, inv = 1.0 / c
    for j in range(m):
        u = y[j] * inv
        d = cap_slope(u)
        h[j * hc] = <floating>(d * (d * h[j * hc] - 2.0 * inv * u * g[j]))


cdef void hessian_product(const Problem *P, const floating *z, floating *g,
                          const floating *y, Py_ssize_t yc, const floating *v, Py_ssize_t vc,
                          double s, const RowPrep *row, double gs, double A, double B,
                          const double *run_scale, Py_ssize_t run) noexcept nogil:
    """g (the row's exps, in runs as finish's) = H v, H = A (diag p - p p^T)
    + B p p^T; with softcapping (z the capped logits) through the cap,
    d (H (d v)) + g_y y'' v, g_y the gradient with respect to the capped
    logits (d, y'' as cap_hessian's).  v has class stride vc."""
    cdef Py_ssize_t j, m = P.m
    cdef bint capped = P.softcap != 0.0
    cdef double u = 0.0, p, w, d = 1.0, c_u = 0.0, inv = 0.0
    if run_scale != NULL:
        scale_runs(g, m, run, 1.0 / s, run_scale)
    else:
        scale(g, m, <floating>(1.0 / s))
    if capped:
        inv = 1.0 / P.softcap
        for j in range(m):
            u = u + g[j] * (cap_slope(z[j] * inv) * v[j * vc])
    else:
        for j in range(m):
            u = u + <double>g[j] * v[j * vc]
    for j in range(m):
        p = g[j]
        w = v[j * vc]
        if capped:
            c_u = z[j] * inv
            d = cap_slope(c_u)
        w = A * p * (d * w) + (B - A) * p * u
        if capped:
            # (A p - gs c_j: the gradient with respect to the capped logit)
            w = d * w - (2.0 * inv * c_u * d * (A * p - gs * target_mass(P, row, y, yc, j))
                         * v[j * vc])
        g[j] = <floating>w


cdef inline bint second_order(const Problem *P, const floating *z, floating *g,
                              const floating *y, Py_ssize_t yc, floating *aux, Py_ssize_t ac,
                              double s, const RowPrep *row, double gs, double lse,
                              const double *run_scale, Py_ssize_t run) noexcept nogil:
    """finish's Hessian step, while g holds the row's exps: the diagonal
    into aux (class stride ac) in LOSS_GRAD_HESS, after which finish makes g
    the gradient; in HVP g becomes the product with the v in aux, and this
    returns True."""
    cdef double A = gs * multiplier(P, row, lse)
    cdef double B = gs * 2.0 * P.z_loss * (1.0 if P.probabilities else row.wt)
    if P.mode == HVP:
        hessian_product(P, z, g, y, yc, aux, ac, s, row, gs, A, B, run_scale, run)
        return True
    hessian_diagonal(g, aux, ac, P.m, s, A, B, run_scale, run)
    return False


cdef inline bint loss_mode(Mode mode) noexcept nogil:
    return (mode == LOSS or mode == LOSS_GRAD or mode == LOSS_GRAD_HESS or mode == HVP
            or mode == PARTIALS or mode == SHARD_GRAD)


cdef inline bint shard_mode(Mode mode) noexcept nogil:
    return mode == PARTIALS or mode == SHARD_GRAD


cdef inline bint hessian_mode(Mode mode) noexcept nogil:
    return mode == LOSS_GRAD_HESS or mode == HVP


cdef inline double *part_of(const Problem *P, Pos r, Py_ssize_t *stride) noexcept nogil:
    """The row's 4 doubles in `part`, and their stride (in doubles)."""
    stride[0] = P.part.sc // <Py_ssize_t>sizeof(double)
    return <double *>row_ptr(&P.part, r)


cdef inline void store_no_partials(const Problem *P, Pos r) noexcept nogil:
    """PARTIALS of an ignored row, which add nothing: -inf, 0, 0, 0."""
    cdef Py_ssize_t c
    cdef double *p = part_of(P, r, &c)
    p[0], p[c], p[2 * c], p[3 * c] = -INFINITY, 0.0, 0.0, 0.0


cdef inline void store_partials(const Problem *P, Pos r, const RowPrep *row, double s,
                                const floating *z, Py_ssize_t zc) noexcept nogil:
    """PARTIALS: the row's max, sum of exps s, target mass sum_j c_j and
    sum_j c_j (max - z_j) over the shard (z, class stride zc).  A term whose
    c_j is 0 adds 0 even where z_j is -inf, as in the loss of a whole row.
    A shard whose max is -inf adds no exps (s = 0) unless it holds a NaN
    (which the max passes over): then its max is NaN, which makes the row's."""
    cdef Py_ssize_t c, j
    cdef double *p = part_of(P, r, &c)
    cdef double mass = 0.0, gap = 0.0, ct, top = row.zmax
    if top == -INFINITY:
        s = 0.0
        for j in range(P.m):
            if z[j * zc] != z[j * zc]:
                top = s = NAN
                break
    if P.probabilities:
        mass, gap = row.mass, row.gap
    else:
        if P.smoothing:
            mass, gap = P.each * P.shard_weight_total, P.each * row.gap
        ct = P.keep * row.wt
        if row.t < P.m and ct != 0.0:
            mass = mass + ct
            gap = gap + ct * (row.zmax - row.zt)
    p[0], p[c], p[2 * c], p[3 * c] = top, s, mass, gap


cdef inline void given_totals(const Problem *P, Pos r, RowPrep *row) noexcept nogil:
    """SHARD_GRAD: the whole row's max, sum of exps and (probability
    targets) target mass, from `part`."""
    cdef Py_ssize_t c
    cdef const double *p = part_of(P, r, &c)
    row.zmax = p[0]
    row.total = p[c]
    row.mass = p[2 * c]


# --- one row: prepare and finish -----------------------------------------------

cdef inline void prepare(const Problem *P, const floating *z, Py_ssize_t zc,
                         const floating *y, Py_ssize_t yc, Py_ssize_t t,
                         RowPrep *row) noexcept nogil:
    """Everything the row needs from the logits before they may be overwritten.

    `z` and `y` are rows with class strides zc and yc (1 for long rows); `t`
    the target class (hard targets).
    """
    cdef Py_ssize_t j, m = P.m
    cdef double c, mass = 0.0, gap = 0.0
    cdef floating zmin
    cdef floating zmax
    row.t = t
    if P.mode == SHARD_GRAD:
        # the whole row's max is given (given_totals), and mass too
        row.zmin = -INFINITY
        if not P.probabilities:
            keep_target(P, z, zc, t, row)
        return
    zmax = row_max(z, zc, m, &zmin)
    row.zmax = zmax
    row.zmin = zmin
    if not loss_mode(P.mode):
        return
    if P.probabilities:
        # c_j = w_j ((1 - eps) y_j + eps / C); a class with c_j == 0 adds
        # nothing to the loss, even where z_j = -inf (PyTorch would give NaN).
        for j in range(m):
            c = class_mass(P, y, yc, j)
            mass = mass + c
            if c != 0.0:
                gap = gap + c * (<double>zmax - <double>z[j * zc])
        row.mass = mass
        row.gap = gap
        return
    keep_target(P, z, zc, t, row)
    if P.smoothing:
        row.gap = gap_sum(z, zc, P.weight, m, zmax)


cdef inline double finish(const Problem *P, const floating *z, Py_ssize_t zc,
                          floating *g, const floating *y, Py_ssize_t yc, double s,
                          const RowPrep *row, double sample_weight, double *lse,
                          floating *aux=NULL, Py_ssize_t ac=0,
                          const double *run_scale=NULL, Py_ssize_t run=0) noexcept nogil:
    """Loss (or log-sum-exp) of a row whose exps sum to `s`; writes `g`, and
    in the loss modes the row's log-sum-exp into lse.

    `g` is a contiguous row holding exp(z - max) for the gradient and softmax
    modes; for a row in runs (run_scale not NULL: hard targets without
    smoothing), exp(z - the run's max) in each run b, which run_scale[b] turns
    into exp(z - max).  It may be `z` itself (in place), so `z` is read here only where
    that is safe: for log-softmax element by element before the write, and for
    the log-sum-exp of a row with an infinite max.  `z`, `y` have class strides
    zc, yc.  With softcapping, `z` is the row's capped logits, contiguous
    (zc = 1), and the gradient is taken through the cap at the end.  `aux`
    (class stride ac) is the row's Hessian diagonal to write (LOSS_GRAD_HESS)
    or its vector v to read (HVP, where `g` gets the product instead).
    """
    cdef Py_ssize_t j, t = row.t, m = P.m
    cdef double log_s = log(s), loss, gs, a, e_t, factor, g_t
    cdef floating zmax = <floating>row.zmax, shift_a, shift_b
    lse[0] = ce_loss_lse(row.zmax, log_s)
    if P.mode == LOGSUMEXP:
        return row_logsumexp(z, zc, m, row.zmax, log_s)
    if P.mode == SOFTMAX:
        if run_scale != NULL:
            scale_runs(g, m, run, 1.0 / s, run_scale)
        else:
            scale(g, m, <floating>(1.0 / s))
        return row.zmax + log_s
    if P.mode == LOG_SOFTMAX:
        log_softmax_shift(P, z, zc, m, row.zmax, log_s, &shift_a, &shift_b)
        shift(z, zc, g, m, shift_a, shift_b)
        return row.zmax + log_s

    # Loss of the row: sum_j c_j (lse - z_j), split as
    # (sum_j c_j) log s + sum_j c_j (max - z_j) so that no large terms cancel;
    # gradient: sum_j c_j (p - onehot_j) = p * mass - c, times the upstream
    # gradient and this row's sample weight.
    # (z-loss: weighted by the sample weight alone, there being no one target)
    if P.probabilities:
        loss = row.mass * log_s + row.gap
        if P.z_loss != 0.0:
            loss = loss + P.z_loss * lse[0] * lse[0]
        loss = ce_weigh(sample_weight, loss, log_s)
        if P.mode == LOSS:
            return loss
        gs = P.grad_scale * sample_weight
        if hessian_mode(P.mode) and second_order(P, z, g, y, yc, aux, ac, s, row, gs, lse[0],
                                                 NULL, 0):
            return loss
        a = gs * multiplier(P, row, lse[0]) / s
        for j in range(m):
            g[j] = <floating>(g[j] * a - gs * class_mass(P, y, yc, j))
    elif P.mode == LOSS:
        return hard_target_end(P, row, s, log_s, lse[0], sample_weight, 0.0, NULL, NULL)
    else:
        e_t = g[t] if t < m else 0.0          # (t >= m: the target is another shard's)
        if run_scale != NULL:
            e_t = e_t * run_scale[t // run]
        loss = hard_target_end(P, row, s, log_s, lse[0], sample_weight, e_t, &factor, &g_t)
        gs = P.grad_scale * sample_weight
        if hessian_mode(P.mode) and second_order(P, z, g, y, yc, aux, ac, s, row, gs, lse[0],
                                                 run_scale, run):
            return loss
        if run_scale != NULL:
            scale_runs(g, m, run, factor, run_scale)
        elif P.smoothing or not isfinite(<floating>factor):
            # (the second case: a huge grad_scale whose factor overflows float32
            # although the products with the probabilities do not)
            scale_sub(g, P.weight, m, factor, gs * P.each if P.smoothing else 0.0)
        else:
            scale(g, m, <floating>factor)
        if t < m:
            g[t] = <floating>g_t
    if P.softcap != 0.0:
        if P.mode == LOSS_GRAD_HESS:
            cap_hessian(aux, ac, g, z, m, P.softcap)
        cap_grad(g, z, m, P.softcap)
    return loss


# --- rows of a chunk -------------------------------------------------------------

cdef inline Py_ssize_t row_target(const Problem *P, Pos r) noexcept nogil:
    """The row's class, or -1 when it is ignored (or, defensively, invalid);
    in the shard modes, its class in the shard, or m + its class when that is
    another shard's."""
    cdef Py_ssize_t t
    if not P.has_target or P.probabilities:
        return 0
    t = (<Py_ssize_t *>row_ptr(&P.target, r))[0]
    if shard_mode(P.mode):
        t = ce_class_or_ignored(t, P.ignore_index, P.n_all)
        if t < 0:
            return -1
        return t - P.offset if P.offset <= t < P.offset + P.m else P.m + t
    return ce_class_or_ignored(t, P.ignore_index, P.m)


cdef inline double row_sample_weight(const Problem *P, Pos r) noexcept nogil:
    if not P.has_sample_weight:
        return 1.0
    return (<double *>row_ptr(&P.sample_weight, r))[0]


cdef inline void store_value(const Problem *P, const Strided *a, Pos r, double v) noexcept nogil:
    """A row's number into `a`, in the logits' dtype (beyond the float
    range, a float32 value is infinite, as IEEE rounding makes it)."""
    if P.row_value_float:
        (<float *>row_ptr(a, r))[0] = <float>v
    else:
        (<double *>row_ptr(a, r))[0] = v


cdef inline void store_row_value(const Problem *P, Pos r, double v) noexcept nogil:
    """A row's loss or log-sum-exp (row_value)."""
    if P.has_row_value:
        store_value(P, &P.row_value, r, v)


cdef inline void store_lse(const Problem *P, Pos r, double v) noexcept nogil:
    """A row's log-sum-exp in the loss modes (return_lse); 0 for an ignored row."""
    if P.has_lse:
        store_value(P, &P.lse, r, v)


cdef inline void gather(const floating *src, Py_ssize_t stride, floating *dst,
                        Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(n):
        dst[j] = src[j * stride]


cdef inline void scatter(const floating *src, floating *dst, Py_ssize_t stride,
                         Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(n):
        dst[j * stride] = src[j]


cdef inline Py_ssize_t run_count(Py_ssize_t n, Py_ssize_t run) noexcept nogil:
    """Runs (or segments) of `run` elements that n elements make, the last
    one shorter."""
    return (n + run - 1) // run


cdef inline bint writes_out(const Problem *P) noexcept nogil:
    return P.mode != LOSS and P.mode != LOGSUMEXP and P.mode != PARTIALS


cdef double long_rows(const Problem *P, Py_ssize_t r0, Py_ssize_t r1, char *ws,
                      const floating *element_type) noexcept nogil:
    """Rows r0..r1 with more than CE_SHORT_MAX classes; returns their loss sum.

    `ws` is the thread's workspace (run allocates it): the runs' bookkeeping, a
    block of exps, and 3 rows of m for rows whose classes are strided or that
    are capped (the capped logits go into the first);
    `element_type` is unused: its type selects the float or double version.
    """
    cdef Py_ssize_t r, t, m = P.m
    cdef Py_ssize_t zc = P.z.sc // <Py_ssize_t>sizeof(floating)
    cdef Py_ssize_t oc = P.out.sc // <Py_ssize_t>sizeof(floating)
    cdef Py_ssize_t yc = P.y.sc // <Py_ssize_t>sizeof(floating)
    cdef Py_ssize_t ac = P.aux.sc // <Py_ssize_t>sizeof(floating)
    cdef bint write = writes_out(P)
    cdef bint strided = zc != 1 or (write and oc != 1) or (P.probabilities and yc != 1)
    cdef bint capped = P.softcap != 0.0
    cdef bint prefetch = (not strided and not capped and P.inner == 1
                          and PREFETCH_MIN <= m <= PREFETCH_MAX)
    cdef Py_ssize_t fetch_rows = 1
    if floating is float:
        fetch_rows = max(1, PREFETCH_BYTES // (m * <Py_ssize_t>sizeof(float)))
    cdef bint runs = (m >= RUNS_MIN and not P.probabilities and not P.smoothing
                      and P.mode != SHARD_GRAD)
    cdef Py_ssize_t run = ce_run_length(m)
    cdef double *run_top = <double *>ws
    cdef double *run_sum = run_top + CE_MAX_RUNS
    cdef double *run_scale = run_sum + CE_MAX_RUNS
    cdef floating *block = <floating *>(run_scale + CE_MAX_RUNS)
    cdef floating *scratch = block + CE_BLOCK
    cdef const floating *z
    cdef const floating *ahead
    cdef floating *ahead_out
    cdef Py_ssize_t ahead_rows
    cdef const floating *y = NULL
    cdef floating *g = NULL
    cdef floating *g_dest = NULL
    cdef floating *aux = NULL
    cdef double s, v, sw, lse, total = 0.0
    cdef RowPrep row

    cdef Pos pos = row_pos(r0, P.inner)
    for r in range(r0, r1):
        if r > r0:
            next_row(&pos, P.inner)
        t = row_target(P, pos)
        aux = <floating *>row_ptr(&P.aux, pos)
        if t < 0:
            if write:
                clear_row(<floating *>row_ptr(&P.out, pos), oc, m)
            if P.mode == LOSS_GRAD_HESS:
                clear_row(aux, ac, m)
            if P.mode == PARTIALS:
                store_no_partials(P, pos)
            store_row_value(P, pos, 0.0)
            store_lse(P, pos, 0.0)
            continue
        z = <const floating *>row_ptr(&P.z, pos)
        if P.probabilities:
            y = <const floating *>row_ptr(&P.y, pos)
        if write:
            g_dest = <floating *>row_ptr(&P.out, pos)
            g = g_dest
        if strided:
            gather(z, zc, scratch, m)
            z = scratch
            if P.probabilities:
                gather(y, yc, scratch + m, m)
                y = scratch + m
            g = scratch + 2 * m
        if capped:
            # (the logits themselves stay as they are, or become the gradient)
            cap(z, scratch, m, P.softcap)
            z = scratch
        sw = row_sample_weight(P, pos)
        if runs:
            # no max pass first: each run is shifted by its own max
            row.t = t
            keep_target(P, z, 1, t, &row)
            run_parts(z, g if write and P.mode != LOG_SOFTMAX else NULL, m, run,
                      run_top, run_sum)
            s = ce_runs_total(run_top, run_sum, run_count(m, run), &row.zmax, run_scale)
            if P.mode == PARTIALS:
                store_partials(P, pos, &row, s, z, 1)
                continue
            v = finish(P, z, 1, g, y, 1, s, &row, sw, &lse, aux, ac, run_scale, run)
        else:
            # a later row's logits stream in during this row's exps (rows of a
            # few KB: the hardware prefetcher alone leaves each max pass
            # waiting), the chunk's last row at the nearest, and for float its
            # gradient's lines, unless those are its logits, so that the stores
            # find them
            ahead_rows = min(fetch_rows, r1 - 1 - r)
            ahead = (z + ahead_rows * (P.z.so // <Py_ssize_t>sizeof(floating))
                     if prefetch and ahead_rows > 0 else NULL)
            ahead_out = NULL
            if floating is float:
                if ahead != NULL and write and P.out.data != P.z.data:
                    ahead_out = g + ahead_rows * (P.out.so // <Py_ssize_t>sizeof(floating))
            if P.mode == SHARD_GRAD:
                given_totals(P, pos, &row)
            prepare(P, z, 1, y, 1, t, &row)
            if write and P.mode != LOG_SOFTMAX:
                s = vexpsum(z, g, m, <floating>row.zmax, <floating>row.zmin, ahead, ahead_out)
            else:
                s = vsumexp(z, m, <floating>row.zmax, <floating>row.zmin, ahead, block)
            if P.mode == PARTIALS:
                store_partials(P, pos, &row, s, z, 1)
                continue
            if P.mode == SHARD_GRAD:
                s = row.total
            v = finish(P, z, 1, g, y, 1, s, &row, sw, &lse, aux, ac)
        if strided and write:
            scatter(g, g_dest, oc, m)
        store_row_value(P, pos, v)
        store_lse(P, pos, lse)
        total = total + v
    return total


cdef inline Py_ssize_t round_up(Py_ssize_t n, Py_ssize_t to) noexcept nogil:
    return (n + to - 1) // to * to


cdef inline Py_ssize_t short_block_rows(Py_ssize_t m) noexcept nogil:
    """Rows in a block of short_rows (m >= 1 classes)."""
    return min(BLOCK_ELEMENTS // m, BLOCK_ROWS)


cdef Py_ssize_t short_rows_bytes(Py_ssize_t m, Py_ssize_t item, bint capped) noexcept nogil:
    """Workspace of short_rows: a block's exps, its capped logits (when
    capped), then its rows' RowPrep, sample weights and positions."""
    cdef Py_ssize_t rows = short_block_rows(m)
    return (round_up(rows * m * item, WORKSPACE_ALIGN) * (2 if capped else 1)
            + rows * (sizeof(RowPrep) + sizeof(double) + sizeof(Pos)))


cdef inline Py_ssize_t runs_bytes(Py_ssize_t item) noexcept nogil:
    """Workspace of long_rows and split_rows before their strided rows: the
    runs' tops, sums and scales, and a block of exps."""
    return 3 * CE_MAX_RUNS * sizeof(double) + CE_BLOCK * item


cdef double short_rows(const Problem *P, Py_ssize_t r0, Py_ssize_t r1, char *ws,
                       const floating *element_type) noexcept nogil:
    """Rows r0..r1 with at most CE_SHORT_MAX classes, a block at a time; returns
    their loss sum.  `element_type` is unused: its type selects the float or
    double version."""
    cdef Py_ssize_t m = P.m, r, b0, b1, k, j, t
    cdef Py_ssize_t per_block = short_block_rows(m)
    cdef Py_ssize_t zc = P.z.sc // <Py_ssize_t>sizeof(floating)
    cdef Py_ssize_t oc = P.out.sc // <Py_ssize_t>sizeof(floating)
    cdef Py_ssize_t yc = P.y.sc // <Py_ssize_t>sizeof(floating)
    cdef Py_ssize_t ac = P.aux.sc // <Py_ssize_t>sizeof(floating)
    cdef bint write = writes_out(P)
    cdef bint capped = P.softcap != 0.0
    cdef Py_ssize_t zs = 1 if capped else zc     # class stride of the rows read
    cdef const floating *z
    cdef const floating *y
    cdef floating zmax
    cdef double s, v, lse, total = 0.0
    # the block's state, in the thread's workspace (short_rows_bytes)
    cdef Py_ssize_t block_bytes = round_up(per_block * m * sizeof(floating), WORKSPACE_ALIGN)
    cdef floating *exps = <floating *>ws
    cdef floating *caps = <floating *>(ws + block_bytes)
    cdef RowPrep *prep = <RowPrep *>(ws + block_bytes * (2 if capped else 1))
    cdef double *weights = <double *>(prep + per_block)
    cdef Pos *positions = <Pos *>(weights + per_block)
    cdef Pos pos = row_pos(r0, P.inner)

    b0 = r0
    while b0 < r1:
        b1 = b0 + per_block
        if b1 > r1:
            b1 = r1
        # Prepare each row and lay out z - max for the whole block ...
        for r in range(b0, b1):
            k = r - b0
            if r > r0:
                next_row(&pos, P.inner)
            positions[k] = pos
            t = row_target(P, pos)
            prep[k].t = t
            if t < 0:
                for j in range(m):
                    exps[k * m + j] = 0
                continue
            z = <const floating *>row_ptr(&P.z, pos)
            if capped:
                gather(z, zc, caps + k * m, m)
                cap(caps + k * m, caps + k * m, m, P.softcap)
                z = caps + k * m
            y = <const floating *>row_ptr(&P.y, pos) if P.probabilities else NULL
            weights[k] = row_sample_weight(P, pos)
            if P.mode == SHARD_GRAD:
                given_totals(P, pos, &prep[k])
            prepare(P, z, zs, y, yc, t, &prep[k])
            zmax = <floating>prep[k].zmax
            for j in range(m):
                exps[k * m + j] = z[j * zs] - zmax
        # ... one vectorised exp over all of it ...
        vexp(exps, exps, (b1 - b0) * m)
        # ... then reduce and write row by row.
        for r in range(b0, b1):
            k = r - b0
            if prep[k].t < 0:
                if write:
                    clear_row(<floating *>row_ptr(&P.out, positions[k]), oc, m)
                if P.mode == LOSS_GRAD_HESS:
                    clear_row(<floating *>row_ptr(&P.aux, positions[k]), ac, m)
                if P.mode == PARTIALS:
                    store_no_partials(P, positions[k])
                store_row_value(P, positions[k], 0.0)
                store_lse(P, positions[k], 0.0)
                continue
            s = short_sum(exps + k * m, m)
            if P.mode == PARTIALS:
                store_partials(P, positions[k], &prep[k], s,
                               caps + k * m if capped else
                               <const floating *>row_ptr(&P.z, positions[k]), zs)
                continue
            if P.mode == SHARD_GRAD:
                s = prep[k].total
            if capped:
                z = caps + k * m
            else:
                z = <const floating *>row_ptr(&P.z, positions[k])
            y = <const floating *>row_ptr(&P.y, positions[k]) if P.probabilities else NULL
            v = finish(P, z, zs, exps + k * m, y, yc, s, &prep[k], weights[k], &lse,
                       <floating *>row_ptr(&P.aux, positions[k]), ac)
            if write:
                scatter(exps + k * m, <floating *>row_ptr(&P.out, positions[k]), oc, m)
            store_row_value(P, positions[k], v)
            store_lse(P, positions[k], lse)
            total = total + v
        b0 = b1
    return total


cdef double short_rows_hard(const Problem *P, Py_ssize_t r0, Py_ssize_t r1, char *ws,
                            const floating *element_type) noexcept nogil:
    """short_rows for the common case, hard targets without smoothing, in
    blocks of CE_ROWS rows vectorised across rows by ce_short_xent (the
    Hessian's diagonal too, in LOSS_GRAD_HESS)."""
    cdef Py_ssize_t m = P.m, inner = P.inner, ignore = P.ignore_index, b0, b1, k, n, t, ts
    cdef Py_ssize_t zc = P.z.sc // <Py_ssize_t>sizeof(floating)
    cdef Py_ssize_t oc = P.out.sc // <Py_ssize_t>sizeof(floating)
    cdef Py_ssize_t ac = P.aux.sc // <Py_ssize_t>sizeof(floating)
    cdef bint write = P.mode == LOSS_GRAD or P.mode == LOSS_GRAD_HESS
    cdef bint hess = P.mode == LOSS_GRAD_HESS
    cdef const double *class_weight = P.weight
    cdef bint has_sw = P.has_sample_weight
    cdef bint weighted = class_weight != NULL or has_sw
    cdef bint keep_rows = P.has_row_value
    cdef bint keep_lse = P.has_lse
    # Local copies: the compiler then knows the stores below do not change them
    # (read through P, they were reloaded for every row).
    cdef Strided z = P.z, out = P.out, target = P.target, aux = P.aux
    cdef Strided sample_weight = P.sample_weight
    cdef double total = 0.0
    cdef ce_rows zrows, grows, hrows
    cdef void *zat[CE_ROWS]
    cdef void *gat[CE_ROWS]
    cdef void *hat[CE_ROWS]
    cdef Py_ssize_t targets[CE_ROWS]
    cdef double weights[CE_ROWS]
    cdef double losses[CE_ROWS]
    cdef double lses[CE_ROWS]
    cdef Pos pos = row_pos(r0, inner)
    cdef char *tp

    # Class axis last: row r is at r * (row stride), so a block is described by
    # its first row and the strides, with nothing to set up per row.  Otherwise
    # the block's row addresses are listed.
    zrows.step = z.so
    grows.step = out.so
    hrows.step = aux.so
    zrows.at = NULL if inner == 1 else zat
    grows.at = NULL if inner == 1 else gat
    hrows.at = NULL if inner == 1 else hat
    b0 = r0
    while b0 < r1:
        b1 = b0 + CE_ROWS
        if b1 > r1:
            b1 = r1
        n = b1 - b0
        if inner == 1:
            zrows.base = z.data + b0 * z.so
            if write:
                grows.base = out.data + b0 * out.so
            if hess:
                hrows.base = aux.data + b0 * aux.so
            tp = target.data + b0 * target.so
            ts = target.so
            if has_sw:
                for k in range(n):
                    weights[k] = (<double *>(sample_weight.data + (b0 + k) * sample_weight.so))[0]
        else:
            for k in range(n):
                if b0 + k > r0:
                    next_row(&pos, inner)
                zat[k] = row_ptr(&z, pos)
                if write:
                    gat[k] = row_ptr(&out, pos)
                if hess:
                    hat[k] = row_ptr(&aux, pos)
                targets[k] = (<Py_ssize_t *>row_ptr(&target, pos))[0]
                if has_sw:
                    weights[k] = (<double *>row_ptr(&sample_weight, pos))[0]
            tp = <char *>targets
            ts = sizeof(Py_ssize_t)
        if weighted:
            for k in range(n):
                # the row's weight: sample weight x class weight of its target
                t = ce_class_or_ignored((<Py_ssize_t *>(tp + k * ts))[0], ignore, m)
                weights[k] = ((weights[k] if has_sw else 1.0)
                              * (class_weight[t] if class_weight != NULL and t >= 0 else 1.0))
        if floating is float:
            total = total + ce_short_xent_f32(
                &zrows, zc, <Py_ssize_t *>tp, ts, ignore, weights if weighted else NULL, n, m,
                &grows if write else NULL, oc, &hrows if hess else NULL, ac, P.grad_scale,
                losses if keep_rows else NULL, lses if keep_lse else NULL, <float *>ws)
        else:
            total = total + ce_short_xent_f64(
                &zrows, zc, <Py_ssize_t *>tp, ts, ignore, weights if weighted else NULL, n, m,
                &grows if write else NULL, oc, &hrows if hess else NULL, ac, P.grad_scale,
                losses if keep_rows else NULL, lses if keep_lse else NULL, <double *>ws)
        if keep_rows:
            for k in range(n):
                store_row_value(P, row_pos(b0 + k, inner), losses[k])
        if keep_lse:
            for k in range(n):
                store_lse(P, row_pos(b0 + k, inner), lses[k])
        b0 = b1
    return total


cdef void split_rows(const Problem *P, Py_ssize_t n_rows, double *row_loss,
                     char *ws, const floating *element_type, int n_threads) noexcept nogil:
    """Few very long rows, each shared by all threads: the runs that long_rows
    makes of a row are computed in parallel, SEGMENT_RUNS at a time, combined
    in order, and scaled in parallel, so the results are long_rows' to the
    bit, whatever the thread count.  Hard targets without smoothing; loss,
    loss+grad, softmax, log-softmax or log-sum-exp.  Rows with strided classes, and capped
    rows, go through the workspace `ws` (runs_bytes: the runs' bookkeeping,
    then 2 rows of m: the logits, capped or gathered, and the gradient)."""
    cdef Py_ssize_t m = P.m, run = ce_run_length(m)
    cdef Py_ssize_t segment = SEGMENT_RUNS * run, n_seg = run_count(m, segment)
    cdef Py_ssize_t zc = P.z.sc // <Py_ssize_t>sizeof(floating)
    cdef Py_ssize_t oc = P.out.sc // <Py_ssize_t>sizeof(floating)
    cdef bint write = writes_out(P)
    cdef bint strided = zc != 1 or (write and oc != 1)
    cdef bint loss_mode = P.mode == LOSS or P.mode == LOSS_GRAD
    cdef bint exps_out = write and P.mode != LOG_SOFTMAX    # g holds the exps
    cdef bint capped = P.softcap != 0.0
    cdef Py_ssize_t r, c, t, off
    cdef const floating *z
    cdef floating *g = NULL
    cdef floating *g_dest = NULL
    cdef double *run_top = <double *>ws
    cdef double *run_sum = run_top + CE_MAX_RUNS
    cdef double *run_scale = run_sum + CE_MAX_RUNS
    cdef floating *scratch = <floating *>(run_scale + CE_MAX_RUNS) + CE_BLOCK
    cdef double s, log_s, lse, value, factor = 0.0, g_t = 0.0, t_beside
    cdef floating shift_a, shift_b
    cdef RowPrep row
    cdef Pos pos = row_pos(0, P.inner)
    for r in range(n_rows):
        if r > 0:
            next_row(&pos, P.inner)
        t = row_target(P, pos)
        g_dest = <floating *>row_ptr(&P.out, pos) if write else NULL
        if t < 0:
            if write:
                clear_row(g_dest, oc, m)
            row_loss[r] = 0.0
            store_row_value(P, pos, 0.0)
            store_lse(P, pos, 0.0)
            continue
        z = <const floating *>row_ptr(&P.z, pos)
        g = g_dest
        if strided:
            gather(z, zc, scratch, m)
            z = scratch
            g = scratch + m
        if capped:
            for c in prange(n_seg, num_threads=n_threads, schedule="dynamic"):
                off = c * segment
                cap(z + off, scratch + off, min(segment, m - off), P.softcap)
            z = scratch
        if loss_mode:
            keep_target(P, z, 1, t, &row)
        for c in prange(n_seg, num_threads=n_threads, schedule="dynamic"):
            off = c * segment
            run_parts(z + off, g + off if exps_out else NULL, min(segment, m - off), run,
                      &run_top[c * SEGMENT_RUNS], &run_sum[c * SEGMENT_RUNS])
        s = ce_runs_total(run_top, run_sum, run_count(m, run), &row.zmax, run_scale)
        log_s = log(s)
        lse = ce_loss_lse(row.zmax, log_s)
        if P.mode == LOGSUMEXP and small_lse(row.zmax, log_s):
            # (row_logsumexp's segments, in parallel, into the runs' sums, now free)
            for c in prange(n_seg, num_threads=n_threads, schedule="dynamic"):
                off = c * segment
                run_sum[c] = exps_beside_max(z + off, 1, min(segment, m - off),
                                             <floating>row.zmax)
            t_beside = 0.0
            for c in range(n_seg):
                t_beside += run_sum[c]
            value = row.zmax + log1p(t_beside)
        elif P.mode == LOGSUMEXP:
            value = row_logsumexp(z, 1, m, row.zmax, log_s)
        elif P.mode == SOFTMAX:
            factor = 1.0 / s
            value = row.zmax + log_s
        elif P.mode == LOG_SOFTMAX:
            log_softmax_shift(P, z, 1, m, row.zmax, log_s, &shift_a, &shift_b)
            for c in prange(n_seg, num_threads=n_threads, schedule="dynamic"):
                off = c * segment
                shift(z + off, 1, g + off, min(segment, m - off), shift_a, shift_b)
            value = row.zmax + log_s
        elif P.mode == LOSS:
            value = hard_target_end(P, &row, s, log_s, lse, row_sample_weight(P, pos), 0.0,
                                    NULL, NULL)
        else:
            value = hard_target_end(P, &row, s, log_s, lse, row_sample_weight(P, pos),
                                    g[t] * run_scale[t // run], &factor, &g_t)
        if P.mode == SOFTMAX or P.mode == LOSS_GRAD:
            for c in prange(n_seg, num_threads=n_threads, schedule="dynamic"):
                off = c * segment
                scale_runs(g + off, min(segment, m - off), run, factor,
                           &run_scale[c * SEGMENT_RUNS])
            if P.mode == LOSS_GRAD:
                g[t] = <floating>g_t
                if capped:
                    for c in prange(n_seg, num_threads=n_threads, schedule="dynamic"):
                        off = c * segment
                        cap_grad(g + off, z + off, min(segment, m - off), P.softcap)
        if strided and write:
            scatter(g, g_dest, oc, m)
        row_loss[r] = value
        store_row_value(P, pos, value)
        store_lse(P, pos, lse)


# --- the driver ----------------------------------------------------------------

def run(*, int mode, const floating[:, :, :] z, floating[:, :, :] out,
        const floating[:, :, :] y, const Py_ssize_t[:, :] target,
        const double[:, :] sample_weight, floating[:, :] row_value,
        const double[::1] weight, double weight_total,
        Py_ssize_t ignore_index, double label_smoothing, double grad_scale,
        double[::1] chunk_sums, Py_ssize_t rows_per_chunk, int n_threads,
        floating[:, :] lse, double z_loss, double softcap, bint inf_row_lse,
        floating[:, :, :] hess, const floating[:, :, :] vec,
        double[:, :, :] part, Py_ssize_t offset, Py_ssize_t n_all):
    """Run `mode` over every row of `z` (outer, classes, inner).  Every
    argument is keyword-only: several are numbers that would swap silently.

    out            z's shape, for the modes that write an array; else None
    y              z's shape: class probabilities (probability targets), or None
    target         (outer, inner) class indices (hard targets), or None
    sample_weight  (outer, inner) per-row weights, or None
    row_value      (outer, inner) per-row loss / log-sum-exp (z's dtype), or None
    weight         (classes,) class weights, or None; weight_total their sum
    grad_scale     multiplies the gradient (upstream gradient / denominator)
    chunk_sums     per-chunk loss sums, one per chunk of rows_per_chunk rows
    lse            (outer, inner) per-row log-sum-exp in the loss modes (z's dtype), or None
    z_loss         adds z_loss * lse^2 to each row's loss (loss modes)
    softcap        > 0: the logits are capped, softcap * tanh(z / softcap) (loss modes)
    inf_row_lse    log-softmax of a row whose max is +inf is z - logsumexp(z): NaN where
                   z is +inf, -inf elsewhere (SciPy's); else NaN throughout (PyTorch's)
    hess           z's shape: the Hessian's diagonal (LOSS_GRAD_HESS), else None
    vec            z's shape: the vectors the Hessian multiplies (HVP), else None
    part           (outer, inner, 4): the rows' partials (PARTIALS, written) or totals
                   (SHARD_GRAD, read), else None
    offset, n_all  the shard modes: z holds classes [offset, offset + classes) of n_all;
                   target, weight and weight_total are the whole rows'

    Each thread's scratch (a block's state, strided rows) is allocated here,
    not on the threads' stacks, which can be small (threading.stack_size);
    only exps_beside_max's 2 KB block lives there.
    """
    cdef Problem P
    cdef Py_ssize_t m = z.shape[1], n_rows = z.shape[0] * z.shape[2]
    cdef Py_ssize_t n_chunks = chunk_sums.shape[0], c, r0, r1
    cdef Py_ssize_t item = sizeof(floating), per_thread, n_spaces
    cdef void *memory = NULL
    cdef char *ws
    cdef bint hard_plain, split, strided = needs_scratch(z, out, y)
    cdef bint rows_scratch = strided or softcap != 0.0

    if n_rows == 0:
        return
    n_threads = n_spaces = ce_usable_threads(n_threads)
    P.mode = <Mode>mode
    P.m = m
    P.inner = z.shape[2]
    P.ignore_index = ignore_index
    P.grad_scale = grad_scale
    P.keep = 1.0 - label_smoothing
    P.smoothing = label_smoothing > 0.0
    if (part is not None) != shard_mode(P.mode):
        raise ValueError("part goes with PARTIALS and SHARD_GRAD, and only they")
    if not shard_mode(P.mode):
        offset, n_all = 0, m
    elif not (0 <= offset and m <= n_all - offset and (weight is None or weight.shape[0] == n_all)
              and part.shape[0] == z.shape[0] and part.shape[1] == z.shape[2]
              and part.shape[2] == 4):
        raise ValueError("a shard's classes, weights and partials must fit its rows")
    P.offset = offset
    P.n_all = n_all
    P.each = label_smoothing / n_all if n_all > 0 else 0.0
    P.weight = &weight[0] + offset if weight is not None and n_all > 0 else NULL
    P.weight_total = weight_total
    P.shard_weight_total = 0.0
    if P.weight != NULL:
        for c in range(m):
            P.shard_weight_total += P.weight[c]
    else:
        P.shard_weight_total = m
    P.part = describe(<char *>&part[0, 0, 0] if part is not None and part.size else NULL,
                      part.strides[0] if part is not None else 0,
                      part.strides[2] if part is not None else 0,
                      part.strides[1] if part is not None else 0)
    P.probabilities = y is not None
    P.z_loss = z_loss
    P.softcap = softcap
    P.inf_row_lse = inf_row_lse
    P.has_lse = lse is not None
    P.has_out = out is not None
    P.has_target = target is not None
    P.has_sample_weight = sample_weight is not None
    P.has_row_value = row_value is not None
    P.row_value_float = floating is float
    P.z = describe(<char *>&z[0, 0, 0] if m > 0 else NULL, z.strides[0], z.strides[1], z.strides[2])
    P.out = describe(<char *>&out[0, 0, 0] if P.has_out and m > 0 else NULL,
                     out.strides[0] if P.has_out else 0, out.strides[1] if P.has_out else 0,
                     out.strides[2] if P.has_out else 0)
    P.y = describe(<char *>&y[0, 0, 0] if P.probabilities and m > 0 else NULL,
                   y.strides[0] if P.probabilities else 0, y.strides[1] if P.probabilities else 0,
                   y.strides[2] if P.probabilities else 0)
    P.target = describe(<char *>&target[0, 0] if P.has_target else NULL,
                        target.strides[0] if P.has_target else 0, 0,
                        target.strides[1] if P.has_target else 0)
    P.sample_weight = describe(<char *>&sample_weight[0, 0] if P.has_sample_weight else NULL,
                               sample_weight.strides[0] if P.has_sample_weight else 0, 0,
                               sample_weight.strides[1] if P.has_sample_weight else 0)
    P.row_value = describe(<char *>&row_value[0, 0] if P.has_row_value else NULL,
                           row_value.strides[0] if P.has_row_value else 0, 0,
                           row_value.strides[1] if P.has_row_value else 0)
    P.lse = describe(<char *>&lse[0, 0] if P.has_lse else NULL,
                     lse.strides[0] if P.has_lse else 0, 0,
                     lse.strides[1] if P.has_lse else 0)
    if (hess is not None) != (mode == LOSS_GRAD_HESS) or (vec is not None) != (mode == HVP):
        raise ValueError("hess goes with LOSS_GRAD_HESS, vec with HVP, and only they")
    if hess is not None:
        _check_same_shape(hess, z)
        P.aux = describe(<char *>&hess[0, 0, 0] if m > 0 else NULL, hess.strides[0],
                         hess.strides[1], hess.strides[2])
    elif vec is not None:
        _check_same_shape(vec, z)
        P.aux = describe(<char *>&vec[0, 0, 0] if m > 0 else NULL, vec.strides[0],
                         vec.strides[1], vec.strides[2])
    else:
        P.aux = describe(NULL, 0, 0, 0)

    if m == 0:
        # No classes: log-sum-exp of nothing is -inf.  The shim lets loss modes
        # get here only when every row is ignored (each loss is then 0).
        for r0 in range(n_rows):
            store_row_value(&P, row_pos(r0, P.inner), -INFINITY if mode == LOGSUMEXP else 0.0)
            store_lse(&P, row_pos(r0, P.inner), 0.0)
            if mode == PARTIALS:
                store_no_partials(&P, row_pos(r0, P.inner))
        return
    # Hard targets without smoothing: the across-rows SIMD block for short rows
    # (without the options that it leaves to short_rows), and for few very
    # long rows, rows shared by all threads.
    hard_plain = ((mode == LOSS or mode == LOSS_GRAD or mode == LOSS_GRAD_HESS)
                  and not P.probabilities and not P.smoothing and z_loss == 0.0 and softcap == 0.0)
    split = (m >= SPLIT_MIN_CLASSES and n_rows <= SPLIT_MAX_ROWS
             and not P.probabilities and not P.smoothing
             and not hessian_mode(P.mode) and not shard_mode(P.mode))
    if split:
        per_thread, n_spaces = runs_bytes(item) + (2 * m * item if rows_scratch else 0), 1
    elif m > CE_SHORT_MAX:
        per_thread = runs_bytes(item) + (3 * m * item if rows_scratch else 0)
    elif hard_plain:
        per_thread = m * CE_ROWS * item          # ce_short_xent's [class][row] block
    else:
        per_thread = short_rows_bytes(m, item, softcap != 0.0)
    per_thread = round_up(per_thread, WORKSPACE_ALIGN)
    memory = PyMem_Malloc(n_spaces * per_thread + WORKSPACE_ALIGN)
    if memory == NULL:
        raise MemoryError()
    ws = <char *>memory + (-<size_t>memory) % WORKSPACE_ALIGN
    try:
        if split:
            with nogil:
                split_rows(&P, n_rows, &chunk_sums[0], ws, &z[0, 0, 0], n_threads)
            return
        with nogil, parallel(num_threads=n_threads):
            for c in prange(n_chunks, schedule="dynamic"):
                r0 = c * rows_per_chunk
                r1 = r0 + rows_per_chunk
                if r1 > n_rows:
                    r1 = n_rows
                if m > CE_SHORT_MAX:
                    chunk_sums[c] = long_rows(&P, r0, r1, ws + threadid() * per_thread,
                                              &z[0, 0, 0])
                elif hard_plain:
                    chunk_sums[c] = short_rows_hard(&P, r0, r1, ws + threadid() * per_thread,
                                                    &z[0, 0, 0])
                else:
                    chunk_sums[c] = short_rows(&P, r0, r1, ws + threadid() * per_thread,
                                               &z[0, 0, 0])
    finally:
        PyMem_Free(memory)


cdef inline Strided describe(char *data, Py_ssize_t so, Py_ssize_t sc, Py_ssize_t si) noexcept:
    cdef Strided s
    s.data = data
    s.so = so
    s.sc = sc
    s.si = si
    return s


def check_targets(const Py_ssize_t[:, :] target, Py_ssize_t n_classes,
                  Py_ssize_t ignore_index, const double[::1] weight,
                  const double[:, :] sample_weight):
    """One pass over class-index targets, before anything is written.

    Returns (first_bad, n_active, denominator): the flat index of the first
    target outside [0, n_classes) that is not ignore_index (-1 if none), the
    number of positions not ignored, and PyTorch's mean denominator, the sum of
    weight[target] * sample_weight over those positions (float64, in order).
    """
    cdef Py_ssize_t outer = target.shape[0], inner = target.shape[1], o, i, t
    cdef Py_ssize_t first_bad = -1, n_active = 0
    cdef double denominator = 0.0, w
    cdef bint has_weight = weight is not None
    cdef bint has_sample_weight = sample_weight is not None
    cdef const Py_ssize_t *flat
    cdef Py_ssize_t n = outer * inner
    if n == 0:
        return -1, 0, 0.0
    if not has_weight and not has_sample_weight and (
            target.strides[1] == sizeof(Py_ssize_t) or inner == 1) and (
            target.strides[0] == inner * sizeof(Py_ssize_t) or outer == 1):
        # The usual case, contiguous targets without weights: one flat loop.
        flat = &target[0, 0]
        with nogil:
            first_bad = ce_check_targets(flat, n, n_classes, ignore_index, &n_active)
        return first_bad, n_active, <double>n_active
    with nogil:
        for o in range(outer):
            for i in range(inner):
                t = target[o, i]
                if t == ignore_index:
                    continue
                if t < 0 or t >= n_classes:
                    first_bad = o * inner + i
                    break
                n_active += 1
                w = weight[t] if has_weight else 1.0
                if has_sample_weight:
                    w = w * sample_weight[o, i]
                denominator += w
            if first_bad >= 0:
                break
    return first_bad, n_active, denominator


def needs_scratch(z, out, y):
    """Whether rows of these (outer, classes, inner) arrays are gathered into
    scratch rows: long rows whose classes are not contiguous in one of them."""
    if z.shape[1] <= CE_SHORT_MAX:
        return False
    return any(a is not None and a.shape[1] > 1 and a.strides[1] != a.itemsize
               for a in (z, out, y))


def _check_same_shape(a, b):
    if tuple(a.shape[:3]) != tuple(b.shape[:3]):
        raise ValueError(f"the arrays' shapes differ: {tuple(a.shape[:3])} and "
                         f"{tuple(b.shape[:3])}")


def widen(const unsigned short[:, :, :] bits, float[:, :, :] out, bint bfloat16,
          int n_threads=1):
    """out[...] = the values of the float16 (or bfloat16) numbers whose bits
    are `bits`, both (outer, classes, inner) of one shape, exactly."""
    _check_same_shape(bits, out)
    cdef Py_ssize_t o, i, m = bits.shape[1], inner = bits.shape[2]
    cdef Py_ssize_t step = bits.strides[1] // 2, dstep = out.strides[1] // 4
    if bits.shape[0] == 0 or m == 0 or inner == 0:
        return
    n_threads = ce_usable_threads(n_threads)
    with nogil:
        for o in prange(bits.shape[0], num_threads=n_threads, schedule="static"):
            for i in range(inner):
                if bfloat16:
                    ce_widen_bf16(&bits[o, 0, i], step, &out[o, 0, i], dstep, m)
                else:
                    ce_widen_f16(&bits[o, 0, i], step, &out[o, 0, i], dstep, m)


def narrow(const float[:, :, :] x, unsigned short[:, :, :] bits, bint bfloat16,
           int n_threads=1):
    """bits[...] = the float16 (or bfloat16) bits of x rounded to nearest
    even, both (outer, classes, inner) of one shape."""
    _check_same_shape(x, bits)
    cdef Py_ssize_t o, i, m = x.shape[1], inner = x.shape[2]
    cdef Py_ssize_t step = x.strides[1] // 4, dstep = bits.strides[1] // 2
    if x.shape[0] == 0 or m == 0 or inner == 0:
        return
    n_threads = ce_usable_threads(n_threads)
    with nogil:
        for o in prange(x.shape[0], num_threads=n_threads, schedule="static"):
            for i in range(inner):
                if bfloat16:
                    ce_narrow_bf16(&x[o, 0, i], step, &bits[o, 0, i], dstep, m)
                else:
                    ce_narrow_f16(&x[o, 0, i], step, &bits[o, 0, i], dstep, m)


def exp(const floating[::1] x, floating[::1] out):
    """The vectorised exp used by the kernels (exposed for the tests)."""
    if out.shape[0] != x.shape[0]:
        raise ValueError(f"out has {out.shape[0]} elements, x has {x.shape[0]}")
    if x.shape[0]:
        with nogil:
            vexp(&x[0], &out[0], x.shape[0])
