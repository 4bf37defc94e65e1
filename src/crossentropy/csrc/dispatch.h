/*
 * Runtime dispatch over the ISA levels of platform.h: the kernels are
 * compiled once per level (kernels_template.h), and ce_select_kernels points
 * the table ce_kernels at the widest level the CPU runs (or, lower, the one
 * CROSSENTROPY_ISA names).  The kernels' public names (ce_max_f32, ...) call
 * through the table, so every caller runs the same level.
 */
#ifndef CE_DISPATCH_H
#define CE_DISPATCH_H

#include <stdlib.h>

#include "platform.h"
#include "rows.h"
#include "short_rows.h"
#include "half.h"

#define CE_TARGET
#define CE_LEVEL_NAME(name) name##_v0
#include "kernels_template.h"
#undef CE_TARGET
#undef CE_LEVEL_NAME
#if CE_HAVE_DISPATCH
#define CE_TARGET __attribute__((target(CE_ARCH_V3)))
#define CE_LEVEL_NAME(name) name##_v3
#include "kernels_template.h"
#undef CE_TARGET
#undef CE_LEVEL_NAME
#define CE_TARGET __attribute__((target(CE_ARCH_V4)))
#define CE_LEVEL_NAME(name) name##_v4
#include "kernels_template.h"
#undef CE_TARGET
#undef CE_LEVEL_NAME
#endif

static const char *ce_level_names[5] = {"baseline", "baseline", "baseline", "x86-64-v3",
                                        "x86-64-v4"};
static int ce_level = -1;           /* the level that runs, once selected */

/* The level that runs ("baseline" before ce_select_kernels). */
static inline const char *ce_dispatch_target(void)
{
    return ce_level_names[ce_level < 0 ? 0 : ce_level];
}

/* The levels compiled in, widest first. */
static inline const char *ce_dispatch_levels(void)
{
    return CE_HAVE_DISPATCH ? "x86-64-v4 x86-64-v3 baseline" : "baseline";
}

#if CE_HAVE_DISPATCH
/* Every dispatched kernel, once: the table's fields, their filling per level. */
#define CE_KERNELS(X) \
    X(ce_max_f32) X(ce_max_f64) X(ce_expsum_f32) X(ce_expsum_f64) \
    X(ce_sumexp_f32) X(ce_sumexp_f64) X(ce_exp_f32) X(ce_exp_f64) \
    X(ce_run_parts_f32) X(ce_run_parts_f64) X(ce_scale_f32) X(ce_scale_f64) \
    X(ce_shift_f32) X(ce_shift_f64) X(ce_gapsum_f32) X(ce_gapsum_f64) \
    X(ce_scale_sub_f32) X(ce_scale_sub_f64) X(ce_scale_runs_f32) X(ce_scale_runs_f64) \
    X(ce_short_xent_f32) X(ce_short_xent_f64) X(ce_check_targets) X(ce_runs_total) \
    X(ce_softcap_f32) X(ce_softcap_f64) X(ce_softcap_grad_f32) X(ce_softcap_grad_f64) \
    X(ce_widen_bf16) X(ce_narrow_bf16) X(ce_widen_f16) X(ce_narrow_f16)

#define CE_FIELD(name) __typeof__(&name##_v0) name;
static struct { CE_KERNELS(CE_FIELD) } ce_kernels;
#undef CE_FIELD

/*
 * Points ce_kernels at the widest level the CPU runs, capped by the
 * environment's CROSSENTROPY_ISA ("baseline", "x86-64-v3", "x86-64-v4"; for
 * tests and to rule a level out); returns that level's name.  Called once, at
 * import (and by the C harness); later calls change nothing.
 */
static inline const char *ce_select_kernels(void)
{
    if (ce_level >= 0) return ce_level_names[ce_level];
    int level = ce_cpu_level();
    const char *asked = getenv("CROSSENTROPY_ISA");
    if (asked != NULL) {
        int cap = strcmp(asked, "x86-64-v4") == 0 ? 4 : strcmp(asked, "x86-64-v3") == 0 ? 3 : 0;
        level = level < cap ? level : cap;
    }
#define CE_SET(name) ce_kernels.name = level >= 4 ? name##_v4 : level >= 3 ? name##_v3 : name##_v0;
    CE_KERNELS(CE_SET)
#undef CE_SET
    ce_level = level;
    return ce_level_names[level];
}
#define CE_KERNEL(name) (ce_kernels.name)      /* the level selected */
#else
static inline const char *ce_select_kernels(void) { ce_level = 0; return "baseline"; }
#define CE_KERNEL(name) name##_v0              /* the one level compiled */
#endif

/* The kernels' public names, as the Cython code and the harness call them. */
#define ce_max_f32 CE_KERNEL(ce_max_f32)
#define ce_max_f64 CE_KERNEL(ce_max_f64)
#define ce_expsum_f32 CE_KERNEL(ce_expsum_f32)
#define ce_expsum_f64 CE_KERNEL(ce_expsum_f64)
#define ce_sumexp_f32 CE_KERNEL(ce_sumexp_f32)
#define ce_sumexp_f64 CE_KERNEL(ce_sumexp_f64)
#define ce_exp_f32 CE_KERNEL(ce_exp_f32)
#define ce_exp_f64 CE_KERNEL(ce_exp_f64)
#define ce_run_parts_f32 CE_KERNEL(ce_run_parts_f32)
#define ce_run_parts_f64 CE_KERNEL(ce_run_parts_f64)
#define ce_scale_f32 CE_KERNEL(ce_scale_f32)
#define ce_scale_f64 CE_KERNEL(ce_scale_f64)
#define ce_shift_f32 CE_KERNEL(ce_shift_f32)
#define ce_shift_f64 CE_KERNEL(ce_shift_f64)
#define ce_gapsum_f32 CE_KERNEL(ce_gapsum_f32)
#define ce_gapsum_f64 CE_KERNEL(ce_gapsum_f64)
#define ce_scale_sub_f32 CE_KERNEL(ce_scale_sub_f32)
#define ce_scale_sub_f64 CE_KERNEL(ce_scale_sub_f64)
#define ce_scale_runs_f32 CE_KERNEL(ce_scale_runs_f32)
#define ce_scale_runs_f64 CE_KERNEL(ce_scale_runs_f64)
#define ce_short_xent_f32 CE_KERNEL(ce_short_xent_f32)
#define ce_short_xent_f64 CE_KERNEL(ce_short_xent_f64)
#define ce_check_targets CE_KERNEL(ce_check_targets)
#define ce_runs_total CE_KERNEL(ce_runs_total)
#define ce_softcap_f32 CE_KERNEL(ce_softcap_f32)
#define ce_softcap_f64 CE_KERNEL(ce_softcap_f64)
#define ce_softcap_grad_f32 CE_KERNEL(ce_softcap_grad_f32)
#define ce_softcap_grad_f64 CE_KERNEL(ce_softcap_grad_f64)
#define ce_widen_bf16 CE_KERNEL(ce_widen_bf16)
#define ce_narrow_bf16 CE_KERNEL(ce_narrow_bf16)
#define ce_widen_f16 CE_KERNEL(ce_widen_f16)
#define ce_narrow_f16 CE_KERNEL(ce_narrow_f16)

#endif /* CE_DISPATCH_H */
