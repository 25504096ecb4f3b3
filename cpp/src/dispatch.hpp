// Runtime dispatch of a few hot loops: XF_VECTOR_CLONES before a function
// definition compiles it twice, for the SSE2 baseline of x86-64 and for AVX2,
// and picks the clone once at load time from the CPU (GCC / Clang function
// multiversioning through an ifunc resolver).  AVX2 alone, without FMA: no
// multiply-add contraction, so both clones give the same bits and patterns
// do not depend on the machine.  Elsewhere the macro is empty.
#pragma once

#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && \
    (!defined(__clang__) || __clang_major__ >= 14) && !defined(XF_NO_CLONES)
#define XF_VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define XF_VECTOR_CLONES
#endif
