#ifndef CHIREDIS_SHIM_H
#define CHIREDIS_SHIM_H
#include <hiredis/hiredis.h>
#include <hiredis/sds.h>
#include <malloc.h>

/// hiredis formats every command into a fresh heap buffer. For megabyte values glibc serves that
/// buffer with mmap and unmaps it after each call, which costs ~5x throughput (page faults).
/// Raising the thresholds keeps such buffers in the heap.
///
/// It also caps glibc's malloc arenas at `CHIREDIS_MALLOC_ARENAS`. Each thread that allocates
/// may get an arena of its own, up to 8 per core, and every arena but the main one reserves
/// 64 MiB of address space: 16 arenas on 2 cores reserve ~1 GiB, all of the address space a
/// function invocation gets under `prlimit --as`, and thread creation then fails. With the cap,
/// arenas reserve at most (CHIREDIS_MALLOC_ARENAS - 1) x 64 MiB; small allocations mostly stay in
/// each thread's tcache, so the shared arenas cost little. Safe to call more than once; arenas
/// that already exist stay.
#define CHIREDIS_MALLOC_ARENAS 2
static inline void chiredis_tune_malloc_for_large_values(void) {
#ifdef M_MMAP_THRESHOLD
    mallopt(M_MMAP_THRESHOLD, 64 * 1024 * 1024);
    mallopt(M_TRIM_THRESHOLD, 256 * 1024 * 1024);
#endif
#ifdef M_ARENA_MAX
    mallopt(M_ARENA_MAX, CHIREDIS_MALLOC_ARENAS);
#endif
}

/// The context's error string (a fixed char array, awkward to read from Swift).
static inline const char *chiredis_errstr(const redisContext *c) { return c->errstr; }

/// Bytes hiredis still holds to write, plus unparsed bytes it has read. Both must be zero before
/// SMLT writes to or reads from the socket itself (RedisClient/LargeValues.swift).
static inline size_t chiredis_output_pending(const redisContext *c) {
    size_t out = c->obuf ? sdslen(c->obuf) : 0;
    size_t in = c->reader ? c->reader->len - c->reader->pos : 0;
    return out + in;
}
#endif
