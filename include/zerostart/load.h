/* zerostart weight loader: moves every tensor of an opened checkpoint into one allocation
 * on a device (CUDA GPU or host memory) with parallel reads, a bounded pinned staging ring
 * and overlapped host->device copies. A load runs in the background; callers can wait for
 * single layers (per-layer readiness) and start computing before the whole model is in. */
#ifndef ZEROSTART_LOAD_H
#define ZEROSTART_LOAD_H

#include <stddef.h>
#include <stdint.h>

#include "zerostart/ckpt.h"
#include "zerostart/err.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum zs_device_kind { ZS_DEV_CPU = 0, ZS_DEV_CUDA = 1 } zs_device_kind_t;

typedef struct zs_device {
    zs_device_kind_t kind;
    int index;                    /* GPU ordinal for ZS_DEV_CUDA */
} zs_device_t;

/* Parses "cpu", "cuda", "cuda:N". */
int zs_device_parse(const char *s, zs_device_t *out, zs_err_t *err);
/* Number of usable CUDA devices; 0 when built without CUDA or when no driver/GPU. */
int zs_cuda_device_count(void);

typedef struct zs_load_opts {
    zs_device_t device;
    int threads;                  /* reader threads; 0 = default (min(16, 2 x cores)) */
    size_t chunk_bytes;           /* read/copy unit; 0 = 4 MiB */
    size_t staging_bytes;         /* pinned host memory bound for GPU loads; 0 = 1 GiB */
    int staging_slots;            /* pinned chunk buffers per reader thread (GPU loads), 0 = 2, max 8 */
    int direct_io;                /* -1 auto (O_DIRECT for data not in page cache), 0 never, 1 always */
    /* With direct_io -1 or 0: data not in the page cache is fetched by kernel readahead
     * (posix_fadvise WILLNEED, issued in priority order ahead of the readers) and read
     * buffered instead of with O_DIRECT; it stays in the page cache for the next start. */
    int readahead;
    /* Optional tensor priorities, parallel to ck->tensors (smaller first). NULL: embeddings,
     * then layers 0..N-1, then everything else. */
    const uint32_t *priority;
    /* Host loads only: load into this caller-owned buffer (at least zs_load_alloc_bytes()
     * bytes, 256-byte aligned) instead of a new allocation; zs_weights_free leaves it alone. */
    void *host_dest;
    /* The weights are already in host memory, laid out as a load places them (e.g. a pool
     * segment): copy from here instead of reading the files. source_pinned: the memory is
     * page-locked for the GPU (cudaHostRegister), so copies need no staging. */
    const void *source;
    int source_pinned;
    /* Called from loader threads; must be thread-safe and quick. */
    void (*on_progress)(void *ctx, uint64_t bytes_done, uint64_t bytes_total);
    void *progress_ctx;
} zs_load_opts_t;

void zs_load_opts_default(zs_load_opts_t *o);
/* Bytes of the one allocation a load of ck uses (tensor bytes + alignment padding). */
int zs_load_alloc_bytes(const zs_ckpt_t *ck, uint64_t *bytes, zs_err_t *err);

typedef struct zs_tensor {
    const zs_tensor_info_t *info;
    void *data;                   /* host or device pointer inside zs_weights_t.base */
    uint64_t offset;              /* offset of data from base */
} zs_tensor_t;

typedef struct zs_load_stats {
    double parse_s;               /* filled by callers that time zs_ckpt_open */
    double setup_s;               /* device init, allocations, staging */
    double read_s;                /* first read issued -> last byte read */
    double copy_tail_s;           /* last byte read -> last copy complete */
    double total_s;               /* zs_load_begin -> everything resident */
    uint64_t bytes;               /* tensor bytes moved */
    uint64_t bytes_direct;        /* of which read with O_DIRECT */
    uint64_t chunks;
    int threads;
    size_t chunk_bytes;
    size_t staging_bytes;
} zs_load_stats_t;

typedef struct zs_weights {
    const zs_ckpt_t *ckpt;
    zs_device_t device;
    void *base;                   /* the one allocation */
    int base_borrowed;            /* base is the caller's (opts.host_dest): not freed */
    uint64_t bytes;               /* its size (tensor bytes + alignment padding) */
    zs_tensor_t *tensors;         /* parallel to ckpt->tensors */
    size_t ntensors;
    zs_load_stats_t stats;
} zs_weights_t;

typedef struct zs_load zs_load_t;

/* Starts loading ck (which must outlive the weights). Returns at once. */
int zs_load_begin(const zs_ckpt_t *ck, const zs_load_opts_t *opts, zs_load_t **out, zs_err_t *err);
/* Blocks until every tensor of `layer` is resident (-1: non-layer tensors); returns the
 * load's error if it failed. Layers outside the model return ZS_EINVAL. */
int zs_load_wait_layer(zs_load_t *ld, int32_t layer, zs_err_t *err);
/* Seconds from zs_load_begin until every tensor of `layer` (-1: non-layer tensors) was
 * resident; a negative value while it is not (or for a layer outside the model). */
double zs_load_layer_time(zs_load_t *ld, int32_t layer);
/* Blocks until one tensor (by name) is resident; ZS_ENOENT for an unknown name. */
int zs_load_wait_tensor(zs_load_t *ld, const char *name, zs_err_t *err);
/* The weights under load (valid after zs_load_begin succeeds; tensor data is only valid
 * once its layer is ready). */
zs_weights_t *zs_load_weights(zs_load_t *ld);
/* 1 once every loader thread has ended (the load completed or failed), else 0. */
int zs_load_done(zs_load_t *ld);
/* Stops a load in progress: the loader threads take no new chunk (copies in flight complete),
 * waiters wake up with ZS_ECANCELED and zs_load_finish returns it (freeing the weights).
 * No-op once the load has ended. Thread-safe. */
void zs_load_cancel(zs_load_t *ld);
/* Waits for the whole load, frees the loader and hands over the weights (or frees them
 * and returns the error). */
int zs_load_finish(zs_load_t *ld, zs_weights_t **out, zs_err_t *err);

/* Convenience: begin + finish. */
int zs_load(const zs_ckpt_t *ck, const zs_load_opts_t *opts, zs_weights_t **out, zs_err_t *err);
void zs_weights_free(zs_weights_t *w);
const zs_tensor_t *zs_weights_find(const zs_weights_t *w, const char *name);

#ifdef __cplusplus
}
#endif
#endif
