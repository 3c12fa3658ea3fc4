/* zerostart hot model pool: checkpoints kept in host memory (files in a tmpfs directory,
 * default /dev/shm/zerostart-pool) in exactly the layout of a device allocation, so that a
 * model scaled to zero comes back at PCIe speed, and a restarted server re-attaches instead of
 * re-reading storage. Each segment records the checkpoint's identity (directory, file names,
 * sizes, mtimes, inodes) and a content hash of its data computed at fill time; a changed
 * checkpoint is never served stale. Segments left by a process that died while filling are
 * freed by the next pool user. A capacity bounds the pool; the least recently used segments
 * not in use by any process are evicted to make room. See docs/pool.md. */
#ifndef ZEROSTART_POOL_H
#define ZEROSTART_POOL_H

#include <stdint.h>

#include "zerostart/ckpt.h"
#include "zerostart/err.h"
#include "zerostart/load.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct zs_pool zs_pool_t;
typedef struct zs_pool_model zs_pool_model_t;

typedef struct zs_pool_opts {
    const char *dir;              /* NULL: $ZS_POOL_DIR, else /dev/shm/zerostart-pool */
    uint64_t capacity;            /* bytes of segment data; 0 = unlimited */
    int threads;                  /* fill / hash threads; 0 = loader default */
} zs_pool_opts_t;

typedef enum zs_pool_state { ZS_POOL_FILLING = 1, ZS_POOL_READY = 2 } zs_pool_state_t;

typedef struct zs_pool_entry {
    char model_dir[1024];
    char segment[1100];           /* segment file path */
    uint64_t bytes;               /* data bytes */
    int state;                    /* zs_pool_state_t */
    int in_use;                   /* some process has it attached (or is filling it) */
    int64_t last_used_ns;         /* CLOCK_REALTIME */
    uint64_t content_hash;
} zs_pool_entry_t;

/* How zs_pool_acquire got the model. */
typedef enum zs_pool_source { ZS_POOL_HIT = 1, ZS_POOL_FILLED = 2, ZS_POOL_REFILLED_STALE = 3 } zs_pool_source_t;

/* Opens (creating) the pool directory and frees segments of processes that died while
 * filling them. */
int zs_pool_open(const zs_pool_opts_t *opts, zs_pool_t **out, zs_err_t *err);
void zs_pool_close(zs_pool_t *p);
/* Every segment, least recently used first. *out is malloc'd. */
int zs_pool_list(zs_pool_t *p, zs_pool_entry_t **out, size_t *n, zs_err_t *err);
/* Attaches the model's segment, filling it from storage first when it is missing or stale
 * (evicting least recently used segments when the capacity needs it). The model stays
 * attached (and cannot be evicted by anyone) until zs_pool_release. */
int zs_pool_acquire(zs_pool_t *p, const zs_ckpt_t *ck, zs_pool_model_t **out, zs_pool_source_t *how,
                    zs_err_t *err);
/* Attaches only if a valid segment exists: ZS_ENOENT when there is none, ZS_ESTATE when it
 * is stale or still being filled. */
int zs_pool_attach(zs_pool_t *p, const zs_ckpt_t *ck, zs_pool_model_t **out, zs_err_t *err);
/* The data (laid out as a load of ck places it) and its size. */
const void *zs_pool_model_data(const zs_pool_model_t *m);
uint64_t zs_pool_model_bytes(const zs_pool_model_t *m);
uint64_t zs_pool_model_hash(const zs_pool_model_t *m);
/* Page-locks the data for GPU copies (cudaHostRegister: about 0.1 s per GB, once per process). */
int zs_pool_model_pin(zs_pool_model_t *m, zs_err_t *err);
/* Fills load options so that a load of the model copies from the segment. */
void zs_pool_model_load_opts(const zs_pool_model_t *m, zs_load_opts_t *o);
/* Recomputes the content hash of the data and compares it with the one recorded at fill. */
int zs_pool_model_verify(const zs_pool_model_t *m, zs_err_t *err);
void zs_pool_release(zs_pool_model_t *m);
/* Removes the model's segment (ZS_EBUSY if a process has it attached). */
int zs_pool_evict(zs_pool_t *p, const char *model_dir, zs_err_t *err);

#ifdef __cplusplus
}
#endif
#endif
