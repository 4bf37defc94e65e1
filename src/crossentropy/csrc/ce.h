/*
 * The C layer of the kernels, as _kernels.pyx includes it (through
 * _kernels.pxd): what Cython cannot express, split by concern.
 *
 *   platform.h          threads and fork, runtime dispatch, SIMD pragmas,
 *                       the sizes shared with Cython
 *   expmath.h           exp and log (exp_template.h per type)
 *   rows.h              row primitives and the rules of a row's target, loss
 *                       and gradient (rows_template.h per type)
 *   short_rows.h        the across-rows block for short rows and its
 *                       register tiles (short_rows_template.h per type)
 *   half.h              float16 and bfloat16 storage, to float32 and back
 *   dispatch.h          the kernels compiled per ISA level (kernels_template.h)
 *                       and the table that runs the widest the CPU has
 *
 * Code written once for both types is a *_template.h in terms of T and
 * CE_FN(name), included between type_f32.h / type_f64.h and type_undef.h.
 */
#ifndef CE_H
#define CE_H

#include "platform.h"
#include "expmath.h"
#include "rows.h"
#include "short_rows.h"
#include "half.h"
#include "dispatch.h"

#endif /* CE_H */
