// Run-time dispatch for hand-written hot loops: the release build is portable x86-64, and these
// functions get AVX-512 and AVX2 clones chosen by the loader (GCC ifunc) on CPUs that have them.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && \
    !defined(QTRAIN_NO_TARGET_CLONES)
#define QTRAIN_TARGET_CLONES __attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
#else
#define QTRAIN_TARGET_CLONES
#endif
