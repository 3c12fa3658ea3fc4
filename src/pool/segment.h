/* Pool segments: one file per model holding a header (identity of the checkpoint, state,
 * content hash) followed by the weights in the layout of a device allocation. flock() on the
 * segment file tells who uses it: a filler holds LOCK_EX, attached users hold LOCK_SH; locks
 * die with their process, so a FILLING segment nobody locks was left by a crash. */
#ifndef ZS_POOL_SEGMENT_H
#define ZS_POOL_SEGMENT_H

#include <stdint.h>

#include "zerostart/ckpt.h"
#include "zerostart/err.h"

#define ZS_SEG_MAGIC "ZSPOOL01"
#define ZS_SEG_VERSION 1u
#define ZS_SEG_MAX_FILES 4096u

typedef struct zs_seg_file {
    char name[256];               /* basename inside the model directory */
    uint64_t size;
    int64_t mtime_ns;
    uint64_t ino, dev;
} zs_seg_file_t;

typedef struct zs_seg_header {
    char magic[8];
    uint32_t version;
    uint32_t state;               /* zs_pool_state_t */
    uint64_t header_bytes;        /* offset of the data, a multiple of 4096 */
    uint64_t data_bytes;
    uint64_t content_hash;        /* XXH3-64 over the per-64 MiB-block XXH3-64 hashes */
    int64_t filled_ns, last_used_ns;
    uint32_t nfiles, reserved;
    char model_dir[1024];         /* realpath of the checkpoint directory */
    zs_seg_file_t files[];
} zs_seg_header_t;

/* Header size (data offset) for a checkpoint with n files. */
uint64_t zs_seg_header_bytes(uint32_t nfiles);
/* Fills the identity part of h (magic, version, model_dir, files) from ck. h has room for
 * ck->nfiles entries. */
int zs_seg_identity(const zs_ckpt_t *ck, zs_seg_header_t *h, zs_err_t *err);
/* 1 when h describes ck as it is on disk now, 0 when the checkpoint changed (why in err). */
int zs_seg_matches(const zs_seg_header_t *h, const zs_seg_header_t *now, zs_err_t *why);
/* Parallel content hash of data. */
uint64_t zs_seg_hash(const void *data, uint64_t bytes, int threads);
/* Realpath of the checkpoint's directory and the segment file name derived from it. */
int zs_seg_name(const char *model_dir, char *real, size_t real_cap, char *name, size_t name_cap, zs_err_t *err);

#endif
