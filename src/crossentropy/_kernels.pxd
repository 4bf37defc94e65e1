# The C layer's declarations (csrc/ce.h), in one place: _kernels.pyx sees them
# through this file, as any module that cimports crossentropy._kernels would.

cdef extern from "csrc/ce.h" nogil:
    # sizes shared with the C layer (csrc/platform.h)
    enum:
        CE_ROWS             # rows in a block of the across-rows short-row kernel
        CE_SHORT_MAX        # classes of a row short enough for it
        CE_BLOCK            # elements of a row computed, then summed, at a time
        CE_MAX_RUNS         # runs of a row at most
        CE_FORK_HANDLERS    # whether fork() releases the thread pool first

    # threads, fork and dispatch (csrc/platform.h, csrc/dispatch.h)
    int ce_omp_max_threads()
    int ce_team_size(int n)
    int ce_usable_threads(int n)
    int ce_register_fork_handlers()
    void ce_set_release_before_fork(int on)
    const char *ce_select_kernels()
    const char *ce_dispatch_target()
    const char *ce_dispatch_levels()
    const char *ce_compiler()
    const char *ce_build_openmp()
    int ce_openmp_version()
    int ce_simd_pragmas()
    enum:
        CE_GNU              # built with GNU C's extensions (else portable C)

    # a row's target, loss and gradient terms (csrc/rows.h)
    Py_ssize_t ce_class_or_ignored(Py_ssize_t t, Py_ssize_t ignore, Py_ssize_t m)
    double ce_weigh(double w, double x, double log_s)
    double ce_target_loss(double c, double zmax, double zt, double log_s)
    double ce_target_grad(double scale, double a, double p_t, double c_t, double c_s)
    double ce_loss_lse(double zmax, double log_s)
    Py_ssize_t ce_check_targets(const Py_ssize_t *t, Py_ssize_t n, Py_ssize_t m,
                                Py_ssize_t ignore, Py_ssize_t *active)

    # row primitives (csrc/rows_template.h), per type
    float ce_max_f32(const float *x, Py_ssize_t n, float *lo)
    double ce_max_f64(const double *x, Py_ssize_t n, double *lo)
    double ce_expsum_f32(const float *x, float *out, Py_ssize_t n, float shift, float lo,
                         const float *ahead, float *ahead_out)
    double ce_expsum_f64(const double *x, double *out, Py_ssize_t n, double shift,
                         double lo, const double *ahead, double *ahead_out)
    double ce_sumexp_f32(const float *x, Py_ssize_t n, float shift, float lo,
                         const float *ahead, float *buf)
    double ce_sumexp_f64(const double *x, Py_ssize_t n, double shift, double lo,
                         const double *ahead, double *buf)
    void ce_exp_f32(const float *x, float *out, Py_ssize_t n)
    void ce_exp_f64(const double *x, double *out, Py_ssize_t n)
    void ce_scale_f32(float *x, Py_ssize_t n, float a)
    void ce_scale_f64(double *x, Py_ssize_t n, double a)
    void ce_shift_f32(const float *x, float *out, Py_ssize_t n, float a, float b)
    void ce_shift_f64(const double *x, double *out, Py_ssize_t n, double a, double b)
    double ce_gapsum_f32(const float *x, const double *w, Py_ssize_t n, float top)
    double ce_gapsum_f64(const double *x, const double *w, Py_ssize_t n, double top)
    void ce_scale_sub_f32(float *g, const double *w, Py_ssize_t n, double a, double b)
    void ce_scale_sub_f64(double *g, const double *w, Py_ssize_t n, double a, double b)
    void ce_softcap_f32(const float *x, float *out, Py_ssize_t n, double cap)
    void ce_softcap_f64(const double *x, double *out, Py_ssize_t n, double cap)
    void ce_softcap_grad_f32(float *g, const float *y, Py_ssize_t n, double cap)
    void ce_softcap_grad_f64(double *g, const double *y, Py_ssize_t n, double cap)

    # rows in runs (csrc/rows.h)
    Py_ssize_t ce_run_length(Py_ssize_t n)
    double ce_runs_total(const double *tops, const double *sums, Py_ssize_t n_runs,
                         double *top, double *scale)
    void ce_run_parts_f32(const float *x, float *out, Py_ssize_t n, Py_ssize_t run,
                          double *tops, double *sums)
    void ce_run_parts_f64(const double *x, double *out, Py_ssize_t n, Py_ssize_t run,
                          double *tops, double *sums)
    void ce_scale_runs_f32(float *g, Py_ssize_t n, Py_ssize_t run, double a, const double *scale)
    void ce_scale_runs_f64(double *g, Py_ssize_t n, Py_ssize_t run, double a, const double *scale)

    # half-precision storage to float32 and back (csrc/half.h); steps in elements
    void ce_widen_f16(const unsigned short *src, Py_ssize_t step, float *dst,
                      Py_ssize_t dstep, Py_ssize_t n)
    void ce_widen_bf16(const unsigned short *src, Py_ssize_t step, float *dst,
                       Py_ssize_t dstep, Py_ssize_t n)
    void ce_narrow_f16(const float *src, Py_ssize_t step, unsigned short *dst,
                       Py_ssize_t dstep, Py_ssize_t n)
    void ce_narrow_bf16(const float *src, Py_ssize_t step, unsigned short *dst,
                        Py_ssize_t dstep, Py_ssize_t n)

    # the across-rows block for short rows (csrc/short_rows.h)
    ctypedef struct ce_rows:
        char *base
        Py_ssize_t step
        void *const *at
    double ce_short_xent_f32(const ce_rows *z, Py_ssize_t zc, const Py_ssize_t *target,
                             Py_ssize_t ts, Py_ssize_t ignore, const double *weight,
                             Py_ssize_t n, Py_ssize_t m, const ce_rows *g, Py_ssize_t gc,
                             const ce_rows *h, Py_ssize_t hc, double gscale, double *loss,
                             double *lse, float *buf)
    double ce_short_xent_f64(const ce_rows *z, Py_ssize_t zc, const Py_ssize_t *target,
                             Py_ssize_t ts, Py_ssize_t ignore, const double *weight,
                             Py_ssize_t n, Py_ssize_t m, const ce_rows *g, Py_ssize_t gc,
                             const ce_rows *h, Py_ssize_t hc, double gscale, double *loss,
                             double *lse, double *buf)
