# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, nonecheck=False, cpow=True
"""Fused softmax / cross-entropy kernels.

Everything here runs without the GIL over typed memoryviews.  The Python shim
(`_api.py`) has already validated every argument: targets are in range or equal
to ``ignore_index``, buffers have the right shapes, and the thread count is
resolved.  The kernels therefore cannot fail; they still never index outside a
row (an invalid target is treated as ignored), so a bug in the shim shows up
as a wrong number in a test, never as a crash.

Layout: every array is viewed as 3-D ``(outer, classes, inner)``; a "row" is one
``(o, i)`` pair, the classes of a row are ``x[o, :, i]``.  With the class axis
last (the common case) ``inner == 1`` and rows are contiguous, which is what the
SIMD primitives in ``_simd.h`` want.

Paths, chosen per call by shape and layout:

* long rows (contiguous classes, ``m > SMALL_ROW``): each row is three SIMD
  passes — max, exp-and-sum (writing exp into the output when one is wanted),
  then one scaling pass; the gradient never needs a scratch buffer.
* row blocks (short rows, or classes strided in memory): a block of rows is
  gathered as ``x - rowmax`` into a small buffer, one SIMD exp runs over the
  whole block, and the results are reduced and scattered row by row.  This keeps
  the exp vectorised when a row is only ~10 elements long, and handles any
  stride.

Rows are processed in fixed chunks; each chunk's loss is summed in float64 in
row order, so results do not depend on the number of threads.
"""

from cython cimport floating
from cython.parallel cimport prange, parallel, threadid
from libc.math cimport log, INFINITY

cdef extern from "_simd.h" nogil:
    int ce_omp_max_threads()
    int CE_HAVE_DISPATCH
    float ce_max_f32(const float *x, Py_ssize_t n)
    double ce_max_f64(const double *x, Py_ssize_t n)
    double ce_expsum_f32(const float *x, float *out, Py_ssize_t n, float shift)
    double ce_expsum_f64(const double *x, double *out, Py_ssize_t n, double shift)
    double ce_sumexp_f32(const float *x, Py_ssize_t n, float shift)
    double ce_sumexp_f64(const double *x, Py_ssize_t n, double shift)
    double ce_sum_f32(const float *x, Py_ssize_t n)
    double ce_sum_f64(const double *x, Py_ssize_t n)
    void ce_exp_f32(const float *x, float *out, Py_ssize_t n)
    void ce_exp_f64(const double *x, double *out, Py_ssize_t n)
    void ce_scale_f32(float *x, Py_ssize_t n, float a)
    void ce_scale_f64(double *x, Py_ssize_t n, double a)
    void ce_shift_f32(const float *x, float *out, Py_ssize_t n, float a, float b)
    void ce_shift_f64(const double *x, double *out, Py_ssize_t n, double a, double b)


# What a call computes.  Per row it returns one number (loss or log-sum-exp);
# the modes that write an array write it into `out`.
cpdef enum Mode:
    LOSS = 0            # loss only
    LOSS_GRAD = 1       # loss, and its gradient into out
    LOGSUMEXP = 2       # log-sum-exp only
    SOFTMAX = 3         # softmax into out
    LOG_SOFTMAX = 4     # log-softmax into out

cdef enum:
    # Rows up to this length take the row-block path even when contiguous.
    SMALL_ROW = 64
    # Rows per block at most, and the stack buffer's size in elements; longer
    # strided rows go through a per-thread scratch row instead.
    MAX_BLOCK = 1024

# Exposed for the shim and the tests, which pick shapes on either side of them.
SMALL_ROW_LEN = SMALL_ROW
BLOCK = MAX_BLOCK


def max_threads():
    """``omp_get_max_threads()``, 1 when built without OpenMP.

    Reflects ``OMP_NUM_THREADS`` and limits set by threadpoolctl.
    """
    return ce_omp_max_threads()


def has_dispatch():
    """Whether the SIMD primitives were built with x86-64-v3 runtime dispatch."""
    return bool(CE_HAVE_DISPATCH)


# --- fused-type wrappers around the C primitives -----------------------------

cdef inline floating vmax(const floating *x, Py_ssize_t n) noexcept nogil:
    if floating is float:
        return ce_max_f32(x, n)
    else:
        return ce_max_f64(x, n)


cdef inline double vexpsum(const floating *x, floating *out, Py_ssize_t n,
                           floating shift) noexcept nogil:
    if floating is float:
        return ce_expsum_f32(x, out, n, shift)
    else:
        return ce_expsum_f64(x, out, n, shift)


cdef inline double vsumexp(const floating *x, Py_ssize_t n, floating shift) noexcept nogil:
    if floating is float:
        return ce_sumexp_f32(x, n, shift)
    else:
        return ce_sumexp_f64(x, n, shift)


cdef inline double vsum(const floating *x, Py_ssize_t n) noexcept nogil:
    if floating is float:
        return ce_sum_f32(x, n)
    else:
        return ce_sum_f64(x, n)


cdef inline void vexp(const floating *x, floating *out, Py_ssize_t n) noexcept nogil:
    if floating is float:
        ce_exp_f32(x, out, n)
    else:
        ce_exp_f64(x, out, n)


cdef inline void vscale(floating *x, Py_ssize_t n, floating a) noexcept nogil:
    if floating is float:
        ce_scale_f32(x, n, a)
    else:
        ce_scale_f64(x, n, a)


cdef inline void vshift(const floating *x, floating *out, Py_ssize_t n,
                        floating a, floating b) noexcept nogil:
    if floating is float:
        ce_shift_f32(x, out, n, a, b)
    else:
        ce_shift_f64(x, out, n, a, b)


# --- one contiguous row ------------------------------------------------------

cdef double contiguous_row(const floating *z, floating *out, Py_ssize_t m,
                           Py_ssize_t t, double grad_scale, Mode mode) noexcept nogil:
    """One row whose classes are contiguous; returns its loss or log-sum-exp.

    `out` may be `z` itself (in place): z[t] is read before anything is written.
    For the loss modes `t` is a valid class (the caller skips ignored rows).
    """
    cdef floating zmax = vmax(z, m)
    cdef double s, lse, zt = 0.0, e_t
    if mode == LOSS or mode == LOSS_GRAD:
        zt = z[t]
    if mode == LOSS_GRAD or mode == SOFTMAX:
        s = vexpsum(z, out, m, zmax)
    else:
        s = vsumexp(z, m, zmax)
    lse = zmax + log(s)
    if mode == LOSS:
        return lse - zt
    if mode == LOSS_GRAD:
        # p_t - 1 in double, from the unscaled exp: exact where p_t is near 1,
        # which is where the float subtraction would cancel.
        e_t = out[t]
        vscale(out, m, <floating>(grad_scale / s))
        out[t] = <floating>(grad_scale * (e_t / s - 1.0))
        return lse - zt
    if mode == SOFTMAX:
        vscale(out, m, <floating>(1.0 / s))
    elif mode == LOG_SOFTMAX:
        vshift(z, out, m, zmax, <floating>log(s))
    return lse


# --- a block of rows, any strides --------------------------------------------

cdef double row_block(const floating *z0, Py_ssize_t z_row_o, Py_ssize_t z_row_i,
                      Py_ssize_t z_cls, floating *out0, Py_ssize_t o_row_o,
                      Py_ssize_t o_row_i, Py_ssize_t o_cls, Py_ssize_t inner,
                      Py_ssize_t m, Py_ssize_t r_start, Py_ssize_t r_end,
                      const Py_ssize_t *tgt0, Py_ssize_t t_row_o, Py_ssize_t t_row_i,
                      double *rv0, Py_ssize_t v_row_o, Py_ssize_t v_row_i,
                      double grad_scale, Mode mode,
                      floating *buf, Py_ssize_t cap) noexcept nogil:
    """Rows r_start..r_end through the block buffer `buf` (capacity `cap`), or
    through a buffer on this thread's stack when `buf` is NULL.

    Strides are in elements; pointers with a zero stride are unused.  Returns
    the sum of the rows' losses (loss modes) in row order.
    """
    cdef Py_ssize_t per_block = cap // m if m > 0 else cap
    cdef Py_ssize_t b0, b1, r, o, i, j, k, t, n_rows
    cdef const floating *z
    cdef floating *g
    cdef floating zmax, scale
    cdef double s, lse, total = 0.0, e_t, zt, a
    cdef bint loss_mode = mode == LOSS or mode == LOSS_GRAD
    cdef bint writes = mode == LOSS_GRAD or mode == SOFTMAX or mode == LOG_SOFTMAX
    cdef double rowmax[MAX_BLOCK]
    cdef double rowzt[MAX_BLOCK]
    cdef Py_ssize_t rowt[MAX_BLOCK]
    cdef floating local[MAX_BLOCK]

    if buf == NULL:
        buf = local
        cap = MAX_BLOCK
    if per_block > MAX_BLOCK:
        per_block = MAX_BLOCK
    if per_block < 1:
        per_block = 1
    b0 = r_start
    while b0 < r_end:
        b1 = b0 + per_block
        if b1 > r_end:
            b1 = r_end
        n_rows = b1 - b0
        # Pass A: x - rowmax into the buffer; remember max and target logit.
        for r in range(b0, b1):
            o = r // inner
            i = r - o * inner
            z = z0 + o * z_row_o + i * z_row_i
            k = r - b0
            t = -1
            if loss_mode:
                t = tgt0[o * t_row_o + i * t_row_i]
                if t < 0 or t >= m:
                    t = -1          # ignored row
            rowt[k] = t
            zmax = z[0] if m > 0 else 0
            for j in range(1, m):
                if z[j * z_cls] > zmax:
                    zmax = z[j * z_cls]
            rowmax[k] = zmax
            rowzt[k] = z[t * z_cls] if t >= 0 else 0.0
            for j in range(m):
                buf[k * m + j] = z[j * z_cls] - zmax
        # Pass B: one vectorised exp over the whole block.
        vexp(buf, buf, n_rows * m)
        # Pass C: reduce each row, scatter its output.
        for r in range(b0, b1):
            o = r // inner
            i = r - o * inner
            k = r - b0
            t = rowt[k]
            s = vsum(buf + k * m, m)
            lse = rowmax[k] + log(s)
            if loss_mode:
                a = lse - rowzt[k] if t >= 0 else 0.0
                total += a
            else:
                a = lse
            if rv0 != NULL:
                rv0[o * v_row_o + i * v_row_i] = a
            if not writes:
                continue
            g = out0 + o * o_row_o + i * o_row_i
            if mode == LOSS_GRAD:
                if t < 0:
                    for j in range(m):
                        g[j * o_cls] = 0
                    continue
                e_t = buf[k * m + t]
                scale = <floating>(grad_scale / s)
                for j in range(m):
                    g[j * o_cls] = buf[k * m + j] * scale
                g[t * o_cls] = <floating>(grad_scale * (e_t / s - 1.0))
            elif mode == SOFTMAX:
                scale = <floating>(1.0 / s)
                for j in range(m):
                    g[j * o_cls] = buf[k * m + j] * scale
            else:
                # log-softmax: (x - max) - log(sum), as the long-row path does
                z = z0 + o * z_row_o + i * z_row_i
                zmax = <floating>rowmax[k]
                a = log(s)
                for j in range(m):
                    g[j * o_cls] = (z[j * z_cls] - zmax) - <floating>a
        b0 = b1
    return total


# --- the driver ----------------------------------------------------------------

def run(const floating[:, :, :] z, floating[:, :, :] out,
        const Py_ssize_t[:, :] target, double[:, :] row_value,
        double[::1] chunk_sums, Py_ssize_t rows_per_chunk, floating[:, :] scratch,
        double grad_scale, int n_threads, int mode):
    """Run `mode` over every row of `z` (outer, classes, inner).

    out          same shape as z for the modes that write one, else None
    target       (outer, inner) class indices for the loss modes, else None;
                 an index outside [0, classes) marks an ignored row
    row_value    (outer, inner) per-row loss / log-sum-exp, or None
    chunk_sums   per-chunk sums of the loss (loss modes), len = n_chunks
    scratch      (n_threads, >= classes) buffer for strided long rows, or None
    grad_scale   multiplies the gradient (the reduction's 1/denominator)
    """
    cdef Py_ssize_t outer = z.shape[0], m = z.shape[1], inner = z.shape[2]
    cdef Py_ssize_t n_rows = outer * inner
    cdef Py_ssize_t n_chunks = chunk_sums.shape[0]
    cdef Py_ssize_t isz = sizeof(floating)
    cdef Py_ssize_t z_o = z.strides[0] // isz, z_c = z.strides[1] // isz
    cdef Py_ssize_t z_i = z.strides[2] // isz
    cdef Py_ssize_t o_o = 0, o_c = 0, o_i = 0
    cdef Py_ssize_t t_o = 0, t_i = 0, v_o = 0, v_i = 0
    cdef const floating *zp = &z[0, 0, 0] if n_rows > 0 and m > 0 else NULL
    cdef floating *op = NULL
    cdef const Py_ssize_t *tp = NULL
    cdef double *vp = NULL
    cdef floating *sp = NULL
    cdef Py_ssize_t sp_stride = 0
    cdef bint have_out = out is not None
    cdef bint contiguous, use_scratch
    cdef Py_ssize_t c, r0, r1, r, o, i, t, tid
    cdef double total, a
    cdef Mode md = <Mode>mode

    if n_rows == 0:
        return
    if have_out and m > 0:
        op = &out[0, 0, 0]
        o_o = out.strides[0] // isz
        o_c = out.strides[1] // isz
        o_i = out.strides[2] // isz
    if target is not None:
        tp = &target[0, 0]
        t_o = target.strides[0] // sizeof(Py_ssize_t)
        t_i = target.strides[1] // sizeof(Py_ssize_t)
    if row_value is not None:
        vp = &row_value[0, 0]
        v_o = row_value.strides[0] // sizeof(double)
        v_i = row_value.strides[1] // sizeof(double)
    if m == 0:
        # No classes: log-sum-exp of nothing is -inf; the shim rejects every
        # target in this case, so only the non-loss modes get here with rows.
        if vp != NULL:
            for r in range(n_rows):
                o = r // inner
                i = r - o * inner
                vp[o * v_o + i * v_i] = -INFINITY
        return

    contiguous = (z_c == 1 or m == 1) and (not have_out or o_c == 1 or m == 1)
    use_scratch = not contiguous and m > MAX_BLOCK
    if use_scratch:
        sp = &scratch[0, 0]
        sp_stride = scratch.strides[0] // isz

    with nogil, parallel(num_threads=n_threads):
        for c in prange(n_chunks, schedule="static"):
            r0 = c * rows_per_chunk
            r1 = r0 + rows_per_chunk
            if r1 > n_rows:
                r1 = n_rows
            if contiguous and m > SMALL_ROW:
                total = 0.0
                for r in range(r0, r1):
                    o = r // inner
                    i = r - o * inner
                    t = 0
                    if tp != NULL:
                        t = tp[o * t_o + i * t_i]
                        if t < 0 or t >= m:
                            if op != NULL:
                                zero_row(op + o * o_o + i * o_i, m)
                            if vp != NULL:
                                vp[o * v_o + i * v_i] = 0.0
                            continue
                    a = contiguous_row(zp + o * z_o + i * z_i,
                                       op + o * o_o + i * o_i if op != NULL else NULL,
                                       m, t, grad_scale, md)
                    total = total + a
                    if vp != NULL:
                        vp[o * v_o + i * v_i] = a
                chunk_sums[c] = total
            elif use_scratch:
                tid = threadid()
                chunk_sums[c] = row_block(zp, z_o, z_i, z_c, op, o_o, o_i, o_c,
                                          inner, m, r0, r1, tp, t_o, t_i,
                                          vp, v_o, v_i, grad_scale, md,
                                          sp + tid * sp_stride, m)
            else:
                chunk_sums[c] = row_block(zp, z_o, z_i, z_c, op, o_o, o_i, o_c,
                                          inner, m, r0, r1, tp, t_o, t_i,
                                          vp, v_o, v_i, grad_scale, md,
                                          NULL, 0)


cdef inline void zero_row(floating *g, Py_ssize_t m) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(m):
        g[j] = 0


def exp(const floating[::1] x, floating[::1] out):
    """The vectorised exp used by the kernels (exposed for the tests)."""
    with nogil:
        vexp(&x[0], &out[0], x.shape[0])
