/* Undoes type_f32.h or type_f64.h. */
#undef T
#undef U
#undef CE_FN
#undef CE_FNL
#undef CE_MANT
#undef CE_BIAS
#undef CE_MAGIC
#undef CE_INF
#undef CE_EXP_LOW
#undef CE_EXP_HIGH
#undef CE_NORMAL
#undef CE_VL
#undef CE_LANE
