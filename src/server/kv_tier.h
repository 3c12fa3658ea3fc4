/* The KV warm start of one served model: its tiered KV store (host memory, optionally a disk
 * directory) below the GPU prefix cache, and the moves between them, for the scheduler thread
 * that owns the engine. It names the model's KV (the identity in every block key: checkpoint
 * files and tensors, pooled content hash, tokenizer, KV layout), restores a request's cached
 * prefix (longest run of blocks in the store after the GPU's, cut where recomputing is cheaper
 * than restoring: kv_cost.h), and exports blocks leaving the GPU to host memory without
 * stalling decode (then to disk, in the background). The store survives scale to zero and
 * is opened at the first engine bind (when the KV layout is known). Scheduler thread only,
 * except the fetch-job callbacks it is given. */
#ifndef ZS_SERVER_KV_TIER_H
#define ZS_SERVER_KV_TIER_H

#include <stdint.h>

#include "server/kv_cost.h"
#include "zerostart/ckpt.h"
#include "zerostart/engine.h"
#include "zerostart/kvstore.h"

typedef struct zs_kvt_opts {
    uint64_t host_bytes;          /* host tier capacity; 0 = no store (GPU prefix cache only) */
    const char *disk_dir;         /* parent directory of the disk tier (a subdirectory per model
                                     identity); NULL = no disk tier */
    uint64_t disk_bytes;          /* disk tier capacity; 0 = unlimited */
    int no_fsync;                 /* tests: skip fsync of block files */
    int read_delay_ms;            /* tests: a slow disk (zs_kvstore_opts_t) */
    int cuda_device;              /* >= 0: page-lock the host arena for that GPU (zs_kvt_pin_step) */
    /* the measured host->device rate of the model's GPU (0 while unknown), asked at a restore
     * while the cost model has none (the server's probe may report after the start); may be NULL */
    double (*h2d_gbps)(void *ctx);
    void *h2d_ctx;
} zs_kvt_opts_t;

typedef struct zs_kvt_stats {
    uint64_t exported_blocks, export_dropped;
    uint64_t skipped_by_cost;     /* restorable blocks the cost model chose to recompute */
    uint64_t restore_overlapped_blocks; /* restored blocks imported while their job still read */
    zs_kvstore_stats_t store;
    int store_open;
    int host_pinned;              /* the host arena: 1 page-locked, 0 not (yet, or not asked), -1 failed */
} zs_kvt_stats_t;

typedef struct zs_kvt zs_kvt_t;

/* A store is kept only when o->host_bytes > 0. identity_extra (may be NULL) joins the model's
 * identity, e.g. the pooled content hash as text. */
int zs_kvt_create(const zs_kvt_opts_t *o, const zs_ckpt_t *ck, const char *tokenizer_path,
                  const char *identity_extra, zs_kvt_t **out, zs_err_t *err);
/* Lets copies land, commits them, flushes the disk writes, closes the store. */
void zs_kvt_free(zs_kvt_t *t);
/* Called for every engine the model gets (each load): opens the store on the first one. */
int zs_kvt_bind(zs_kvt_t *t, zs_engine_t *e, zs_err_t *err);
/* Before the engine goes away (scale to zero, shutdown): waits for exports in flight. */
void zs_kvt_unbind(zs_kvt_t *t);
int zs_kvt_has_store(const zs_kvt_t *t);
/* Why the store runs degraded (its disk tier off: the directory is held by another process),
 * or NULL. */
const char *zs_kvt_warning(const zs_kvt_t *t);
/* The model's disk tier directory, or NULL. */
const char *zs_kvt_disk_path(const zs_kvt_t *t);
/* The model identity (hex SHA-256 of the checkpoint part; the layout joins it at bind). */
const char *zs_kvt_identity(const zs_kvt_t *t);

/* Namespace of a tenant (salt NULL: shared). Before the first bind it covers the checkpoint
 * identity only (no store is open then, so no block is addressed with it). */
int zs_kvt_namespace(const zs_kvt_t *t, const char *salt, zs_kv_ns_t *ns, zs_err_t *err);

/* Measurements for the cost model (0 = keep the previous value): host->device, reads from the
 * disk, reads from the page cache. Restores from the disk tier refine the last two. */
void zs_kvt_set_bandwidth(zs_kvt_t *t, double h2d_gbps, double disk_gbps, double cached_gbps);
/* A prefill step ran `tokens` prompt tokens in `seconds`, each attending to its earlier
 * positions (attn_positions: their sum, see zs_kv_cost_recompute_s). Steps of fewer than 256
 * tokens are not counted (fixed costs dominate them). */
void zs_kvt_note_prefill(zs_kvt_t *t, int64_t tokens, double attn_positions, double seconds);
double zs_kvt_prefill_rate(const zs_kvt_t *t);

/* --- restore ---------------------------------------------------------------------------- */
typedef struct zs_kvt_restore {
    zs_kvstore_job_t *job;        /* NULL: nothing to restore */
    int32_t from, to;             /* blocks asked of the store */
    double t0;
    double est_restore_s, est_recompute_s;
    double disk_cached;           /* sampled share of the run's disk blocks in the page cache; -1 none */
    /* zs_kvt_restore_import */
    int32_t base;                 /* the sequence's blocks before the first import */
    int32_t imported;             /* blocks appended so far */
    int started, complete;        /* an import ran; the job finished and all of it is in */
    int32_t host_blocks, disk_blocks; /* of the blocks imported, by the tier that had them */
    /* once complete (or an import failed) */
    double seconds;               /* the job (disk reads into host memory) + the import call that
                                     completed it; on a GPU the copies queued run before the next
                                     step (in TTFT) */
} zs_kvt_restore_t;

/* The prompt's blocks [gpu_blocks, max_blocks) (gpu_blocks come from the GPU prefix cache):
 * finds the run of them in the store, lets the cost model cut it (overlap: the caller will
 * import blocks while the rest are read, zs_kvt_restore_import), and starts a fetch job.
 * Returns 1 with r->job set (done(ctx) is called when its disk reads finish, unless it is
 * finished already: zs_kvstore_job_finished), 0 when nothing is worth restoring. */
int zs_kvt_restore_begin(zs_kvt_t *t, const zs_kv_ns_t *ns, const int32_t *ids, int32_t gpu_blocks,
                         int32_t max_blocks, int overlap, zs_kvstore_job_cb done, void *ctx, zs_kvt_restore_t *r,
                         zs_err_t *err);
/* Appends to seq the restored blocks that are ready and not appended yet, and returns how many
 * it holds from the restore in all (r->imported). It may be called while the job still reads
 * (the blocks read so far go to the device while the rest are read), then again until
 * r->complete. The first call fixes where the restore joins: the sequence's gpu_blocks blocks
 * (the GPU cache may have grown or shrunk since the job began: blocks it has now are skipped,
 * and when it lost some the restore no longer joins and nothing is imported); later calls must
 * pass the same. The host copies stay pinned until zs_kvt_restore_end. ZS_EBUSY when the KV
 * cache has no room (nothing more imported). */
int zs_kvt_restore_import(zs_kvt_t *t, zs_engine_t *e, int32_t seq, int32_t gpu_blocks, zs_kvt_restore_t *r,
                          zs_err_t *err);
/* Releases the job (after a forward step or sync, once the imports have been copied). */
void zs_kvt_restore_end(zs_kvt_t *t, zs_kvt_restore_t *r);

/* --- export ------------------------------------------------------------------------------ */
/* Copies the full blocks [0, nblocks) of seq that the store lacks into host slots without
 * waiting (tokens: the nblocks * block_size ids they hold, under ns); with write_to_disk the
 * store writes them on to disk once they land. Best effort: blocks the host tier has no room
 * for are dropped (counted). */
void zs_kvt_export(zs_kvt_t *t, zs_engine_t *e, int32_t seq, const zs_kv_ns_t *ns, const int32_t *tokens,
                   int32_t nblocks, int write_to_disk);
/* Publishes exports that have landed; wait = 1 waits for all of them. */
void zs_kvt_poll(zs_kvt_t *t, zs_engine_t *e, int wait);
/* Page-locking the host arena for GPU copies, a step at a time from the thread that runs the
 * model's CUDA work while it is idle (a registration holds the driver's lock: done at once at
 * start-up it delayed a fresh server's first token by 0.85 s). pending: steps are left. */
int zs_kvt_pin_pending(const zs_kvt_t *t);
int zs_kvt_pin_step(zs_kvt_t *t, zs_err_t *err);
/* Exports still in flight. */
int zs_kvt_pending(const zs_kvt_t *t);
/* Waits for the disk writes queued so far. */
int zs_kvt_flush(zs_kvt_t *t, zs_err_t *err);

void zs_kvt_stats(zs_kvt_t *t, zs_kvt_stats_t *out);

#endif
