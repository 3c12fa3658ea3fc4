/* Collective communication between the ranks of a tensor-parallel engine: a small vtable with
 * one implementation per file. comm_cpu.c: ranks that are threads of one process on the CPU
 * backend (barrier + shared buffers, a fixed summation order); src/gpu/cuda_comm_nccl.c: CUDA
 * ranks through NCCL, loaded at run time (src/gpu/none_comm_nccl.c refuses in builds without
 * CUDA).
 *
 * A communicator is one object for the whole group; every collective is called once by each
 * rank's thread with the rank's own backend and buffers (backend memory), in the same order on
 * every rank. Results are bit-identical on every rank. When a rank fails, `abort` makes every
 * collective in flight or still to come fail with ZS_ECANCELED, so no rank waits forever; an
 * aborted communicator stays unusable. */
#ifndef ZS_ENGINE_COMM_H
#define ZS_ENGINE_COMM_H

#include <stddef.h>

#include "engine/backend.h"

typedef struct zs_comm zs_comm_t;

typedef struct zs_comm_ops {
    const char *name;
    void (*destroy)(zs_comm_t *c);
    /* buf[0 .. n) becomes, on every rank, the sum over the ranks of their buf (in place). */
    int (*all_reduce_sum)(zs_comm_t *c, int rank, zs_backend_t *be, float *buf, size_t n,
                          zs_err_t *err);
    /* dst[r * n .. (r + 1) * n) = rank r's src[0 .. n), on every rank (dst and src disjoint). */
    int (*all_gather)(zs_comm_t *c, int rank, zs_backend_t *be, float *dst, const float *src,
                      size_t n, zs_err_t *err);
    /* Fails every collective in flight or to come (ZS_ECANCELED); callable from any thread. */
    void (*abort)(zs_comm_t *c);
} zs_comm_ops_t;

struct zs_comm {
    const zs_comm_ops_t *ops;
    int nranks;
};

/* Ranks that are threads of this process, CPU backend memory. */
int zs_comm_cpu_create(int nranks, zs_comm_t **out, zs_err_t *err);
/* One rank per GPU devices[r], through NCCL (libnccl.so.2, opened with dlopen; a clear error
 * when it is missing). NVLink multicast (NVLS) is kept off: NCCL_NVLS_ENABLE=0. */
int zs_comm_nccl_create(int nranks, const int *devices, zs_comm_t **out, zs_err_t *err);

#endif
