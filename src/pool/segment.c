/* Pool segment format, checkpoint identity and content hashing (see segment.h). */
#include "pool/segment.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <xxhash.h>

#define SEG_HASH_BLOCK ((uint64_t)64 << 20)

uint64_t zs_seg_header_bytes(uint32_t nfiles) {
    uint64_t b = sizeof(zs_seg_header_t) + (uint64_t)nfiles * sizeof(zs_seg_file_t);
    return (b + 4095) / 4096 * 4096;
}

static const char *seg_basename(const char *p) {
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

int zs_seg_name(const char *model_dir, char *real, size_t real_cap, char *name, size_t name_cap, zs_err_t *err) {
    char buf[PATH_MAX];
    if (realpath(model_dir, buf) == NULL)
        return zs_err_set(err, zs_status_from_errno(errno), "realpath %s: %s", model_dir, strerror(errno));
    if (strlen(buf) >= real_cap) return zs_err_set(err, ZS_ERANGE, "%s: path too long for the pool", buf);
    snprintf(real, real_cap, "%s", buf);
    snprintf(name, name_cap, "%016llx.seg", (unsigned long long)XXH3_64bits(buf, strlen(buf)));
    return ZS_OK;
}

int zs_seg_identity(const zs_ckpt_t *ck, zs_seg_header_t *h, zs_err_t *err) {
    if (ck->nfiles > ZS_SEG_MAX_FILES)
        return zs_err_set(err, ZS_ERANGE, "%s: %u files (the pool takes at most %u)", ck->dir, ck->nfiles,
                          ZS_SEG_MAX_FILES);
    memcpy(h->magic, ZS_SEG_MAGIC, 8);
    h->version = ZS_SEG_VERSION;
    h->nfiles = ck->nfiles;
    char name[64];
    int rc = zs_seg_name(ck->dir, h->model_dir, sizeof h->model_dir, name, sizeof name, err);
    for (uint32_t i = 0; i < ck->nfiles && rc == ZS_OK; i++) {
        struct stat st;
        zs_seg_file_t *f = &h->files[i];
        const char *base = seg_basename(ck->files[i].path);
        if (stat(ck->files[i].path, &st) != 0)
            return zs_err_set(err, zs_status_from_errno(errno), "stat %s: %s", ck->files[i].path, strerror(errno));
        if (strlen(base) >= sizeof f->name)
            return zs_err_set(err, ZS_ERANGE, "%s: file name too long for the pool", ck->files[i].path);
        memset(f->name, 0, sizeof f->name);
        snprintf(f->name, sizeof f->name, "%s", base);
        f->size = (uint64_t)st.st_size;
        f->mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
        f->ino = (uint64_t)st.st_ino;
        f->dev = (uint64_t)st.st_dev;
    }
    return rc;
}

int zs_seg_matches(const zs_seg_header_t *h, const zs_seg_header_t *now, zs_err_t *why) {
    if (strcmp(h->model_dir, now->model_dir) != 0) {
        zs_err_set(why, ZS_ESTATE, "segment is for %s, not %s", h->model_dir, now->model_dir);
        return 0;
    }
    if (h->nfiles != now->nfiles) {
        zs_err_set(why, ZS_ESTATE, "%s: %u files now, %u when pooled", now->model_dir, now->nfiles, h->nfiles);
        return 0;
    }
    for (uint32_t i = 0; i < h->nfiles; i++) {
        const zs_seg_file_t *a = &h->files[i], *b = &now->files[i];
        if (strcmp(a->name, b->name) != 0 || a->size != b->size || a->mtime_ns != b->mtime_ns ||
            a->ino != b->ino || a->dev != b->dev) {
            zs_err_set(why, ZS_ESTATE, "%s/%s changed since it was pooled (size %llu -> %llu, mtime %lld -> %lld)",
                       now->model_dir, b->name, (unsigned long long)a->size, (unsigned long long)b->size,
                       (long long)a->mtime_ns, (long long)b->mtime_ns);
            return 0;
        }
    }
    return 1;
}

typedef struct seg_hash_job {
    const unsigned char *data;
    uint64_t bytes, nblocks;
    uint64_t *block_hash;
    uint64_t next;
    pthread_mutex_t mu;
} seg_hash_job_t;

static void *seg_hash_main(void *arg) {
    seg_hash_job_t *j = arg;
    for (;;) {
        pthread_mutex_lock(&j->mu);
        uint64_t b = j->next++;
        pthread_mutex_unlock(&j->mu);
        if (b >= j->nblocks) return NULL;
        uint64_t off = b * SEG_HASH_BLOCK, len = j->bytes - off < SEG_HASH_BLOCK ? j->bytes - off : SEG_HASH_BLOCK;
        j->block_hash[b] = XXH3_64bits(j->data + off, (size_t)len);
    }
}

uint64_t zs_seg_hash(const void *data, uint64_t bytes, int threads) {
    seg_hash_job_t j = {.data = data, .bytes = bytes, .nblocks = (bytes + SEG_HASH_BLOCK - 1) / SEG_HASH_BLOCK};
    j.block_hash = calloc(j.nblocks + 1, sizeof *j.block_hash);
    pthread_t th[64];
    int n = threads < 1 ? 1 : threads > 64 ? 64 : threads, started = 0;
    pthread_mutex_init(&j.mu, NULL);
    if (j.block_hash != NULL)
        for (; started < n; started++)
            if (pthread_create(&th[started], NULL, seg_hash_main, &j) != 0) break;
    if (j.block_hash != NULL && started == 0) seg_hash_main(&j);
    for (int i = 0; i < started; i++) pthread_join(th[i], NULL);
    pthread_mutex_destroy(&j.mu);
    /* Without memory for the block table, hash serially in the same block structure. */
    uint64_t h;
    if (j.block_hash != NULL) {
        h = XXH3_64bits(j.block_hash, j.nblocks * sizeof *j.block_hash);
    } else {
        XXH3_state_t *st = XXH3_createState();
        if (st == NULL) return 0;
        XXH3_64bits_reset(st);
        for (uint64_t b = 0; b < j.nblocks; b++) {
            uint64_t off = b * SEG_HASH_BLOCK, len = bytes - off < SEG_HASH_BLOCK ? bytes - off : SEG_HASH_BLOCK;
            uint64_t bh = XXH3_64bits((const unsigned char *)data + off, (size_t)len);
            XXH3_64bits_update(st, &bh, sizeof bh);
        }
        h = XXH3_64bits_digest(st);
        XXH3_freeState(st);
    }
    free(j.block_hash);
    return h;
}
