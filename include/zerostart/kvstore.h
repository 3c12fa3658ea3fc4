/* zerostart tiered prefix KV store (see docs/kvstore.md). Blocks of KV (one paged-cache
 * block: block_size token positions, all layers' K and V; opaque bytes here, all of one size
 * per store) are addressed by a chained SHA-256 over a namespace (model identity + optional
 * tenant salt) and the token ids of every block up to and including this one, so equal keys
 * mean equal prefixes of the same model for the same tenant. Two tiers: host memory (an arena
 * of fixed slots that the caller may page-lock for fast GPU copies) and a disk directory (one
 * checksummed file per block, written atomically, rebuilt and cleaned at open). The store
 * combines them: longest-prefix lookup; fetch jobs that pin a prefix in host memory, reading
 * disk blocks on reader threads in parallel; put, or reserve + commit to fill a host slot in
 * place; asynchronous write-back to disk through a bounded queue. Eviction in both tiers is
 * LFU with a recency tie-break. The server's KV warm start (src/server/kv_tier.c) drives it. */
#ifndef ZEROSTART_KVSTORE_H
#define ZEROSTART_KVSTORE_H

#include <stddef.h>
#include <stdint.h>

#include "zerostart/err.h"
#include "zerostart/kv_cache.h"

#ifdef __cplusplus
extern "C" {
#endif

#define ZS_KV_HASH_BYTES 32
#define ZS_KV_LAYOUT_MAX 128    /* bytes of a layout descriptor, NUL included */

typedef struct zs_kv_ns { uint8_t b[ZS_KV_HASH_BYTES]; } zs_kv_ns_t;   /* namespace */
typedef struct zs_kv_key { uint8_t b[ZS_KV_HASH_BYTES]; } zs_kv_key_t; /* block key */

/* --- addressing (src/kvstore/kv_key.c) ------------------------------------------------- */

/* ns = SHA256("zerostart-kv-ns-v1" || u64le(len(model_id)) || model_id || u8(salt != NULL)
 *             [|| u64le(len(salt)) || salt]).
 * model_id identifies everything that makes KV bytes differ: weight content hash, dtype, KV
 * layout, tokenizer id. tenant_salt (NULL = shared) is per API key or a request cache_salt. */
int zs_kv_namespace(const char *model_id, const char *tenant_salt, zs_kv_ns_t *out, zs_err_t *err);
/* key_i = SHA256(ns || key_{i-1} || u32le(ids of block i)), key_{-1} = 32 zero bytes.
 * Writes n / block_size keys (full blocks only) to keys_out and returns that count, or a
 * negative status (negative token id, block_size < 1). */
int zs_kv_chain_keys(const zs_kv_ns_t *ns, const int32_t *ids, size_t n, int32_t block_size,
                     zs_kv_key_t *keys_out, zs_err_t *err);
/* 64 lowercase hex digits + NUL. */
void zs_kv_key_hex(const zs_kv_key_t *key, char out[2 * ZS_KV_HASH_BYTES + 1]);
/* A layout descriptor for the disk tier, e.g. "kv1 layers=32 kvh=8 hd=128 bs=16 dt=BF16 bytes=...". */
int zs_kv_layout_desc(const zs_kv_layout_t *l, char *out, size_t cap, zs_err_t *err);

/* --- statistics ----------------------------------------------------------------------- */

typedef struct zs_kv_tier_stats {
    uint64_t hits, misses;       /* get/fetch outcomes */
    uint64_t blocks, bytes;      /* held now (disk: file bytes, headers included) */
    uint64_t capacity;           /* bytes */
    uint64_t puts, evictions;
    uint64_t restored_bytes;     /* payload bytes handed out by get */
    uint64_t rejected;           /* disk: files removed as damaged / foreign / tampered */
    uint64_t temp_removed;       /* disk: temp files of crashed writers removed at open */
} zs_kv_tier_stats_t;

/* --- host tier (src/kvstore/kv_host.c): thread-safe ------------------------------------ */

typedef struct zs_kv_host zs_kv_host_t;

/* capacity: bytes of block payloads held (>= block_bytes; rounded down to whole blocks);
 * block_bytes: the size of every block. The arena is mapped at once, its pages arrive on use. */
int zs_kv_host_open(uint64_t capacity, size_t block_bytes, zs_kv_host_t **out, zs_err_t *err);
void zs_kv_host_close(zs_kv_host_t *h);
/* The arena holding every payload (for cudaHostRegister: pinned once, fast copies after). */
void zs_kv_host_arena(zs_kv_host_t *h, void **base, size_t *bytes);
size_t zs_kv_host_block_bytes(const zs_kv_host_t *h);
/* Copies the block in, evicting unpinned blocks (lowest use count, then least recent) to make
 * room. A key already present (or being filled) is only touched. ZS_EINVAL if len is not the
 * tier's block size, ZS_EBUSY if pinned blocks leave no room. */
int zs_kv_host_put(zs_kv_host_t *h, const zs_kv_ns_t *ns, const zs_kv_key_t *key, uint64_t block_index,
                   const void *data, size_t len, zs_err_t *err);
/* Takes a slot for key, to be filled in place by the caller (e.g. a GPU->host copy): it is
 * pinned and invisible to get/pin/contains until zs_kv_host_commit (or dropped by
 * zs_kv_host_abort). Returns 0 with *slot set, 1 (no slot) when the key is present or being
 * filled already, ZS_EBUSY when pinned blocks leave no room. */
int zs_kv_host_reserve(zs_kv_host_t *h, const zs_kv_ns_t *ns, const zs_kv_key_t *key, uint64_t block_index,
                       void **slot, zs_err_t *err);
/* Publishes a reserved block; keep_pinned = 1 leaves the reservation's pin for the caller to
 * zs_kv_host_unpin. ZS_ENOENT if key has no reservation. */
int zs_kv_host_commit(zs_kv_host_t *h, const zs_kv_key_t *key, int keep_pinned);
void zs_kv_host_abort(zs_kv_host_t *h, const zs_kv_key_t *key);
/* Copies the block out (*len = its size). ZS_ENOENT on a miss, ZS_ERANGE if cap < size. */
int zs_kv_host_get(zs_kv_host_t *h, const zs_kv_ns_t *ns, const zs_kv_key_t *key, void *buf, size_t cap,
                   size_t *len, zs_err_t *err);
/* Borrows the block without copying: it is not evicted until the matching unpin. */
int zs_kv_host_pin(zs_kv_host_t *h, const zs_kv_ns_t *ns, const zs_kv_key_t *key, const void **data,
                   size_t *len, zs_err_t *err);
void zs_kv_host_unpin(zs_kv_host_t *h, const zs_kv_key_t *key);
/* 1 if present (does not count as a use), else 0. */
int zs_kv_host_contains(zs_kv_host_t *h, const zs_kv_ns_t *ns, const zs_kv_key_t *key);
/* Drops a block: ZS_ENOENT, ZS_EBUSY if pinned. */
int zs_kv_host_evict(zs_kv_host_t *h, const zs_kv_key_t *key, zs_err_t *err);
void zs_kv_host_stats(zs_kv_host_t *h, zs_kv_tier_stats_t *out);

/* --- disk tier (src/kvstore/kv_disk.c, format in kv_file.c): thread-safe ----------------- */

typedef struct zs_kv_disk zs_kv_disk_t;

typedef struct zs_kv_disk_opts {
    const char *dir;             /* created if missing; held with an exclusive flock */
    const char *layout;          /* layout descriptor (< ZS_KV_LAYOUT_MAX bytes); files with
                                    another one are removed at open as foreign */
    uint64_t capacity;           /* bytes of block files (headers included); 0 = unlimited */
    int no_fsync;                /* 1: skip fsync of files and directories (tests) */
} zs_kv_disk_opts_t;

/* Opens the directory: removes temp files of crashed writers and every block file that is
 * damaged, truncated or foreign, rebuilds the index from the rest (headers only; payloads are
 * verified on get), then evicts down to capacity. ZS_EBUSY if another process holds it. */
int zs_kv_disk_open(const zs_kv_disk_opts_t *opts, zs_kv_disk_t **out, zs_err_t *err);
void zs_kv_disk_close(zs_kv_disk_t *d);
/* Writes the block file atomically (temp name, fsync, rename, fsync dir), then evicts other
 * blocks to capacity. ZS_ERANGE if the file alone exceeds the capacity. */
int zs_kv_disk_put(zs_kv_disk_t *d, const zs_kv_ns_t *ns, const zs_kv_key_t *key, uint64_t block_index,
                   const void *data, size_t len, zs_err_t *err);
/* Reads the payload into buf after checking the checksum, namespace, key and layout. A file
 * that fails is deleted and ZS_EFORMAT returned (buf contents are then undefined). ZS_ENOENT
 * on a miss, ZS_ERANGE if cap < payload size. */
int zs_kv_disk_get(zs_kv_disk_t *d, const zs_kv_ns_t *ns, const zs_kv_key_t *key, void *buf, size_t cap,
                   size_t *len, zs_err_t *err);
int zs_kv_disk_contains(zs_kv_disk_t *d, const zs_kv_ns_t *ns, const zs_kv_key_t *key);
/* Whether key's block file is in the page cache (every page resident, mincore): 1 yes, 0 not
 * (wholly), -1 not in this namespace on disk or not known. Reads nothing; not a use. */
int zs_kv_disk_cached(zs_kv_disk_t *d, const zs_kv_ns_t *ns, const zs_kv_key_t *key);
int zs_kv_disk_evict(zs_kv_disk_t *d, const zs_kv_key_t *key, zs_err_t *err);
void zs_kv_disk_stats(zs_kv_disk_t *d, zs_kv_tier_stats_t *out);
/* Path of a key's block file (for tools and tests). */
int zs_kv_disk_path(const zs_kv_disk_t *d, const zs_kv_key_t *key, char *out, size_t cap);

/* --- store (src/kvstore/kv_store.c): thread-safe ------------------------------------------- */

typedef struct zs_kvstore zs_kvstore_t;

typedef enum zs_kv_tier { ZS_KV_TIER_NONE = 0, ZS_KV_TIER_HOST = 1, ZS_KV_TIER_DISK = 2 } zs_kv_tier_t;

typedef struct zs_kvstore_opts {
    uint64_t host_capacity;      /* bytes (>= block_bytes) */
    size_t block_bytes;          /* the size of every block (the engine's KV block) */
    zs_kv_disk_opts_t disk;      /* disk.dir NULL: no disk tier */
    uint32_t queue_depth;        /* pending disk writes; 0 = 4096 */
    int readers;                 /* threads reading disk blocks for fetch jobs; 0 = 4 */
    int read_delay_ms;           /* testing aid: a fetch job's reader sleeps this long before
                                    each disk block (a slow disk); default 0 */
} zs_kvstore_opts_t;

typedef struct zs_kvstore_stats {
    zs_kv_tier_stats_t host, disk;
    uint64_t writes_queued, writes_done, writes_dropped, write_errors, writes_pending;
    uint64_t promotions;         /* disk hits copied into the host tier */
} zs_kvstore_stats_t;

int zs_kvstore_open(const zs_kvstore_opts_t *opts, zs_kvstore_t **out, zs_err_t *err);
/* Drains pending disk writes, stops the threads, closes the tiers. Every fetch job must have
 * been freed. */
void zs_kvstore_close(zs_kvstore_t *s);
size_t zs_kvstore_block_bytes(const zs_kvstore_t *s);
int zs_kvstore_has_disk(const zs_kvstore_t *s);
/* The host tier's arena (see zs_kv_host_arena). */
void zs_kvstore_host_arena(zs_kvstore_t *s, void **base, size_t *bytes);
/* The fastest tier holding key (host preferred), or ZS_KV_TIER_NONE. Not a use. */
zs_kv_tier_t zs_kvstore_tier_of(zs_kvstore_t *s, const zs_kv_ns_t *ns, const zs_kv_key_t *key);
/* Length of the longest prefix of keys[0..n) present in some tier; tiers (may be NULL, n
 * entries) receives the tier of each block of that prefix (host preferred). */
size_t zs_kvstore_lookup(zs_kvstore_t *s, const zs_kv_ns_t *ns, const zs_kv_key_t *keys, size_t n,
                         zs_kv_tier_t *tiers);
/* zs_kv_disk_cached for the store's disk tier (-1 without one). */
int zs_kvstore_disk_cached(zs_kvstore_t *s, const zs_kv_ns_t *ns, const zs_kv_key_t *key);
/* Copies a block to buf: host first, then disk (a disk hit is promoted to host). *from (may be
 * NULL) says which tier served it. ZS_ENOENT when no tier has a valid copy. */
int zs_kvstore_fetch(zs_kvstore_t *s, const zs_kv_ns_t *ns, const zs_kv_key_t *key, void *buf, size_t cap,
                     size_t *len, zs_kv_tier_t *from, zs_err_t *err);

/* Fetch jobs: pin a prefix of blocks in host memory, reading the ones only on disk on the
 * store's reader threads (in parallel, each verified, straight into host slots). */
typedef struct zs_kvstore_job zs_kvstore_job_t;
/* A job's progress: finished = 0 when its usable prefix grew by ZS_KVSTORE_PROGRESS_BLOCKS
 * blocks (zs_kvstore_job_ready tells how far), 1 once, when it finished. */
typedef void (*zs_kvstore_job_cb)(void *ctx, int finished);
#define ZS_KVSTORE_PROGRESS_BLOCKS 16
typedef struct zs_kvstore_job_stats {
    size_t host_blocks, disk_blocks; /* of the usable prefix, by the tier that had them */
    double seconds;                  /* begin -> finished */
} zs_kvstore_job_stats_t;
/* Starts a job over keys[0..n): blocks in the host tier are pinned at once, the run of blocks
 * found in some tier is the job's extent, and the disk blocks in it are read in the
 * background (in order, on the reader threads); cb(ctx, ...) is called from a reader thread
 * as the usable prefix grows and when the reads are done (not when nothing was on disk: then
 * zs_kvstore_job_finished is already 1). cb must be quick (signal a condition variable). */
int zs_kvstore_fetch_begin(zs_kvstore_t *s, const zs_kv_ns_t *ns, const zs_kv_key_t *keys, size_t n,
                           zs_kvstore_job_cb cb, void *ctx, zs_kvstore_job_t **out, zs_err_t *err);
int zs_kvstore_job_finished(const zs_kvstore_job_t *j);
void zs_kvstore_job_wait(zs_kvstore_job_t *j);
/* Before the job finished: the number of leading blocks already pinned in host memory (their
 * payloads, in the data array zs_kvstore_job_result gives, are final and may be used at once);
 * the rest may still come. Once finished it equals zs_kvstore_job_result's count. */
size_t zs_kvstore_job_ready(zs_kvstore_job_t *j);
/* Once finished: the number of leading keys now pinned in host memory (a miss, a damaged or
 * tampered file, or a full host tier ends the prefix) and their payloads in (*data)[i], valid
 * until zs_kvstore_job_free. 0 while not finished (data is set either way). */
size_t zs_kvstore_job_result(const zs_kvstore_job_t *j, const void *const **data, zs_kvstore_job_stats_t *st);
/* The tier block i of the usable prefix came from (ZS_KV_TIER_NONE beyond it); i must be below
 * a count zs_kvstore_job_ready or zs_kvstore_job_result returned. */
zs_kv_tier_t zs_kvstore_job_tier(const zs_kvstore_job_t *j, size_t i);
/* Stops what has not started, waits for reads in flight, unpins, frees. NULL is a no-op. */
void zs_kvstore_job_free(zs_kvstore_job_t *j);

/* Stores the block in host memory and queues a write-back to disk (unless the disk tier has
 * it). Never waits for disk: a full queue drops the write (counted in writes_dropped). A block
 * the host tier cannot take (ZS_EBUSY: all pinned) is still queued for disk (as a copy), and
 * that status is returned; ZS_EINVAL for a block of the wrong size. */
int zs_kvstore_put(zs_kvstore_t *s, const zs_kv_ns_t *ns, const zs_kv_key_t *key, uint64_t block_index,
                   const void *data, size_t len, zs_err_t *err);
/* Host slot for key, filled in place by the caller (zs_kv_host_reserve's contract: 0 with
 * *slot, 1 when present already, ZS_EBUSY when no room). */
int zs_kvstore_reserve(zs_kvstore_t *s, const zs_kv_ns_t *ns, const zs_kv_key_t *key, uint64_t block_index,
                       void **slot, zs_err_t *err);
/* Publishes a filled reservation (slot as returned by reserve) and, with write_to_disk, queues
 * its write-back (borrowing the slot until written). */
void zs_kvstore_commit(zs_kvstore_t *s, const zs_kv_ns_t *ns, const zs_kv_key_t *key, uint64_t block_index,
                       const void *slot, int write_to_disk);
void zs_kvstore_abort(zs_kvstore_t *s, const zs_kv_key_t *key);
/* Waits until every queued write is done; returns the first write error since the last flush. */
int zs_kvstore_flush(zs_kvstore_t *s, zs_err_t *err);
void zs_kvstore_stats(zs_kvstore_t *s, zs_kvstore_stats_t *out);

#ifdef __cplusplus
}
#endif
#endif
