// Runtime dispatch of a few hot loops: XF_VECTOR_CLONES before a function
// definition compiles it three times, for the SSE2 baseline of x86-64, for
// AVX2 and for AVX-512F, and picks the clone once at load time from the CPU
// (GCC / Clang function multiversioning through an ifunc resolver).  No
// multiply-add contraction anywhere (-ffp-contract=off in CMakeLists.txt) and
// only IEEE basic operations in these loops, so every clone gives the same
// bits and patterns do not depend on the machine (checked by
// scripts/check_dispatch_bits.py against a build without clones).
// Elsewhere the macro is empty.
#pragma once

#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && \
    (!defined(__clang__) || __clang_major__ >= 14) && !defined(XF_NO_CLONES)
// flatten: the helpers a clone calls (inline functions of the headers that
// GCC may keep out of line) are inlined into each clone and so compiled for
// its target too; an out-of-line helper would be the baseline SSE2 code.
#define XF_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default"), flatten))
#else
#define XF_VECTOR_CLONES
#endif
